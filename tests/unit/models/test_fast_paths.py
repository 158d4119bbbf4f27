"""Every fast path equals the plain formulation in float64: outputs and all gradients, 1e-10 relative."""

from __future__ import annotations

import pytest
import torch
from autograd_checks import assert_close_to_float64, graph_ops, saved_by_formulation
from torch import nn

from demt_exp.models.decoder import TaskAwareDecoder
from demt_exp.models.degmix import ChannelGate, GatedTaskDecoder
from demt_exp.models.encoder import DeformableMixerEncoder
from demt_exp.models.formulation import set_fast
from demt_exp.models.linear import use_onednn_linears
from demt_exp.models.model import build_model

TOLERANCE = 1e-10


@torch.no_grad()
def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter random (LayerNorm affines, biases and zero-initialised weights too)."""
    gen = torch.Generator().manual_seed(seed)
    for param in module.parameters():
        param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * 0.3)
    return module


def outputs_and_grads(module: nn.Module, inputs, fast: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs and the gradients of a random projection of them w.r.t. the inputs and every parameter."""
    set_fast(module, fast)
    module.zero_grad(set_to_none=True)
    values = list(inputs.values()) if isinstance(inputs, dict) else inputs
    leaves = [x.detach().clone().requires_grad_(True) for x in values]
    if isinstance(inputs, dict):
        out = module(dict(zip(inputs, leaves)))
    else:  # a list is one argument (backbone maps), a tuple is the positional arguments
        out = module(leaves) if isinstance(inputs, list) else module(*leaves)
    outs = list(out.values()) if isinstance(out, dict) else [out]
    gen = torch.Generator().manual_seed(11)
    # drawn in float64 whatever the dtype, so an fp32 run sees the upstream gradient of a float64 one
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)).sum() for o in outs)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    grads.update({f"input{i}": x.grad.clone() for i, x in enumerate(leaves)})
    return [o.detach() for o in outs], grads


def assert_equal_relative(fast: torch.Tensor, plain: torch.Tensor, name: str) -> None:
    scale = plain.abs().max().item()
    assert scale > 0, f"{name} is all zero: the comparison would prove nothing"
    assert (fast - plain).abs().max().item() <= TOLERANCE * scale, name


def assert_fast_equals_plain(module: nn.Module, inputs) -> None:
    plain_out, plain_grads = outputs_and_grads(module, inputs, fast=False)
    fast_out, fast_grads = outputs_and_grads(module, inputs, fast=True)
    assert len(fast_out) == len(plain_out)
    for i, (f, p) in enumerate(zip(fast_out, plain_out)):
        assert f.shape == p.shape
        assert_equal_relative(f, p, f"output {i}")
    assert (
        set(fast_grads)
        == set(plain_grads)
        == {n for n, _ in module.named_parameters()} | {f"input{i}" for i in range(len(inputs))}
    )
    for name, grad in plain_grads.items():
        assert_equal_relative(fast_grads[name], grad, name)


