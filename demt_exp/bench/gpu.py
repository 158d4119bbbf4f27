"""`python -m demt_exp.bench gpu [--dry-run] [--json F]`: the figures a lent GPU should give, in one script.

For DeMT and DeGMix on Swin-T and Swin-B (NYUD tasks, batch 8, 448x576), ours and the official computation
(demt_exp/bench/official_model.py): training images/s, peak memory (max allocated) and MFU (train-step
FLOPs counted on the device by `bench counts`' counter, over the device's peak for the precision) in fp32,
bf16 and bf16 + torch.compile; the official computation in fp32 only (under bf16 autocast it calls
torchvision's deform_conv2d, which has no bf16 kernel, where ours samples in fp32); then a
2-process NCCL DDP step held against one process averaging the halves' gradients (with 2 GPUs or more). Without CUDA it
says so and exits 0; `--dry-run` runs every part on the CPU at a tiny size (DeMT Swin-T, gloo for DDP, no
compile), which is how the tests check it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from demt_exp.bench.model import Setting, add_options
from demt_exp.utils.flops import count_flops
from demt_exp.utils.tables import text_table

MODELS = {
    "DeMT Swin-T": ["backbone=swin_t"],
    "DeGMix Swin-T": ["backbone=swin_t", "encoder=degmix", "decoder=degmix"],
    "DeMT Swin-B": ["backbone=swin_b"],
    "DeGMix Swin-B": ["backbone=swin_b", "encoder=degmix", "decoder=degmix"],
}
NYUD = ["tasks=nyud", "dataset.num_semseg_classes=40"]
MODES = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16+compile": ("bf16", True)}
# Dense peak TFLOP/s by device name (SXM parts; NVIDIA's data sheets, without sparsity).
PEAK_TFLOPS = {
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
}


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak for the precision (TF32 when fp32 matrix products may use it), or None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    key = "tf32" if precision == "fp32" and torch.backends.cuda.matmul.allow_tf32 else precision
    return next((peaks[key] * 1e12 for part, peaks in PEAK_TFLOPS.items() if part in name), None)


def setting_args(overrides: list[str], mode: str, sizes: dict[str, Any]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_options(parser)
    precision, compiled = MODES[mode]
    argv = [*overrides, "--batch", str(sizes["batch"]), "--size", *map(str, sizes["size"])]
    argv += ["--device", sizes["device"], "--precision", precision] + (["--compile"] if compiled else [])
    return parser.parse_args(argv)


def measure(overrides: list[str], mode: str, official: bool, sizes: dict[str, Any]) -> dict[str, float | None]:
    """Images/s, peak memory and MFU of the train step of one model in one mode."""
    setting = Setting(setting_args(overrides, mode, sizes), "official" if official else "fast")
    device, compiled = setting.device, setting.net
    setting.net = setting.model  # counted eager: the same FLOPs, and no compile under the counter's dispatch mode
    flops = sum(count_flops(setting.train_step, device).by_module.get("Global", {}).values())
    setting.net = compiled
    for _ in range(sizes["warmup"]):
        setting.train_step()  # the compile, cuDNN's choices, the allocator's pools
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(sizes["steps"]):
        setting.train_step()
    seconds = (time.perf_counter() - start) / sizes["steps"]
    peak = peak_flops(device, MODES[mode][0])
    return {
        "images_per_s": sizes["batch"] / seconds,
        "step_s": seconds,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "train_step_gflops": flops / 1e9,
        "mfu": flops / seconds / peak if peak else None,
    }


def ddp_worker(rank: int, world: int, backend: str, port: str, out: str) -> None:
    """One rank of the DDP check: its half of the batch through DDP, then the parameters after the step."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group(backend, rank=rank, world_size=world)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    model, image = ddp_model_and_batch(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if backend == "nccl" else None)
    one_step(ddp, image.chunk(world)[rank])
    if rank == 0:
        torch.save({n: p.detach().cpu() for n, p in model.named_parameters()}, out)
    dist.destroy_process_group()


