"""The data set contract (demt_exp/data/contract.py): items checked once per split, each break named."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from demt_exp.data.contract import DatasetContractError, check_dataset, check_sample


def sample(**changes) -> dict:
    item = {
        "image": torch.zeros(3, 8, 10),
        "semseg": torch.zeros(8, 10, dtype=torch.int64),
        "depth": torch.zeros(1, 8, 10),
        "meta": {"id": "a", "size": torch.tensor([8, 10])},
    }
    return {**item, **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"image": torch.zeros(3, 8, 10, dtype=torch.float64)},
            r"'image' is a torch.float64 tensor .* float32 tensor \(3, H, W\)",
        ),
        (
            {"semseg": torch.zeros(1, 8, 10, dtype=torch.int64)},
            r"'semseg' is .* \(1, 8, 10\); expected a torch.int64 tensor \(8, 10\)",
        ),
        ({"depth": torch.zeros(8, 10)}, r"'depth' is .* \(8, 10\); expected a torch.float32 tensor \(1, 8, 10\)"),
        ({"meta": {"id": 3}}, r"'meta' is \{'id': 3\}; expected \{'id': str, 'size'"),
    ],
)
def test_an_item_that_breaks_the_contract_is_named(changes: dict, message: str) -> None:
    check_sample(sample(), ["semseg", "depth"], "dataset.val (X)")
    with pytest.raises(DatasetContractError, match=message):
        check_sample(sample(**changes), ["semseg", "depth"], "dataset.val (X)")
    missing = sample()
    del missing["depth"]
    with pytest.raises(DatasetContractError, match="'depth' is missing"):
        check_sample(missing, ["semseg", "depth"], "dataset.val (X)")


class Drawing(torch.utils.data.Dataset):
    """Items that draw from every random generator, as augmentations do."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> dict:
        random.random(), np.random.rand(), torch.rand(1)
        return sample()


def test_checking_a_data_set_draws_no_random_number_of_the_run() -> None:
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    assert isinstance(check_dataset(Drawing(), ["semseg", "depth"], "train"), Drawing)
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


def test_an_empty_data_set_is_named() -> None:
    class Empty(Drawing):
        def __len__(self) -> int:
            return 0

    with pytest.raises(DatasetContractError, match=r"dataset.train \(.*Empty\): holds no item"):
        check_dataset(Empty(), ["semseg"], "train")
