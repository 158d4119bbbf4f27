"""What a data set gives the loop: the sample contract a data set of your own keeps (docs/extending.md).

A data set is a torch `Dataset` that `dataset.train` / `dataset.val` build (any `_target_`, your own package
included), with a length and items that are dicts:

  image   float32 tensor (3, H, W), normalised
  <task>  for each task of the run, in the layout data/tasks.py gives it: an index map, int64 (H, W), or a
          float32 (C, H, W) map with the task's channels (IGNORE_INDEX marks what is not labelled)
  meta    {"id": str, "size": int64 tensor (2,), the original (H, W)}; real data sets add "pad"

All items of a split have one H x W (the loader stacks them). Each command checks the first item of each
split it builds, so a data set that breaks the contract fails naming its class, the key and what it held
beside what was expected, before the first step rather than inside the loss or a metric. The check draws
no random number the run would otherwise have drawn.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from demt_exp.tasks.registry import get_task
from demt_exp.utils.describe import describe
from demt_exp.utils.errors import UserError


class DatasetContractError(UserError, TypeError):
    """A data set whose items are not what the loop, the losses and the metrics read (one line, exit 2)."""


def check_sample(sample: Any, tasks: Sequence[str], where: str) -> None:
    """One item against the contract; `where` names the data set and split in the error."""
    if not isinstance(sample, Mapping):
        raise DatasetContractError(
            f"{where}: an item is {describe(sample)}; expected a dict with image, tasks and meta"
        )
    image = sample.get("image")
    if not (
        isinstance(image, torch.Tensor) and image.dtype == torch.float32 and image.dim() == 3 and image.shape[0] == 3
    ):
        raise DatasetContractError(f"{where}: 'image' is {describe(image)}; expected a float32 tensor (3, H, W)")
    height, width = image.shape[1:]
    for task in tasks:
        dtype, shape = get_task(task).target_shape(height, width)
        target = sample.get(task)
        if not (isinstance(target, torch.Tensor) and target.dtype == dtype and tuple(target.shape) == shape):
            raise DatasetContractError(
                f"{where}: {task!r} is {'missing' if target is None else describe(target)}; expected a {dtype} tensor "
                f"{shape} for an image of {height} x {width} (data/tasks.py, tasks/base.py)"
            )
    meta = sample.get("meta")
    size = meta.get("size") if isinstance(meta, Mapping) else None
    if not (
        isinstance(meta, Mapping)
        and isinstance(meta.get("id"), str)
        and isinstance(size, torch.Tensor)
        and tuple(size.shape) == (2,)
    ):
        raise DatasetContractError(
            f"{where}: 'meta' is {meta!r:.120}; expected {{'id': str, 'size': int64 tensor (2,) the original (H, W)}}"
        )


def check_dataset(dataset: Any, tasks: Sequence[str], split: str) -> Any:
    """The data set itself, once its first item kept the contract (random states left as they were)."""
    cls = type(dataset)
    where = f"dataset.{split} ({cls.__module__}.{cls.__qualname__})"
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise DatasetContractError(f"{where}: not a map-style Dataset; expected __len__ and __getitem__")
    if len(dataset) == 0:
        raise DatasetContractError(f"{where}: holds no item")
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            sample = dataset[0]
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
    check_sample(sample, tasks, where)
    return dataset