def ddp_model_and_batch(device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    from demt_exp.config.compose import compose_config
    from demt_exp.models.model import build_model

    torch.manual_seed(0)
    model = build_model(compose_config([*NYUD, "backbone.drop_path_rate=0"])).to(device)
    return model, torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(device)


def one_step(model: torch.nn.Module, *halves: torch.Tensor) -> None:
    """One SGD step on the mean of the halves' gradients (DDP: one half per rank)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for half in halves:
        (sum(p.float().square().mean() for p in model(half).values()) / len(halves)).backward()
    optimizer.step()


def ddp_check(dry_run: bool, folder: Path) -> dict[str, Any]:
    """Max difference between the 2-process DDP step and one process averaging the two halves' gradients."""
    gpus = torch.cuda.device_count()
    if not dry_run and gpus < 2:
        return {"skipped": f"needs 2 GPUs, found {gpus}"}
    import torch.multiprocessing as mp

    backend, out = ("gloo" if dry_run else "nccl"), folder / "ddp_rank0.pt"
    mp.spawn(ddp_worker, args=(2, backend, "29517", str(out)), nprocs=2, join=True)
    device = torch.device("cpu" if dry_run else "cuda")
    model, image = ddp_model_and_batch(device)
    one_step(model, *image.chunk(2))  # each half on its own (batch norms see a half), gradients averaged
    ddp = torch.load(out, weights_only=True)
    diff = max((p.detach().cpu() - ddp[n]).abs().max().item() for n, p in model.named_parameters())
    return {"backend": backend, "max_abs_difference": diff, "equal_within_1e-4": diff < 1e-4}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        sizes = {"batch": 2, "size": [64, 64], "device": "cpu", "warmup": 0, "steps": 1}
        models, modes = dict(list(MODELS.items())[:1]), ["fp32", "bf16"]
    else:
        sizes = {"batch": 8, "size": [448, 576], "device": "cuda", "warmup": 3, "steps": 10}
        models, modes = MODELS, list(MODES)
    report: dict[str, Any] = {"device": torch.cuda.get_device_name() if not args.dry_run else "cpu (dry run)"}
    report["sizes"], report["results"] = sizes, []
    for name, overrides in models.items():
        for mode in modes:
            for official in (False, True) if mode == "fp32" else (False,):
                row = measure([*overrides, *NYUD], mode, official, sizes)
                report["results"].append({"model": name, "mode": mode, "official": official, **row})
                print(line(report["results"][-1]), flush=True)
    report["ddp"] = ddp_check(args.dry_run, args.workdir)
    return report


def cells(row: dict[str, Any]) -> list[str]:
    mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "-"
    memory = f"{row['peak_memory_gib']:.2f} GiB" if row["peak_memory_gib"] is not None else "-"
    who = "official" if row["official"] else "ours"
    return [row["model"], row["mode"], who, f"{row['images_per_s']:.2f}", memory, mfu]


def line(row: dict[str, Any]) -> str:
    model, mode, who, rate, memory, mfu = cells(row)
    return f"{model}, {mode}, {who}: {rate} images/s, peak {memory}, MFU {mfu}"


def print_report(report: dict[str, Any]) -> None:
    head = ["model", "mode", "code", "images/s", "peak memory", "MFU"]
    sizes = report["sizes"]
    print(f"\n{report['device']}, batch {sizes['batch']}, {sizes['size'][0]} x {sizes['size'][1]}")
    print(*text_table([head, *map(cells, report["results"])], right={3, 4, 5}), sep="\n")
    print(f"DDP step check: {report['ddp']}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m demt_exp.bench gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="every part on the CPU at a tiny size")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    parser.add_argument("--workdir", type=Path, default=Path("."), help="folder for the DDP check's file")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("bench gpu: no CUDA device here, nothing to measure (--dry-run checks the script on the CPU)")
        return
    report = run(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
