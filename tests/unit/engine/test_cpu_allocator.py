"""trainer.cpu_allocator: under `reuse` a training-like loop of large tensors stops page-faulting
once the heap has grown; under `system` (glibc's policy) every large tensor is faulted in anew."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from demt_exp.config.checks import ConfigError, validate_config
from demt_exp.config.compose import compose_config
from demt_exp.engine.cpu_allocator import apply_cpu_allocator, configure_cpu_allocator, glibc_mallopt

# Four 40 MiB tensors (over glibc's largest mmap threshold, 32 MiB) live at once and are freed
# together, as activations are at the end of a step; the first steps grow the heap.
LOOP = """
import resource, sys, torch
from demt_exp.engine.cpu_allocator import configure_cpu_allocator
configure_cpu_allocator(sys.argv[1])
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    held = [torch.ones(10 * 2**20) for _ in range(4)]
    return sum(float(t[0]) for t in held)
for _ in range(12):
    step()
start = faults()
for _ in range(5):
    step()
print(faults() - start)
"""
needs_glibc = pytest.mark.skipif(glibc_mallopt() is None, reason="mallopt is glibc's")


def faults_of_steady_loop(mode: str) -> int:
    """Minor page faults of the 5 steps after the warm-up, in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", LOOP, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return int(out.stdout.strip().splitlines()[-1])


@needs_glibc
def test_reuse_keeps_large_blocks_in_the_heap_and_system_faults_them_in_every_step() -> None:
    pages_per_step = 4 * 40 * 2**20 // resource.getpagesize()
    reuse = faults_of_steady_loop("reuse")
    system = faults_of_steady_loop("system")
    assert reuse < 0.02 * pages_per_step  # 5 steps reuse the heap: next to no faults
    assert system > 0.9 * 5 * pages_per_step  # 5 steps, each tensor mapped and zero-filled again


def test_an_unknown_mode_is_refused_with_the_key_named() -> None:
    with pytest.raises(ValueError, match=r"trainer.cpu_allocator='pooled'; expected one of \('reuse', 'system'\)"):
        configure_cpu_allocator("pooled")
    cfg = compose_config(["trainer.cpu_allocator=pooled"])
    with pytest.raises(ConfigError, match="trainer.cpu_allocator='pooled'; expected one of reuse, system"):
        validate_config(cfg)


def test_the_engine_reuses_the_heap_only_when_asked_and_only_on_a_cpu() -> None:
    assert compose_config([]).trainer.cpu_allocator == "system"  # the default leaves the process as it is
    assert not apply_cpu_allocator("system", "cpu")
    assert not apply_cpu_allocator("reuse", "cuda")  # a GPU run never changes its process's heap
    assert apply_cpu_allocator("reuse", "cpu") == (glibc_mallopt() is not None)
    configure_cpu_allocator("system")  # back to glibc's steady state for the tests after this one
    with pytest.raises(ValueError, match="trainer.cpu_allocator='pooled'"):
        apply_cpu_allocator("pooled", "cpu")
