"""Boundary odsF / oisF / AP as SEISM computes them, in Python (SPEC 4, oddity 33).

Per image and threshold (SEISM `eval_cont` -> `edgesEvalImg`): binarise the prediction as
the protocol says (`boundary_protocol`), thin it with `bwmorph(..., 'thin', Inf)`, match it
one-to-one to the ground-truth boundary map within maxDist x the image diagonal
(`correspond`), and keep four counts; pooling over images gives ODS, OIS and AP
(`boundary_pooling`).

Inputs, per image, both at the original image size (crop any padding first):
* edge: uint8 PNG values 0..255 (what the official code writes), or float probabilities in
  [0, 1], which are first quantised as the official writer does: 255 * p in float32,
  truncated by `astype(uint8)` (`png_values`).
* gt_boundary: the SEISM ground-truth boundary map, `gt_boundary_map(labels)` where labels is
  the NYUD edge PNG (SEISM's NYUD reader passes the edge image itself as a label map) or the
  PASCAL-Context `LabelMap` of the .mat file. seg2bmap marks a pixel whose east, south or
  south-east neighbour has another label, so a 1-px NYUD edge line becomes a 2-px band; SEISM
  does not thin the ground truth (edgesEvalImg thins only the prediction) and neither do we.

Work shared across thresholds: masks nest (a higher threshold keeps a subset), so a mask
with the same number of pixels as the previous one is the same mask and reuses its counts;
the ground-truth side of the matching graph is built once per image.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from demt_exp.data.crop import quantised_edge
from demt_exp.metrics.boundary.correspond import ToleranceGraph
from demt_exp.metrics.boundary.nms import nms_edge_map
from demt_exp.metrics.boundary.pooling import (
    COUNT_FIELDS,
    best_threshold_counts,
    ods_ois_ap,
)
from demt_exp.metrics.boundary.protocol import BoundaryProtocol
from demt_exp.metrics.boundary.thinning import thin_pixels
from demt_exp.metrics.dense import Metric

__all__ = ["COUNT_FIELDS", "BoundaryMetric", "gt_boundary_map", "image_counts", "png_values"]


def gt_boundary_map(labels: np.ndarray) -> np.ndarray:
    """BSDS seg2bmap at full size: pixel differs from its E, S or SE neighbour (bool)."""
    seg = np.asarray(labels)
    if seg.ndim != 2 or seg.size == 0:
        raise ValueError(f"gt_boundary_map expects a non-empty 2-D label map, got shape {seg.shape}")
    b = np.zeros(seg.shape, dtype=bool)
    b[:-1, :-1] = (seg[:-1, :-1] != seg[:-1, 1:]) | (seg[:-1, :-1] != seg[1:, :-1]) | (seg[:-1, :-1] != seg[1:, 1:])
    b[-1, :-1] = seg[-1, :-1] != seg[-1, 1:]
    b[:-1, -1] = seg[:-1, -1] != seg[1:, -1]
    b[-1, -1] = False
    return b


def png_values(edge: np.ndarray) -> np.ndarray:
    """uint8 values as the official code writes edge PNGs: uint8 passes, floats are 255 p truncated."""
    values = np.asarray(edge)
    if values.ndim != 2:
        raise ValueError(f"edge map must be 2-D (H, W), got shape {values.shape}")
    if values.dtype == np.uint8:
        return values
    if not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"edge map must be uint8 PNG values or float probabilities, got dtype {values.dtype}")
    if not np.isfinite(values).all() or values.min(initial=0.0) < 0 or values.max(initial=0.0) > 1:
        raise ValueError("float edge map must hold probabilities in [0, 1] (apply the sigmoid first)")
    return quantised_edge(values)  # type: ignore[return-value]


def _binary_maps(values: np.ndarray, protocol: BoundaryProtocol) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (threshold index, flat indices of the on pixels), lowest threshold first."""
    if protocol.nms:
        scores = nms_edge_map(values).reshape(-1)
    else:
        scores = values.reshape(-1)
        # v is on at t iff double(v) / 255 >= t: the same test on the 256 possible values.
        levels = np.arange(256, dtype=np.float64) / 255.0
    order = np.argsort(scores, kind="stable")[::-1]
    sorted_scores = scores[order]
    for k, t in enumerate(protocol.thresholds):
        if protocol.nms:
            on_count = int(np.count_nonzero(protocol.pixel_on(sorted_scores, t)))
        else:
            on_level = protocol.pixel_on(levels, t)
            first_on = int(np.argmax(on_level)) if on_level.any() else 256
            on_count = int(np.count_nonzero(sorted_scores >= first_on))
        yield k, order[:on_count]


