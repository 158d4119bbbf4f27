"""Component benches, each a median over repeats in one process: `python -m demt_exp.bench deform|step|data|...`.

deform: forward+backward time of the ChlSpl backends at a head-sized input, and their ratio.
linear: F.linear (BLAS) vs the oneDNN 1x1-convolution route of fp32 CPU linear layers, forward
        and forward+backward, at the layer shapes of DeMT Swin-T at batch 2, 448x576.
step:   training-step throughput (images/s) of a composed config, e.g. the default job.
data:   samples/s of one data-loading worker through a data set's train and val pipelines.
boundary: images/s of the SEISM boundary evaluation (odsF) on generated edge maps.
weighting: step time of each loss-weighting method relative to fixed.
"""

from __future__ import annotations

import argparse
import time

import torch

from demt_exp.bench.help import SUBCOMMANDS
from demt_exp.bench.timing import median_seconds
from demt_exp.config.compose import compose_config
from demt_exp.models import deform


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


# (rows, C_in, C_out) of DeMT Swin-T's linear layers at batch 2, 448x576: Swin stages 1, 3 and 4,
# and the task interaction over all task tokens
LINEAR_SHAPES = (
    (32256, 96, 288),
    (32256, 384, 96),
    (2352, 384, 1152),
    (2016, 1536, 384),
    (504, 768, 3072),
    (129024, 256, 256),
)


def bench_linear(shapes: tuple[tuple[int, int, int], ...], repeats: int) -> list[dict[str, float]]:
    """Seconds per forward and per forward+backward of F.linear and of the convolution route, per shape."""
    import torch.nn.functional as F

    from demt_exp.models.linear import convolution_linear

    rows = []
    for m, c_in, c_out in shapes:
        x = torch.randn(m, c_in, requires_grad=True)
        weight = torch.randn(c_out, c_in, requires_grad=True)
        bias = torch.randn(c_out, requires_grad=True)
        upstream = torch.randn(m, c_out)
        row: dict[str, float] = {"rows": m, "c_in": c_in, "c_out": c_out}
        for name, fn in (("blas", F.linear), ("onednn", convolution_linear)):
            with torch.no_grad():
                row[f"{name}_forward_s"] = median_seconds(lambda: fn(x, weight, bias), repeats)
            row[f"{name}_train_s"] = median_seconds(lambda: fn(x, weight, bias).backward(upstream), repeats)
        rows.append(row)
    return rows


def bench_step(overrides: list[str], repeats: int) -> float:
    """Images per second of one training step (forward, loss, backward, optimiser) of a composed config."""
    from hydra.utils import instantiate
    from torch.utils.data import default_collate

    from demt_exp.engine.optim import build_optimizer
    from demt_exp.losses.task_losses import build_loss
    from demt_exp.models.model import build_model

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


def bench_boundary(
    images: int, size: tuple[int, int], protocol_name: str, dataset: str, workers: int
) -> tuple[float, float, dict[str, float | str]]:
    """(wall images/s, CPU seconds per image of this process, scores) on generated maps.

    Map generation is not timed. With workers=0 the CPU time is the cost of one image on one
    core, which stays meaningful on a busy machine where wall time does not."""
    import numpy as np

    from demt_exp.metrics.boundary.counts import gt_boundary_map
    from demt_exp.metrics.boundary.parallel import evaluate_boundaries
    from demt_exp.metrics.boundary.protocol import boundary_protocol
    from demt_exp.metrics.boundary.synthetic import synthetic_edge_pair

    rng = np.random.default_rng(0)
    protocol = boundary_protocol(protocol_name, dataset)
    pairs = []
    for _ in range(images):
        pred, edge = synthetic_edge_pair(size[0], size[1], rng)
        pairs.append((pred, gt_boundary_map(edge)))
    start, cpu_start = time.perf_counter(), time.process_time()
    metric = evaluate_boundaries(pairs, protocol, workers)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return images / wall, cpu / images, metric.compute()


WEIGHTING_METHODS = ("fixed", "uncertainty", "dwa", "gradnorm", "pcgrad")


