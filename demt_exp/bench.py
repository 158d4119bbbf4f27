"""Benchmarks that print figures: `python -m demt_exp.bench [model]|deform|step|data|scaling [options]`.

model (default): eval forward and train step time, memory and component shares of the
        configured model, optionally beside the plain formulation (`demt_exp/bench_model.py`).

deform: forward+backward time of the ChlSpl backends at a head-sized input, and their ratio.
step:   training-step throughput (images/s) of a composed config, e.g. the default job.
data:   samples/s of one data-loading worker through a data set's train and val pipelines.
Figures are medians over repeats in one process, so ratios are comparable on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch

from demt_exp.config import compose_config
from demt_exp.models import deform


def median_seconds(fn: Callable[[], None], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_deform(batch: int, channels: int, height: int, width: int, repeats: int, device: str) -> dict[str, float]:
    """Seconds per forward+backward of ChlSpl for each usable backend."""
    module = deform.ChannelDeformConv(channels, channels).to(device)
    x = torch.randn(batch, channels, height, width, device=device, requires_grad=True)
    backends = ["torch"] + (["torchvision"] if deform.torchvision_deform_available() else [])
    results = {}
    for backend in backends:
        module.backend = backend

        def step() -> None:
            module(x).square().mean().backward()
            if device == "cuda":
                torch.cuda.synchronize()

        results[backend] = median_seconds(step, repeats)
    return results


def bench_step(overrides: list[str], repeats: int) -> float:
    """Images per second of one training step (forward, loss, backward, optimiser) of a composed config."""
    from hydra.utils import instantiate
    from torch.utils.data import default_collate

    from demt_exp.models.model import build_model
    from demt_exp.optim import build_optimizer
    from demt_exp.train import build_loss

    cfg = compose_config(overrides)
    model = build_model(cfg).train()
    loss_fn = build_loss(cfg.tasks)
    optimizer = build_optimizer(cfg.optimizer, model)
    dataset = instantiate(cfg.dataset.train)
    batch = default_collate([dataset[i % len(dataset)] for i in range(int(cfg.trainer.batch_size))])

    def step() -> None:
        loss, _ = loss_fn(model(batch["image"]), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return int(cfg.trainer.batch_size) / median_seconds(step, repeats)




def bench_data(overrides: list[str], samples: int) -> dict[str, float]:
    """Samples per second of one worker (one process decoding and transforming) per split."""
    from hydra.utils import instantiate

    cfg = compose_config(overrides)
    rates = {}
    for split in ("train", "val"):
        dataset = instantiate(cfg.dataset[split])
        count = min(samples, len(dataset))
        dataset[0]  # warm-up: imports, caches
        start = time.perf_counter()
        for index in range(count):
            dataset[index]
        rates[split] = count / (time.perf_counter() - start)
    return rates


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["scaling"]:
        from demt_exp import bench_scaling

        bench_scaling.main(argv[1:])
        return
    if not argv or argv[0] == "model" or argv[0].startswith("--") or "=" in argv[0]:
        from demt_exp import bench_model

        bench_model.main(argv[1:] if argv[:1] == ["model"] else argv)
        return
    parser = argparse.ArgumentParser(prog="python -m demt_exp.bench", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("deform", help="ChlSpl backends, forward+backward")
    d.add_argument("--shape", type=int, nargs=4, default=(2, 256, 64, 64), metavar=("B", "C", "H", "W"))
    d.add_argument("--repeats", type=int, default=5)
    d.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s = sub.add_parser("step", help="training-step throughput of a config")
    s.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.batch_size=4")
    s.add_argument("--repeats", type=int, default=3)
    dl = sub.add_parser("data", help="data-loading samples/s per worker")
    dl.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dataset=nyud dataset.root=/data/NYUDv2")
    dl.add_argument("--samples", type=int, default=50)
    args = parser.parse_args(argv)
    if args.what == "data":
        torch.set_num_threads(1)  # a loader worker runs single-threaded
        for split, rate in bench_data(args.overrides, args.samples).items():
            print(f"{split} pipeline ({' '.join(args.overrides)}): {rate:.1f} samples/s per worker")
        return
    if args.what == "deform":
        results = bench_deform(*args.shape, repeats=args.repeats, device=args.device)
        print(f"ChlSpl forward+backward, input {tuple(args.shape)} on {args.device}, torch threads {torch.get_num_threads()}")
        for backend, seconds in results.items():
            print(f"  {backend:12s} {seconds * 1e3:9.1f} ms")
        if "torchvision" in results:
            print(f"  ratio torchvision / torch: {results['torchvision'] / results['torch']:.2f}")
        print(f"  auto picks: {deform.resolve_backend('auto', torch.device(args.device).type)}")
    else:
        throughput = bench_step(args.overrides, args.repeats)
        print(f"training step ({' '.join(args.overrides) or 'default config'}): {throughput:.2f} images/s")


if __name__ == "__main__":
    main()
