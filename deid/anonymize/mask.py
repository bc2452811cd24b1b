"""Solid mask: the region is filled with one colour (the paper's "masking" baseline)."""

from __future__ import annotations

import numpy as np

from ..config import MaskConfig
from .base import RegionAnonymizer


class MaskAnonymizer(RegionAnonymizer):
    name = "mask"

    def __init__(self, cfg: MaskConfig | None = None, **kw):
        cfg = cfg or MaskConfig(**kw)
        self.color = np.asarray(cfg.color, np.uint8)
        self.shape = cfg.shape
        self.feather = 0.0

    def _render(self, patch: np.ndarray, full: tuple[int, int] | None = None) -> np.ndarray:
        out = np.empty_like(patch)
        out[:] = self.color
        return out
