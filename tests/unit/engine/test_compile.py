"""trainer.compile: the heads and decoders trace without graph breaks; compiled and eager outputs agree."""

from __future__ import annotations

import pytest
import torch
from commands import SMALL_SWIN
from torch import nn

from demt_exp.engine.compile import maybe_compile
from demt_exp.models.model import build_model

VARIANTS = {
    "demt": ["encoder=demt", "decoder=demt"],
    "degmix": ["encoder=degmix", "decoder=degmix"],
    "degmix_linear": ["encoder=degmix", "decoder=degmix", "encoder.projection=linear"],
    "demt_global": ["encoder=demt", "decoder=demt", "decoder.attention=global", "decoder.kv_stride=2"],
}


class Head(nn.Module):
    """Everything after the backbone: encoder, decoder, task heads."""

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.size = model, size

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        m = self.model
        return m.heads(m.decoder(m.encoder(features)), size=self.size)


def small_model(compose, variant: str, *tasks: str) -> nn.Module:
    """The variant behind the small Swin (commands.SMALL_SWIN: the default Swin's code at 1/50 of its weights),
    with NYUD's four tasks or the `tasks` named."""
    torch.manual_seed(0)
    cfg = compose(
        [
            *SMALL_SWIN,
            *VARIANTS[variant],
            "encoder.dim=16",
            "tasks=nyud",
            *([f"tasks.names=[{','.join(tasks)}]"] if tasks else []),
            "dataset.num_semseg_classes=5",
            "backbone.drop_path_rate=0",
        ]
    )
    return build_model(cfg).eval()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_head_traces_without_graph_breaks(compose, variant: str) -> None:
    model = small_model(compose, variant)
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 64, 64))
    explanation = torch._dynamo.explain(Head(model, (64, 64)))(features)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.slow
def test_compiled_model_equals_eager(compose) -> None:
    """The whole model (backbone included) compiled: a small Swin and two tasks keep the graph, and the cold
    inductor compile, small."""
    model = small_model(compose, "demt", "semseg", "depth")
    cfg = compose(["trainer.compile=true"])
    compiled = maybe_compile(model, cfg)
    assert compiled is not model and maybe_compile(model, compose([])) is model
    image = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        eager = model(image)
        fast = compiled(image)
    for task, pred in eager.items():
        torch.testing.assert_close(fast[task], pred, atol=1e-4, rtol=1e-4)