def task_maps(tasks: list[str], batch: int, dim: int, size: tuple[int, int], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {t: torch.randn(batch, dim, *size, generator=gen, dtype=torch.float64) for t in tasks}


@pytest.mark.parametrize("batch", [1, 2])
def test_demt_decoder_fast_equals_plain(batch: int) -> None:
    tasks = ["a", "b", "c"]
    decoder = randomize_(TaskAwareDecoder(tasks, dim=16, fusion_heads=4, query_heads=4).double(), seed=1)
    assert_fast_equals_plain(decoder, task_maps(tasks, batch, 16, (3, 5), seed=2))


@pytest.mark.parametrize("batch", [1, 2])
def test_degmix_decoder_fast_equals_plain(batch: int) -> None:
    tasks = ["a", "b", "c", "d"]
    decoder = randomize_(GatedTaskDecoder(tasks, dim=16, fusion_heads=2, query_heads=2, gate_hidden=32).double(), 3)
    assert_fast_equals_plain(decoder, task_maps(tasks, batch, 16, (4, 3), seed=4))


@pytest.mark.parametrize("chunk", [4096, 5])
def test_fast_decoder_with_activation_checkpointing_equals_plain(chunk: int) -> None:
    """Checkpointed, the per-pixel task query runs (and is recomputed) piece by piece: 12 pixels
    in pieces of 5, 5 and 2, or in one piece."""
    tasks = ["a", "b"]
    decoder = randomize_(TaskAwareDecoder(tasks, dim=8, activation_checkpointing=True).double(), seed=5)
    decoder.query_chunk_pixels = chunk
    assert_fast_equals_plain(decoder, task_maps(tasks, 2, 8, (2, 3), seed=6))


@pytest.mark.parametrize("chunk", [4096, 5])
def test_fast_decoder_recomputing_the_task_query_equals_plain(chunk: int) -> None:
    """Default training: the per-pixel task query saves only its inputs and is recomputed in
    backward, piece by piece (12 pixels in pieces of 5, 5 and 2, or in one piece)."""
    tasks = ["a", "b", "c"]
    decoder = randomize_(TaskAwareDecoder(tasks, dim=16).double(), seed=14)
    assert decoder.recompute_query
    decoder.query_chunk_pixels = chunk
    assert_fast_equals_plain(decoder, task_maps(tasks, 2, 16, (2, 3), seed=15))


def saved_storages(decoder: TaskAwareDecoder, maps: dict[str, torch.Tensor]) -> list[int]:
    """Element counts of the distinct storages one training forward of the decoder saves for backward."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes() // tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        decoder({t: m.requires_grad_(True) for t, m in maps.items()})
    return sorted(storages.values(), reverse=True)


def test_recomputed_task_query_saves_only_its_inputs() -> None:
    """Saving activations, the forward keeps (M, T*heads, C)-sized tensors of the attention and
    several (T, M, C) ones of the query; recomputing it (the default), the only map-sized storages
    saved are the task tokens and the task interaction's pre-norm output (its LayerNorm runs in the query)."""
    tasks, dim, heads = ["a", "b", "c"], 16, 4
    decoder = TaskAwareDecoder(tasks, dim=dim, query_heads=heads).double()
    maps = task_maps(tasks, 2, dim, (3, 5), seed=16)  # M = 30 pixels
    per_head, per_task = len(tasks) * heads * 30 * dim, len(tasks) * 30 * dim
    decoder.recompute_query = False
    kept = saved_storages(decoder, maps)
    assert [n for n in kept if n >= per_task] == [per_head] * 2 + [per_task] * 7
    decoder.recompute_query = True
    assert [n for n in saved_storages(decoder, maps) if n >= per_task] == [per_task] * 2


def test_fast_decoder_in_fp32_takes_the_onednn_route_with_the_float64_plain_outputs_and_gradients() -> None:
    """fp32 on CPU runs the task query's grouped products as oneDNN convolutions (float64 takes the
    batched products the tests above check): outputs and gradients stay those of the float64 plain
    formulation to fp32 accuracy."""
    tasks = ["a", "b", "c"]
    decoder = randomize_(TaskAwareDecoder(tasks, dim=16).double(), seed=17)
    maps = task_maps(tasks, 2, 16, (4, 5), seed=18)
    plain_out, plain_grads = outputs_and_grads(decoder, maps, fast=False)
    decoder.float()
    fp32_maps = {t: m.float() for t, m in maps.items()}
    set_fast(decoder, True)
    use_onednn_linears(enabled=True)  # trainer.cpu_linear=onednn
    try:
        out = decoder({t: m.clone().requires_grad_(True) for t, m in fp32_maps.items()})
        assert "ConvolutionBackward0" in graph_ops(*out.values())
        fast_out, fast_grads = outputs_and_grads(decoder, fp32_maps, fast=True)
    finally:
        use_onednn_linears(enabled=False)
    for name, value, want in [(f"output {i}", f, p) for i, (f, p) in enumerate(zip(fast_out, plain_out))] + [
        (k, fast_grads[k], v) for k, v in plain_grads.items()
    ]:
        assert_close_to_float64(value, want, name)


@torch.no_grad()
def test_fast_decoder_without_gradients_runs_the_task_query_in_pieces_with_the_plain_outputs() -> None:
    tasks = ["a", "b", "c"]
    decoder = randomize_(TaskAwareDecoder(tasks, dim=16).double(), seed=12)
    maps = task_maps(tasks, 2, 16, (3, 7), seed=13)  # 42 pixels
    set_fast(decoder, False)
    plain = decoder(maps)
    set_fast(decoder, True)
    decoder.query_chunk_pixels = 8
    pieces = []
    decoder.query_all = lambda tokens, fused, batch: (
        pieces.append(len(tokens)) or TaskAwareDecoder.query_all(decoder, tokens, fused, batch)
    )
    chunked = decoder(maps)
    assert pieces == [8, 8, 8, 8, 8, 2]
    for task in tasks:
        assert_equal_relative(chunked[task], plain[task], task)


def test_project_then_resize_equals_resize_concat_project() -> None:
    """DeMT encoder: per-scale projection before bilinear resizing = linear1 on the 4-scale concatenation."""
    widths = [6, 8, 10, 12]
    encoder = randomize_(DeformableMixerEncoder(widths, ["a", "b"], dim=16, depth=1).double(), seed=7)
    gen = torch.Generator().manual_seed(8)
    # odd sizes: the resize factors are not integers, as at 425x560
    sizes = [(11, 14), (6, 7), (3, 4), (2, 2)]
    maps = [torch.randn(2, c, *s, generator=gen, dtype=torch.float64) for c, s in zip(widths, sizes)]
    assert_fast_equals_plain(encoder, maps)


def test_patch_projection_rebuilds_the_concatenation_in_backward() -> None:
    """DeGMix encoder (patch projection): the plain outputs and every gradient in float64, and what is saved for
    backward is the backbone maps, not their C_in-wide concatenation at stride 4 (which the 4x4 conv would keep)."""
    widths, sizes = [6, 8, 10, 12], [(12, 16), (6, 8), (3, 4), (2, 2)]
    encoder = randomize_(DeformableMixerEncoder(widths, ["a"], dim=16, depth=1, projection="patch").double(), seed=9)
    gen = torch.Generator().manual_seed(10)
    maps = [torch.randn(2, c, *size, generator=gen, dtype=torch.float64) for c, size in zip(widths, sizes)]
    assert_fast_equals_plain(encoder, maps)
    leaves = [m.clone().requires_grad_(True) for m in maps]
    saved = saved_by_formulation(encoder, lambda: encoder.merge(leaves))
    concatenation = 2 * sum(widths) * 12 * 16
    assert saved[False] - saved[True] == 8 * (concatenation - sum(m.numel() for m in maps))


def test_channel_gate_saves_only_its_layer_norms_inputs() -> None:
    """DeGMix's shared gate: the plain outputs and every gradient in float64; per token, the two LayerNorms'
    outputs (C and hidden / 2 values) and their statistics (2 + 2) are no longer saved."""
    gate = randomize_(ChannelGate(dim=8, hidden=12).double(), seed=11)
    x = torch.randn(3, 10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    assert_fast_equals_plain(gate, (x,))
    leaf = x.clone().requires_grad_(True)
    saved = saved_by_formulation(gate, lambda: gate(leaf))
    assert saved[False] - saved[True] == 8 * 30 * (8 + 6 + 2 + 2)


def test_whole_degmix_model_fast_equals_plain(compose) -> None:
    cfg = compose(
        [
            "encoder=degmix",
            "decoder=degmix",
            "encoder.projection=linear",
            "encoder.dim=16",
            "tasks=nyud",
            "backbone.drop_path_rate=0",
        ]
    )
    # train mode (batch statistics): through eval-mode BatchNorm the plain formulation's float64
    # input gradient disagreed with central finite differences on torch 2.14.1 (the fast one agreed).
    model = randomize_(build_model(cfg).double().train(), seed=9)
    image = torch.randn(2, 3, 32, 40, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    assert_fast_equals_plain(model, (image,))
