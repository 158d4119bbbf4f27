"""The model components' contract (demt_exp/models/contract.py): each break named with what was returned."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from demt_exp.models.contract import ContractError, check_attributes, check_decoded, check_features


class Backbone(nn.Module):
    out_channels = [8, 16]


class Encoder(nn.Module):
    dim = 4


IMAGE = torch.zeros(2, 3, 32, 32)


def test_a_backbone_and_encoder_name_the_attribute_they_lack() -> None:
    assert check_attributes(Backbone(), Encoder()) == [8, 16]
    nameless = nn.Identity()
    with pytest.raises(ContractError, match=r"backbone torch\.nn\.modules\.linear\.Identity: out_channels is None"):
        check_attributes(nameless, Encoder())
    with pytest.raises(ContractError, match="encoder torch.nn.modules.linear.Identity: dim is None"):
        check_attributes(Backbone(), nameless)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (torch.zeros(2, 8, 8, 8), r"returned a torch.float32 tensor of shape \(2, 8, 8, 8\); expected a list of 2"),
        ([torch.zeros(2, 8, 8, 8)], r"returned a list of 1; expected a list of 2 tensors"),
        ([torch.zeros(2, 8, 8, 8), torch.zeros(2, 12, 4, 4)], r"feature map 1 is .* \(2, 12, 4, 4\); expected \(2, 16"),
        ([torch.zeros(2, 8, 64, 64), torch.zeros(2, 16, 4, 4)], r"feature map 0 .* h <= 32, w <= 32"),
    ],
)
def test_backbone_outputs_that_break_the_contract(features, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_features(Backbone(), features, IMAGE)


def test_decoder_outputs_must_hold_every_task_at_the_encoder_width() -> None:
    good = {"semseg": torch.zeros(2, 4, 8, 8), "depth": torch.zeros(2, 4, 8, 8)}
    check_decoded(nn.Identity(), good, ["semseg", "depth"], dim=4, batch=2)
    with pytest.raises(
        ContractError, match=r"returned a mapping with keys \['semseg'\]; expected .* \['semseg', 'depth'\]"
    ):
        check_decoded(nn.Identity(), {"semseg": good["semseg"]}, ["semseg", "depth"], dim=4, batch=2)
    with pytest.raises(
        ContractError, match=r"'depth' is a torch.float32 tensor of shape \(2, 3, 8, 8\); expected \(2, 4"
    ):
        check_decoded(nn.Identity(), {**good, "depth": torch.zeros(2, 3, 8, 8)}, ["semseg", "depth"], dim=4, batch=2)


def test_the_model_checks_its_components_on_the_first_forward_only(compose) -> None:
    from demt_exp.models.model import build_model

    model = build_model(
        compose(
            [
                "+backbone.embed_dim=16",
                "+backbone.depths=[1,1,1,1]",
                "+backbone.num_heads=[1,1,1,1]",
                "encoder.dim=16",
                "tasks.names=[semseg,depth]",
            ]
        )
    ).eval()
    assert not model.contract_checked
    with torch.no_grad():
        first = model(torch.randn(1, 3, 32, 32))
        assert model.contract_checked
        model.decoder.forward = lambda encoded: {"semseg": encoded["semseg"]}  # broken after the check: not checked
        with pytest.raises(KeyError):
            model(torch.randn(1, 3, 32, 32))
    assert set(first) == {"semseg", "depth"}
