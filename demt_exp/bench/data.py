"""`python -m demt_exp.bench data`: can the loaders keep 8 GPUs fed at the official recipe?

For NYUD-v2 (425x560 crops of 425x560 files) and PASCAL-Context (512x512 crops of 500x375 files) it writes a
small data set in the real on-disk formats (PNG/NPY, JPEG and MATLAB part and Context files: data/example_*.py)
unless `--root` names real data, and measures one loader worker (one process, one thread) through the
official training pipeline (SPEC 3.4): decoding, transforms, and the whole item; then a DataLoader with
`--workers` processes. The official recipe trains with a total batch of 8 on 8 GPUs (one image per GPU per
step) and 4 workers per GPU; the table says how many workers a GPU needs at a given step rate, and what the
decoded-label cache (`dataset.decoded_cache`) saves where decoding is the larger part.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from demt_exp.bench.help import SUBCOMMANDS

DATASETS = {  # (file size H x W, training crop), the official sizes (SPEC 3.2, 3.3)
    "nyud": ((425, 560), (425, 560)),
    "pascal_context": ((375, 500), (512, 512)),
}
OFFICIAL_GPUS, OFFICIAL_WORKERS = 8, 4  # total batch 8: one image per GPU per step


def write_files(name: str, root: Path, images: int) -> Path:
    """`images` training ids (and two val ids) in the data set's real formats at its real size."""
    size = DATASETS[name][0]
    if name == "nyud":
        from demt_exp.data.example_nyud import write_fake_nyud

        return write_fake_nyud(root / "NYUDv2", "demt", n_train=images, n_val=2, size=size)
    from demt_exp.data.example_pascal import write_fake_pascal

    return write_fake_pascal(root / "PASCALContext", n_train=images, n_val=2, size=size)


def build_train_set(name: str, root: Path, **options: Any) -> Dataset:
    """The training split with the official training transforms at the official crop size."""
    crop = DATASETS[name][1]
    if name == "nyud":
        from demt_exp.data.nyud import NYUDv2

        return NYUDv2(root, "train", image_size=crop, **options)
    from demt_exp.data.pascal_context import PascalContext

    return PascalContext(root, "train", image_size=crop, cache_dir=root / "part_index", **options)


def per_item_seconds(fn: Callable[[int], Any], count: int) -> float:
    """Median seconds of fn(i) over i < count, after one warm-up call."""
    fn(0)
    times = []
    for index in range(count):
        start = time.perf_counter()
        fn(index)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def one_worker(dataset: Any, count: int) -> dict[str, float]:
    """Seconds per item of decoding (`load`), of the transforms on a decoded item, and of both."""
    torch.manual_seed(0)
    decoded = [dataset.load(i) for i in range(count)]
    return {
        "decode_s": per_item_seconds(dataset.load, count),
        "transform_s": per_item_seconds(lambda i: dataset.transform(decoded[i]), count),
        "item_s": per_item_seconds(dataset.__getitem__, count),
    }


def loader_rate(dataset: Dataset, workers: int, items: int) -> float:
    """Items per second a DataLoader with `workers` processes (batch 1) delivers, after its start-up."""
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers, persistent_workers=False)
    stream = iter(loader)
    next(stream)  # start-up (worker processes, first item) is not timed
    start = time.perf_counter()
    seen = 0
    for _ in range(items - 1):
        next(stream)
        seen += 1
    return seen / (time.perf_counter() - start)


def workers_needed(step_rates: Sequence[float], worker_rate: float, per_gpu_batch: int = 1) -> list[int]:
    """Loader workers one GPU needs to deliver `per_gpu_batch` images per step at each step rate."""
    return [math.ceil(rate * per_gpu_batch / worker_rate) for rate in step_rates]


def report(name: str, figures: dict[str, Any], step_rates: Sequence[float]) -> list[str]:
    size, crop = DATASETS[name]
    item = figures["item_s"]
    rate = 1 / item
    lines = [
        f"{name} train, files {size[0]}x{size[1]} -> official training transforms at {crop[0]}x{crop[1]} "
        f"({figures['source']}):",
        f"  one worker: {rate:.1f} images/s ({1e3 * item:.0f} ms per image: decode {1e3 * figures['decode_s']:.0f} ms, "
        f"transforms {1e3 * figures['transform_s']:.0f} ms)",
    ]
    if "cached_item_s" in figures:
        cached = figures["cached_item_s"]
        lines.append(
            f"  with dataset.decoded_cache: {1 / cached:.1f} images/s ({1e3 * cached:.0f} ms per image, "
            f"{item / cached:.2f}x)"
        )
    for workers, loaded in figures["loader"].items():
        lines.append(f"  DataLoader, {workers} worker(s): {loaded:.1f} images/s")
    need = workers_needed(step_rates, rate)
    lines.append(
        "  8 GPUs at the official batch (1 image per GPU per step): workers per GPU needed at "
        + ", ".join(f"{s:g} steps/s: {n}" for s, n in zip(step_rates, need))
        + f" (the official recipe runs {OFFICIAL_WORKERS}, i.e. {OFFICIAL_WORKERS * rate:.0f} images/s per GPU)"
    )
    return lines


def measure(name: str, root: Path | None, images: int, workers: Sequence[int], cache: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="demt-bench-data-") as scratch:
        source = f"real data in {root}" if root else f"{images} generated images in the real formats"
        root = root or write_files(name, Path(scratch), images)
        dataset = build_train_set(name, root)
        count = min(images, len(dataset))
        figures: dict[str, Any] = {"source": source, **one_worker(dataset, count)}
        if cache:
            cached = build_train_set(name, root, decoded_cache=Path(scratch) / "decoded")
            for index in range(count):  # the first epoch fills the cache
                cached[index]
            figures["cached_item_s"] = per_item_seconds(cached.__getitem__, count)
        figures["loader"] = {w: loader_rate(dataset, w, count) for w in workers}
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demt_exp.bench data", description=SUBCOMMANDS["data"])
    parser.add_argument("--dataset", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    parser.add_argument("--root", type=Path, help="real data (one --dataset) instead of generated files")
    parser.add_argument("--images", type=int, default=24, help="training images to time (generated or read)")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="DataLoader worker counts to time")
    parser.add_argument("--steps-per-s", type=float, nargs="+", default=[2.0, 5.0, 10.0, 20.0])
    parser.add_argument("--no-cache", action="store_true", help="skip the decoded-label cache figure")
    args = parser.parse_args(argv)
    if args.root is not None and len(args.dataset) != 1:
        parser.error("--root reads one data set: name it with --dataset")
    torch.set_num_threads(1)  # a loader worker runs single-threaded
    for name in args.dataset:
        figures = measure(name, args.root, args.images, args.workers, cache=not args.no_cache)
        print("\n".join(report(name, figures, args.steps_per_s)))
