"""Saliency mIoU as the field reports it next to maxF (ASTMT, MTI-Net, InvPT): the best, over 15
thresholds 0.2..0.9, of the mean per-image Jaccard index of the binarised saliency map.

Not in the official DeMT/DeGMix code (SPEC 4). A per-image mean is a sum over images, so it
pools exactly across processes. Unlike the ASTMT meter (which passes the raw label map, so an
ignore value 255 counts as salient), pixels labelled 255 are left out here.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from demt_exp.data.tasks import IGNORE_INDEX, squeeze_index_map
from demt_exp.metrics.dense import MaxF, Metric, _check_spatial

# (first, last, count) of the thresholds; made where they are used, since a tensor made at import time lands on
# whatever device context imports the module (e.g. the meta device of the model-fit check)
JACCARD_THRESHOLDS = (0.2, 0.9, 15)


class SaliencyMeanIoU(Metric):
    """mIoU = 100 * max over t of the mean over images of |P_t & G| / |P_t | G|, P_t = prob > t.

    An image whose prediction and ground truth are both empty scores 1 (as ASTMT's
    `jaccard`); an image without any valid pixel is not counted. State: [sum of Jaccard per
    threshold (15), image count].
    """

    higher_is_better: ClassVar[dict[str, bool]] = {"mIoU": True}

    def __init__(self) -> None:
        super().__init__(JACCARD_THRESHOLDS[2] + 1)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred: (B, 1|2, H, W) logits; target: (B, H, W) or (B, 1, H, W) 0/1, 255 = ignore."""
        target = squeeze_index_map(target)
        _check_spatial(pred, target, "SaliencyMeanIoU")
        prob = MaxF.positive_probability(pred.detach()).double().flatten(1)  # (B, HW)
        valid = (target != IGNORE_INDEX).flatten(1)
        truth = (target > 0.5).flatten(1) & valid
        thresholds = torch.linspace(*JACCARD_THRESHOLDS, dtype=torch.float64, device=prob.device)
        predicted = (prob[:, None, :] > thresholds[None, :, None]) & valid[:, None, :]  # (B, T, HW)
        inter = (predicted & truth[:, None, :]).sum(-1).double()
        union = (predicted | truth[:, None, :]).sum(-1).double()
        jaccard = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
        counted = valid.any(dim=1)
        self._accumulate(torch.cat([jaccard[counted].sum(0), counted.sum().double().reshape(1)]))

    def compute(self) -> dict[str, float]:
        images = float(self.state[-1])
        if images == 0:
            return {"mIoU": float("nan")}
        return {"mIoU": 100.0 * float((self.state[:-1] / images).max())}
