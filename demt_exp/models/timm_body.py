"""Building a backbone's timm body by our short variant name, never from a hub (random init)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm
from torch import nn


def create_timm_body(variants: Mapping[str, str], variant: str, family: str, **kwargs: Any) -> nn.Module:
    """timm model for `variant` (e.g. "swin_t" -> swin_tiny_patch4_window7_224), pretrained=False."""
    if variant not in variants:
        raise ValueError(f"unknown {family} variant {variant!r}; expected one of {sorted(variants)}")
    return timm.create_model(variants[variant], pretrained=False, **kwargs)
