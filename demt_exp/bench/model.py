"""`python -m demt_exp.bench model [overrides] [options]`: speed and memory of the configured model.

Times the eval forward and the train step (forward, loss, backward, optimiser) after warm-up,
median and min of N, for the fast formulation and, with `--baseline plain`, the plain one in
the same process, alternating step by step so machine load hits both alike; the speed-up is
reported as a ratio. Peak memory comes from a fresh subprocess per variant and measurement (CPU: the
VmHWM high-water mark reset through /proc/self/clear_refs after building the model, minus
the RSS then; CUDA: max allocated minus allocated). The time share of backbone, encoder,
decoder and heads comes from torch.profiler ranges opened by module hooks (forward ops; the
backward is reported as one share). The loss is the mean square of every prediction: the
task losses cost well under 1% of a step and need real targets.

Baselines (`--baseline`, several allowed):
  plain          the plain formulation (the reference of tests/unit/models/test_fast_paths.py), timed
                 alternating with the default in this process;
  system-malloc  the fast formulation under glibc's own heap policy (`trainer.cpu_allocator=system`);
  official       the official code's computation (demt_exp/bench/official_model.py, op for op, held
                 against ours at 1e-4) under glibc's heap policy, as the released code runs;
  eager          with --compile: the same model not compiled, timed alternating with the
                 compiled one (the speed-up of torch.compile);
with both plain and system-malloc, `plain+system-malloc` too: the plain formulation as a process
without our allocator setting runs it. A heap policy cannot be compared inside one process (a
heap grown under `reuse` keeps serving blocks after switching back), so every variant is also
timed in its own fresh process (the memory subprocesses, `--memory-repeats` steps each, run one
after the other); the allocator ratios and those over `official` use those times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from demt_exp.bench.memory import memory_in_subprocess, timed_peak
from demt_exp.bench.official import build_official_model
from demt_exp.bench.profile import component_shares
from demt_exp.config.compose import compose_config
from demt_exp.engine.cpu_allocator import MODES as CPU_ALLOCATOR_MODES
from demt_exp.engine.cpu_allocator import configure_cpu_allocator
from demt_exp.engine.precision import PRECISIONS, autocast_factory, grad_scaler
from demt_exp.models.formulation import set_fast
from demt_exp.models.linear import use_onednn_linears
from demt_exp.utils.tables import text_table

MEASURED = ("eval", "train")


@dataclass(frozen=True)
class Variant:
    """What a timed run switches: the formulation, the CPU allocator (None: the config's), the
    official model instead of ours, or the eager model instead of the compiled one."""

    fast: bool
    allocator: str | None = None
    official: bool = False
    eager: bool = False


VARIANTS: dict[str, Variant] = {
    "fast": Variant(True),
    "plain": Variant(False),
    "system-malloc": Variant(True, "system"),
    "plain+system-malloc": Variant(False, "system"),
    "official": Variant(False, "system", official=True),
    "eager": Variant(True, eager=True),
}
BASELINES = ("none", "plain", "system-malloc", "official", "eager")


def chosen_variants(baselines: list[str]) -> list[str]:
    """The default first, then each baseline; the plain formulation under glibc's policy when both are named."""
    names = ["fast"] + [b for b in dict.fromkeys(baselines) if b not in ("none", "official")]
    if "plain" in names and "system-malloc" in names:
        names.append("plain+system-malloc")
    return names + (["official"] if "official" in baselines else [])


def same_heap_policy(variants: list[str]) -> list[str]:
    """The variants that can alternate in this process: those under the config's allocator policy."""
    return [v for v in variants if VARIANTS[v].allocator is None]


def fresh_process_speedups(results: dict[str, dict[str, float]], variants: list[str]) -> dict[str, dict[str, float]]:
    """Each variant's step time over the default's, both timed in fresh processes."""
    fast = results["fast"]
    return {v: {what: results[v][f"{what}_step_s"] / fast[f"{what}_step_s"] for what in MEASURED} for v in variants[1:]}


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. encoder=degmix decoder=degmix")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=(448, 576), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per formulation")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--deform-backend", choices=("auto", "torch", "torchvision"))
    parser.add_argument("--attention", choices=("official", "global"))
    parser.add_argument("--checkpointing", action="store_true", help="trainer.activation_checkpointing=true")
    parser.add_argument("--cpu-allocator", choices=CPU_ALLOCATOR_MODES, help="trainer.cpu_allocator")
    parser.add_argument(
        "--baseline",
        nargs="+",
        choices=BASELINES,
        default=["none"],
        help="also time these, alternating with the default (see above)",
    )
    parser.add_argument("--memory", choices=("subprocess", "none"), default="subprocess")
    parser.add_argument(
        "--memory-repeats",
        type=int,
        default=1,
        help="timed steps (median) in each memory subprocess, after the step that sets the peak",
    )
    parser.add_argument("--profile", action="store_true", help="time share per component")
    parser.add_argument("--json", type=Path, help="also write the results here")


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The Hydra overrides the options stand for, after the user's own."""
    extra = list(args.overrides)
    if args.deform_backend:
        extra.append(f"encoder.deform_backend={args.deform_backend}")
    if args.attention:
        extra.append(f"decoder.attention={args.attention}")
    if args.checkpointing:
        extra.append("trainer.activation_checkpointing=true")
    if args.cpu_allocator:
        extra.append(f"trainer.cpu_allocator={args.cpu_allocator}")
    return extra