def bench_weighting(
    overrides: list[str], repeats: int, methods: tuple[str, ...] = WEIGHTING_METHODS
) -> dict[str, float]:
    """Seconds per training step (train_step: forward, weighting, backward(s), optimiser) for each
    `weighting` method on one composed config, the same batch and a fresh model each."""
    from contextlib import nullcontext
    from functools import partial

    from hydra.utils import instantiate
    from torch.utils.data import default_collate

    from demt_exp.engine.optim import build_optimizer, build_poly_scheduler
    from demt_exp.engine.step import train_step
    from demt_exp.losses.task_losses import build_loss
    from demt_exp.models.model import build_model
    from demt_exp.weighting import build_weighting

    seconds: dict[str, float] = {}
    for method in methods:
        cfg = compose_config([*overrides, f"weighting={method}"])
        model = build_model(cfg).train()
        loss_fn = build_loss(cfg.tasks)
        weighting = build_weighting(cfg.weighting, cfg.tasks.names, loss_fn.weights)
        optimizer = build_optimizer(cfg.optimizer, model)
        if (group := weighting.param_group(float(cfg.optimizer.lr))) is not None:
            optimizer.add_param_group(group)
        scheduler = build_poly_scheduler(optimizer, 10**9)
        dataset = instantiate(cfg.dataset.train)
        batch = default_collate([dataset[i % len(dataset)] for i in range(int(cfg.trainer.batch_size))])
        step = partial(train_step, model, batch, loss_fn, optimizer, scheduler, nullcontext, None, weighting=weighting)
        seconds[method] = median_seconds(step, repeats)
    return seconds


def main(argv: list[str]) -> None:
    """The component benches: deform, step, data, boundary, linear, weighting."""
    parser = argparse.ArgumentParser(prog="python -m demt_exp.bench", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("deform", help=SUBCOMMANDS["deform"])
    d.add_argument("--shape", type=int, nargs=4, default=(2, 256, 64, 64), metavar=("B", "C", "H", "W"))
    d.add_argument("--repeats", type=int, default=5)
    d.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s = sub.add_parser("step", help=SUBCOMMANDS["step"])
    s.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.batch_size=4")
    s.add_argument("--repeats", type=int, default=3)
    b = sub.add_parser("boundary", help=SUBCOMMANDS["boundary"])
    b.add_argument("--images", type=int, default=16)
    b.add_argument("--size", type=int, nargs=2, default=(425, 560), metavar=("H", "W"))
    b.add_argument("--protocol", default="atrc", help="atrc, invpt or e.g. atrc-fast-9thr")
    b.add_argument("--dataset", default="nyud", choices=["nyud", "pascal_context"])
    b.add_argument("--workers", type=int, default=2, help="worker processes (0: in this process)")
    li = sub.add_parser("linear", help=SUBCOMMANDS["linear"])
    li.add_argument("--repeats", type=int, default=5)
    w = sub.add_parser("weighting", help=SUBCOMMANDS["weighting"])
    w.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. tasks=nyud trainer.batch_size=2")
    w.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.what == "boundary":
        rate, cpu, scores = bench_boundary(args.images, tuple(args.size), args.protocol, args.dataset, args.workers)
        print(
            f"boundary {scores['protocol']} ({args.dataset}, {args.size[0]}x{args.size[1]}, {args.images} images, "
            f"{args.workers} workers): {rate:.2f} images/s wall; 654 images in {654 / rate / 60:.1f} min; "
            f"odsF {scores['odsF']:.2f} oisF {scores['oisF']:.2f} AP {scores['AP']:.2f}"
        )
        if args.workers == 0:
            print(f"  CPU time per image {cpu:.2f} s: 654 images on 2 cores in {654 * cpu / 2 / 60:.1f} min")
        return
    if args.what == "linear":
        from demt_exp.engine.cpu_allocator import configure_cpu_allocator

        configure_cpu_allocator("reuse")  # as training runs: no page faults in the timings
        print(f"fp32 linear on CPU, {torch.get_num_threads()} threads: speed-up of the oneDNN route over F.linear")
        for row in bench_linear(LINEAR_SHAPES, args.repeats):
            print(
                f"  ({row['rows']:6d}, {row['c_in']:4d}) -> {row['c_out']:4d}: forward "
                f"{row['blas_forward_s'] / row['onednn_forward_s']:.2f}x, forward+backward "
                f"{row['blas_train_s'] / row['onednn_train_s']:.2f}x"
            )
        return
    if args.what == "weighting":
        times = bench_weighting(args.overrides, args.repeats)
        print(f"training step per weighting method ({' '.join(args.overrides) or 'default config'}), relative to fixed")
        for method, value in times.items():
            print(f"  {method:12s} {value * 1e3:9.1f} ms  x{value / times['fixed']:.2f}")
        return
    if args.what == "deform":
        results = bench_deform(*args.shape, repeats=args.repeats, device=args.device)
        print(
            f"ChlSpl forward+backward, input {tuple(args.shape)} on {args.device}, "
            f"torch threads {torch.get_num_threads()}"
        )
        for backend, seconds in results.items():
            print(f"  {backend:12s} {seconds * 1e3:9.1f} ms")
        if "torchvision" in results:
            print(f"  ratio torchvision / torch: {results['torchvision'] / results['torch']:.2f}")
        print(f"  auto picks: {deform.resolve_backend('auto', torch.device(args.device).type)}")
    else:
        throughput = bench_step(args.overrides, args.repeats)
        print(f"training step ({' '.join(args.overrides) or 'default config'}): {throughput:.2f} images/s")
