"""Pixelation: the region becomes ``blocks`` large squares across its longer side."""

from __future__ import annotations

import cv2
import numpy as np

from ..config import PixelateConfig
from .base import RegionAnonymizer


class PixelateAnonymizer(RegionAnonymizer):
    name = "pixelate"

    def __init__(self, cfg: PixelateConfig | None = None, **kw):
        cfg = cfg or PixelateConfig(**kw)
        self.blocks = int(cfg.blocks)
        self.shape = cfg.shape
        self.feather = 0.0

    def _render(self, patch: np.ndarray, full: tuple[int, int] | None = None) -> np.ndarray:
        h, w = patch.shape[:2]
        s = self.blocks / max(max(full) if full else 0, h, w)  # blocks across the whole region
        sw, sh = max(1, round(w * s)), max(1, round(h * s))
        small = cv2.resize(patch, (sw, sh), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
