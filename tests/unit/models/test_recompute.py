"""trainer.activation_checkpointing: the same outputs, gradients and BatchNorm statistics as without it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from demt_exp.models.degmix import GatedTaskDecoder
from demt_exp.models.encoder import DeformableMixerEncoder
from demt_exp.models.model import build_model
from demt_exp.models.recompute import frozen_batch_statistics, recompute_in_backward


def run_step(model: nn.Module, inputs: tuple, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One forward and backward (stochastic depth on, so the recomputation must replay the RNG)."""
    torch.manual_seed(seed)
    out = model(*inputs) if len(inputs) == 1 else model(list(inputs))
    sum(o.square().mean() for o in out.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {t: o.detach() for t, o in out.items()}, grads


def assert_same_step(plain: nn.Module, recomputed: nn.Module, inputs: tuple, min_grads: int) -> None:
    """Outputs, parameter gradients and every buffer (BatchNorm statistics, counts) equal after one step."""
    recomputed.load_state_dict(plain.state_dict())
    out_plain, grads_plain = run_step(plain, inputs, seed=7)
    out_recomputed, grads_recomputed = run_step(recomputed, inputs, seed=7)
    for task in out_plain:
        torch.testing.assert_close(out_recomputed[task], out_plain[task], rtol=1e-10, atol=1e-12)
    assert grads_recomputed.keys() == grads_plain.keys() and len(grads_plain) >= min_grads
    for name in grads_plain:
        torch.testing.assert_close(grads_recomputed[name], grads_plain[name], rtol=1e-10, atol=1e-12, msg=name)
    # Every BatchNorm's running statistics and batch count moved exactly once, as without recomputation.
    buffers_plain, buffers_recomputed = dict(plain.named_buffers()), dict(recomputed.named_buffers())
    counts = [n for n in buffers_plain if n.endswith("num_batches_tracked")]
    assert counts and all(int(buffers_plain[n]) == 1 for n in counts)
    for name, value in buffers_plain.items():
        torch.testing.assert_close(buffers_recomputed[name], value, rtol=0, atol=0, msg=name)


def test_checkpointed_demt_equals_the_plain_one_and_counts_batch_statistics_once(compose) -> None:
    """Swin stages (stochastic depth replayed), mixers, task query and heads all recomputed."""
    overrides = ["encoder.dim=16", "tasks=nyud", "backbone.drop_path_rate=0.3"]
    plain = build_model(compose(overrides)).double().train()
    recomputed = build_model(compose([*overrides, "trainer.activation_checkpointing=true"])).double().train()
    assert recomputed.encoder.activation_checkpointing and recomputed.heads.activation_checkpointing
    assert recomputed.decoder.activation_checkpointing and recomputed.backbone.activation_checkpointing
    image = torch.randn(2, 3, 32, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert_same_step(plain, recomputed, (image,), min_grads=100)


def test_checkpointed_degmix_encoder_and_decoder_equal_the_plain_ones() -> None:
    """DeGMix parts: two mixer blocks per task (four BatchNorms each) and the gated decoder."""
    tasks = ["a", "b", "c"]
    gen = torch.Generator().manual_seed(2)
    maps = [
        torch.randn(2, c, *s, generator=gen, dtype=torch.float64)
        for c, s in zip([6, 8, 10, 12], [(8, 10), (4, 5), (2, 3), (1, 2)])
    ]

    def build(recompute: bool) -> nn.Module:
        torch.manual_seed(0)
        encoder = DeformableMixerEncoder([6, 8, 10, 12], tasks, dim=16, depth=2, activation_checkpointing=recompute)
        decoder = GatedTaskDecoder(
            tasks, dim=16, fusion_heads=2, query_heads=2, gate_hidden=32, activation_checkpointing=recompute
        )
        return nn.Sequential(encoder, decoder).double().train()

    assert_same_step(build(False), build(True), tuple(maps), min_grads=20)


def test_recomputation_leaves_running_statistics_as_one_forward_does() -> None:
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU())
    x = torch.randn(5, 3, 6, 6, requires_grad=True)
    reference = copy.deepcopy(block)
    reference(x).sum().backward()
    recompute_in_backward(block, block, x).sum().backward()
    norm, expected = block[1], reference[1]
    # by hand: r = 0.7 * 0 + 0.3 * batch mean (and 0.7 * 1 + 0.3 * unbiased batch variance)
    batch = block[0](x).detach().transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(norm.running_mean, 0.3 * batch.mean(1))
    torch.testing.assert_close(norm.running_var, 0.7 + 0.3 * batch.var(1, unbiased=True))
    torch.testing.assert_close(norm.running_mean, expected.running_mean, rtol=0, atol=0)
    assert int(norm.num_batches_tracked) == 1 and norm.momentum == 0.3


def test_frozen_statistics_restore_momentum_and_count_even_when_the_block_fails() -> None:
    norm = nn.BatchNorm1d(2, momentum=None)  # cumulative average: the count decides the factor
    before = norm.running_mean.clone()
    with pytest.raises(RuntimeError, match="boom"), frozen_batch_statistics(norm):
        norm(torch.randn(4, 2))
        raise RuntimeError("boom")
    assert norm.momentum is None and int(norm.num_batches_tracked) == 0
    torch.testing.assert_close(norm.running_mean, before, rtol=0, atol=0)
