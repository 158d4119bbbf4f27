"""The SEISM boundary metric as a metric of the edge task: each image's edge map cropped to its
original size and quantised as the official code writes its PNGs, matched against the ground-truth
boundary map SEISM builds for that data set (`boundary_ground_truth`).

SEISM's ground truth is `seg2bmap` of a label map, not thinned (`gt_boundary_map`):
* NYUD-v2: the edge PNG itself, i.e. the edge task's target;
* PASCAL-Context: the 459-class `LabelMap` of pascal-context/trainval/<id>.mat (`db_gt.m`,
  relabelled, which keeps every boundary), not the edge training target (a thinned Laplacian).
  A batch carries it as "boundary_labels" only when the val set is built with
  `val_dataset_options` (the evaluation does this; training batches stay as they are).

It runs where the evaluation asks for it (`MetricContext.options["boundary"]`, set by
`python -m demt_exp.evaluate`), not in every validation of a training run. Counting goes through
a `BoundaryCounter` (image-level worker processes; 0 workers counts here); the counts are all in
`state` once `sync()` or `compute()` returns.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
from torch import Tensor

from demt_exp.data.crop import crop_to_original, edge_uint8, image_id
from demt_exp.data.transforms import BOUNDARY_LABELS
from demt_exp.metrics.boundary.counts import BoundaryMetric, gt_boundary_map
from demt_exp.metrics.boundary.parallel import BoundaryCounter
from demt_exp.metrics.boundary.protocol import BoundaryProtocol, boundary_protocol

__all__ = ["WIRED_DATASETS", "EdgeBoundary", "boundary_ground_truth", "val_dataset_options"]

# Where each data set's SEISM ground truth comes from: None = the edge task's own target.
LABEL_SOURCE: dict[str, str | None] = {"nyud": None, "pascal_context": BOUNDARY_LABELS}
WIRED_DATASETS = tuple(LABEL_SOURCE)


def val_dataset_options(dataset: str | None, tasks: Collection[str]) -> dict[str, Any]:
    """Keyword arguments for the val set so that its batches carry the boundary labels."""
    if "edge" in tasks and dataset is not None and LABEL_SOURCE.get(dataset) is not None:
        return {"boundary_labels": True}
    return {}


def boundary_ground_truth(batch: Mapping[str, Any], task: str, dataset: str, index: int) -> np.ndarray:
    """SEISM's ground-truth boundary (bool, original image size) of image `index` of a batch."""
    key = LABEL_SOURCE[dataset] or task
    if key not in batch:
        raise KeyError(
            f"the {dataset} batch has no {key!r} for the SEISM boundary ground truth; build the "
            f"val set with {val_dataset_options(dataset, [task])} (python -m demt_exp.evaluate does)"
        )
    labels: Tensor = batch[key]
    labels = labels[:, None] if labels.dim() == 3 else labels  # index maps are (B, H, W)
    return gt_boundary_map(crop_to_original(labels, batch["meta"], index)[0].cpu().numpy())


class EdgeBoundary(BoundaryMetric):
    """odsF / oisF / AP of the edge task under the protocol named in the context's options.

    image_ids: score only these images (a protocol's image list); None scores every image.
    workers: counting processes (0: in this process).
    """

    def __init__(
        self, protocol: BoundaryProtocol, dataset: str, image_ids: Collection[str] | None = None, workers: int = 0
    ) -> None:
        super().__init__(protocol)
        if dataset not in LABEL_SOURCE:
            raise ValueError(f"no SEISM boundary ground truth for data set {dataset!r}; known: {list(WIRED_DATASETS)}")
        self.dataset = dataset
        self.image_ids = None if image_ids is None else frozenset(image_ids)
        self.counter = BoundaryCounter(self, workers)

    @classmethod
    def from_context(cls, context: Any) -> EdgeBoundary | None:
        settings = context.options.get("boundary")
        if not settings or context.dataset not in WIRED_DATASETS:
            return None  # not asked for, or no SEISM ground truth for this data set: edge keeps pixel_maxF only
        dataset = str(context.dataset)
        protocol = boundary_protocol(str(settings.get("protocol", "atrc")), dataset)
        return cls(protocol, dataset, settings.get("image_ids"), int(settings.get("workers", 0)))

    def update_from_batch(self, pred: Tensor, batch: Mapping[str, Any], task: str) -> None:
        meta = batch["meta"]
        for i in range(pred.shape[0]):
            if self.image_ids is not None and image_id(meta, i) not in self.image_ids:
                continue
            edge = edge_uint8(crop_to_original(pred, meta, i)[0]).cpu().numpy()
            self.counter.submit(edge, boundary_ground_truth(batch, task, self.dataset, i))

    def sync(self) -> None:
        self.counter.finish()  # every submitted image's counts into the state before pooling
        super().sync()

    def compute(self) -> dict[str, float | str]:
        self.counter.finish()
        return super().compute()

    def reset(self) -> None:
        self.counter.finish()
        super().reset()