class Setting:
    """A built model (ours, or the official one for `variant` official), its optimiser and inputs,
    and the two timed operations."""

    def __init__(self, args: argparse.Namespace, variant: str = "fast") -> None:
        from demt_exp.models.model import build_model

        self.device = torch.device(args.device)
        cfg = compose_config(config_overrides(args))
        torch.manual_seed(0)
        self.official = VARIANTS[variant].official
        self.model = (build_official_model(cfg) if self.official else build_model(cfg)).to(self.device)
        if args.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-6, foreach=True)
        self.image = torch.randn(args.batch, 3, *args.size, device=self.device)
        if args.channels_last:
            self.image = self.image.contiguous(memory_format=torch.channels_last)
        self.autocast = autocast_factory(args.precision, self.device)  # as training runs it
        self.scaler = grad_scaler(args.precision, self.device)
        self.compiled: nn.Module = torch.compile(self.model) if args.compile else self.model
        self.net = self.compiled
        self.allocator = str(cfg.trainer.cpu_allocator)
        configure_cpu_allocator(self.allocator)
        if str(cfg.trainer.get("cpu_linear", "blas")) == "onednn" and self.device.type == "cpu" and not self.official:
            use_onednn_linears(self.model)  # as the engine does for trainer.cpu_linear=onednn

    def use(self, variant: str) -> None:
        """Switch the model's formulation and the process's allocator policy to those of `variant`."""
        chosen = VARIANTS[variant]
        if chosen.official != self.official:
            raise ValueError(f"variant {variant!r} needs a Setting built for it")
        if not self.official:
            set_fast(self.model, chosen.fast)
        self.net = self.model if chosen.eager else self.compiled
        configure_cpu_allocator(chosen.allocator or self.allocator)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def eval_forward(self) -> None:
        self.model.eval()
        with torch.no_grad(), self.autocast():
            self.net(self.image)
        self.sync()

    def train_step(self) -> None:
        self.model.train()
        with self.autocast():
            preds = self.net(self.image)
        loss = sum(p.float().square().mean() for p in preds.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.sync()


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternating_times(
    setting: Setting, variants: list[str], repeats: int, warmup: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per eval forward and train step of each variant, alternating at every repeat."""
    times: dict[str, dict[str, list[float]]] = {v: {"eval": [], "train": []} for v in variants}
    for what, fn in (("eval", setting.eval_forward), ("train", setting.train_step)):
        for index in range(warmup + repeats):
            for variant in variants:
                setting.use(variant)
                seconds = timed(fn)
                if index >= warmup:
                    times[variant][what].append(seconds)
    setting.use("fast")
    return times


def memory_worker(args: argparse.Namespace, variant: str, what: str) -> dict[str, float]:
    """In a fresh process: peak memory of the eval forward or the train step, MiB, minus and with the model.

    One measurement per process: under `cpu_allocator=reuse` memory freed by an earlier
    measurement stays in the heap and would hide part of the next one's peak."""
    setting = Setting(args, variant)
    setting.use(variant)
    fn = setting.eval_forward if what == "eval" else setting.train_step
    # later steps also hold the optimiser state: the median of several after the first
    seconds, base, peak = timed_peak(fn, setting.device, max(1, args.memory_repeats))
    return {
        f"{what}_step_s": seconds,
        f"{what}_peak_mib": peak / 2**20,
        f"{what}_peak_minus_model_mib": (peak - base) / 2**20,
        "model_mib": base / 2**20,
    }


def summarise(times: dict[str, list[float]], batch: int) -> dict[str, float]:
    return {
        "eval_median_s": statistics.median(times["eval"]),
        "eval_min_s": min(times["eval"]),
        "train_median_s": statistics.median(times["train"]),
        "train_min_s": min(times["train"]),
        "eval_images_per_s": batch / statistics.median(times["eval"]),
        "train_images_per_s": batch / statistics.median(times["train"]),
    }


def format_table(results: dict[str, dict[str, float]]) -> str:
    columns = [
        ("eval_median_s", "eval med s"),
        ("eval_min_s", "eval min s"),
        ("train_median_s", "train med s"),
        ("train_min_s", "train min s"),
        ("train_images_per_s", "train img/s"),
        ("eval_step_s", "eval s fresh proc"),
        ("train_step_s", "train s fresh proc"),
        ("train_peak_minus_model_mib", "train peak-model MiB"),
        ("train_peak_mib", "train peak MiB"),
        ("eval_peak_minus_model_mib", "eval peak-model MiB"),
    ]
    rows = [["variant", *(label for _, label in columns)]]
    rows += [
        [name, *(f"{values[k]:.3f}" if k in values else "-" for k, _ in columns)] for name, values in results.items()
    ]
    return "\n".join(text_table(rows, right=range(1, len(columns) + 1)))


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    variants = chosen_variants(args.baseline)
    if "eager" in variants and not args.compile:
        raise SystemExit("--baseline eager compares with the compiled model: it needs --compile")
    if args.memory == "none" and variants != same_heap_policy(variants):
        raise SystemExit(
            "--baseline system-malloc or official is timed in fresh processes: it needs --memory subprocess"
        )
    setting = Setting(args)
    alternating = same_heap_policy(variants)
    times = alternating_times(setting, alternating, args.repeats, args.warmup)
    results: dict[str, dict[str, float]] = {v: summarise(times[v], args.batch) if v in times else {} for v in variants}
    if args.memory == "subprocess":
        for variant in variants:
            for what in MEASURED:
                results[variant].update(memory_in_subprocess(argv, variant, what))
    report: dict[str, Any] = {
        "overrides": config_overrides(args),
        "batch": args.batch,
        "size": list(args.size),
        "device": args.device,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "cpu_allocator": setting.allocator,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": results,
        "times_s": times,
    }
    fast = results["fast"]
    report["speedup_over_fast"] = {
        v: {what: results[v][f"{what}_median_s"] / fast[f"{what}_median_s"] for what in MEASURED}
        for v in alternating[1:]
    }
    if args.memory == "subprocess" and len(variants) > 1:
        report["fresh_process_speedup_over_fast"] = fresh_process_speedups(results, variants)
    if "plain" in results:
        report["speedup_plain_over_fast"] = report["speedup_over_fast"]["plain"]
        if "train_peak_minus_model_mib" in fast:
            report["memory_fast_over_plain"] = (
                fast["train_peak_minus_model_mib"] / results["plain"]["train_peak_minus_model_mib"]
            )
    if "train_peak_minus_model_mib" in results.get("official", {}):
        report["memory_fast_over_official"] = (
            fast["train_peak_minus_model_mib"] / results["official"]["train_peak_minus_model_mib"]
        )
    if args.profile:
        report["shares"] = component_shares(setting.model, setting.train_step, setting.device)
    return report


def print_report(report: dict[str, Any]) -> None:
    print(
        f"model {' '.join(report['overrides']) or '(default config)'}: batch {report['batch']}, "
        f"{report['size'][0]}x{report['size'][1]}, {report['device']} {report['precision']}, "
        f"{report['threads']} threads, torch {report['torch']}"
    )
    print(format_table(report["results"]))
    for variant, s in report.get("speedup_over_fast", {}).items():
        print(f"speed-up fast vs {variant} (median, alternating runs): eval {s['eval']:.2f}x, train {s['train']:.2f}x")
    for variant, s in report.get("fresh_process_speedup_over_fast", {}).items():
        print(
            f"speed-up fast vs {variant} (fresh processes, median of --memory-repeats): "
            f"eval {s['eval']:.2f}x, train {s['train']:.2f}x"
        )
    if "memory_fast_over_plain" in report:
        print(f"train peak memory minus model, fast / plain: {report['memory_fast_over_plain']:.2f}")
    if "memory_fast_over_official" in report:
        print(f"train peak memory minus model, fast / official: {report['memory_fast_over_official']:.2f}")
    if "shares" in report:
        print("time share of a train step: " + ", ".join(f"{k} {v:.0%}" for k, v in report["shares"].items()))
    print(json.dumps(report))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m demt_exp.bench model", description=__doc__)
    add_options(parser)
    worker = None
    if argv[:1] == ["--memory-worker"]:
        worker, argv = (argv[1], argv[2]), argv[3:]
    args = parser.parse_args(argv)
    if worker is not None:
        print(json.dumps(memory_worker(args, *worker)))
        return
    report = run(args, argv)
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