def image_counts(edge: np.ndarray, gt_boundary: np.ndarray, protocol: BoundaryProtocol) -> np.ndarray:
    """(K, 4) int64 counts per threshold: matched predicted, predicted, matched GT, GT pixels."""
    values = png_values(edge)
    gt = np.asarray(gt_boundary)
    if gt.shape != values.shape:
        raise ValueError(
            f"edge map {values.shape} and ground-truth boundary {gt.shape} differ in size; "
            "crop the prediction to the original image size first"
        )
    graph = ToleranceGraph(gt != 0, protocol.max_dist)
    counts = np.zeros((protocol.num_thresholds, 4), dtype=np.int64)
    counts[:, 3] = graph.num_gt
    h, w = values.shape
    previous_size, previous = -1, np.zeros(3, np.int64)
    for k, on in _binary_maps(values, protocol):
        if on.size != previous_size:  # nested masks of equal size are equal
            thinned = thin_pixels(on, (h, w))
            matched = graph.match_count_flat(thinned)
            previous_size, previous = on.size, np.array([matched, thinned.size, matched])
        counts[k, :3] = previous
    return counts


class BoundaryMetric(Metric):
    """odsF / oisF / AP (x100) pooled over a set of images under one protocol.

    State (float64, summable across processes with all_reduce SUM): counts per threshold
    summed over images (4K), counts of each image at its own best threshold summed (4, the
    OIS sufficient statistic) and the number of images (1). Images are added with
    `update_image` (computes the counts here) or `add_counts` (counts from `image_counts`
    run elsewhere, e.g. in worker processes).
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"odsF": True, "oisF": True, "AP": True}

    def __init__(self, protocol: BoundaryProtocol) -> None:
        super().__init__(4 * protocol.num_thresholds + 5)
        self.protocol = protocol

    @property
    def num_images(self) -> int:
        return int(self.state[-1])

    def add_counts(self, counts: np.ndarray) -> None:
        """Add one image's (K, 4) counts from `image_counts` with this protocol."""
        counts = np.asarray(counts)
        if counts.shape != (self.protocol.num_thresholds, 4):
            raise ValueError(
                f"counts of shape {counts.shape} do not fit protocol {self.protocol.name!r} "
                f"({self.protocol.num_thresholds} thresholds x 4 fields {COUNT_FIELDS})"
            )
        values = np.concatenate([counts.reshape(-1), best_threshold_counts(counts), [1.0]])
        self._accumulate(torch.from_numpy(values.astype(np.float64)).to(self.state.device))

    def update_image(self, edge: np.ndarray, gt_boundary: np.ndarray) -> np.ndarray:
        """Count one image here and add it; returns its (K, 4) counts."""
        counts = image_counts(edge, gt_boundary, self.protocol)
        self.add_counts(counts)
        return counts

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred: (B, 1, H, W) edge logits; target: (B, H, W) or (B, 1, H, W) GT boundary maps."""
        if pred.dim() != 4 or pred.shape[1] != 1:
            raise ValueError(f"BoundaryMetric: expected (B, 1, H, W) edge logits, got {tuple(pred.shape)}")
        probs = torch.sigmoid(pred.detach().float())[:, 0].cpu().numpy()
        gts = target.detach().reshape(target.shape[0], *target.shape[-2:]).cpu().numpy()
        for prob, gt in zip(probs, gts):
            self.update_image(prob, gt)

    def compute(self) -> dict[str, float | str]:
        """odsF, oisF, AP (x100), the ODS threshold and the protocol name."""
        k = self.protocol.num_thresholds
        state = self.state.detach().cpu().numpy()
        scores = ods_ois_ap(
            state[: 4 * k].reshape(k, 4), state[4 * k : 4 * k + 4], np.asarray(self.protocol.thresholds)
        )
        return {
            "odsF": 100.0 * scores["odsF"],
            "oisF": 100.0 * scores["oisF"],
            "AP": 100.0 * scores["AP"],
            "ods_threshold": scores["ods_threshold"],
            "protocol": self.protocol.name,
        }
