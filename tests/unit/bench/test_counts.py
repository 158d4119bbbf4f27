"""`bench counts`: saved bytes counted by hand on a small network, and the counts of the real model
consistent with each other, with the official computation and across the recompute settings."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from demt_exp.bench.counts import run, saved_bytes


def test_saved_bytes_are_distinct_non_parameter_storages_in_the_component_that_saved_them() -> None:
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    image = torch.randn(4, 5, requires_grad=True)
    out, by_part = saved_bytes(lambda: net(image), net)
    # Linear 0 saves its input (4 x 5 float32); ReLU its output (4 x 7), which Linear 2 saves again: counted once.
    assert by_part == {"0": 4 * 5 * 4, "1": 4 * 7 * 4}
    out.sum().backward()  # what was saved is what backward uses
    assert image.grad is not None


@pytest.mark.slow
def test_counts_of_demt_beside_the_official_computation_and_the_trade_off() -> None:
    args = argparse.Namespace(
        overrides=["tasks=nyud", "dataset.num_semseg_classes=40"],
        batch=1,
        size=[64, 64],
        no_official=False,
        options=True,
    )
    report = run(args)
    ours, official = report["ours"], report["official"]
    for counts in (ours, official):
        forward = counts["forward_flops"]
        assert forward["total"] == sum(value for part, value in forward.items() if part != "total")
        assert counts["saved_bytes"]["total"] == sum(v for p, v in counts["saved_bytes"].items() if p != "total")
        assert 2.5 * forward["total"] < counts["train_flops"]["total"] < 4.5 * forward["total"]  # backward ~2x
    assert ours["forward_flops"]["backbone"] == official["forward_flops"]["backbone"]  # the same Swin-T
    assert report["ratio"]["train_flops"] == ours["train_flops"]["total"] / official["train_flops"]["total"] < 1
    assert report["ratio"]["saved_bytes"] < 1
    options = report["options"]
    kept, checkpointed = options["keep the task query's activations"], options["activation checkpointing"]
    # keeping the task query's activations: less recomputation, more memory; checkpointing: the other way
    assert kept["train_flops"]["total"] < ours["train_flops"]["total"] < checkpointed["train_flops"]["total"]
    assert checkpointed["saved_bytes"]["total"] < ours["saved_bytes"]["total"] < kept["saved_bytes"]["total"]
