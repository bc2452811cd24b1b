"""Conversion: aligned patient faces -> the donor's decoder -> back into the frame.

Per face: the aligned crop goes through the shared encoder and the *donor's* decoder
(one batched forward pass for all faces of a frame); the result is sharpened (unsharp
mask, optional), colour-matched to the face it replaces and pasted back with the inverse of the alignment, under a soft
mask, either alpha-blended (feather) or with Poisson blending (``cv2.seamlessClone``,
Perez, Gangnet and Blake, SIGGRAPH 2003).

Colour matching is Reinhard et al.'s transfer (IEEE CG&A 2001) in OpenCV's 8-bit LAB:
each channel of the generated face is shifted and scaled to the mean and standard
deviation of the original face's skin under the same mask, so lighting and white
balance follow the scene even where the decoder drew the donor's complexion.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from .align import Alignment, crop_footprint, hull_mask, unwarp, warp

#: per-channel std ratio limits for colour transfer (a flat region must not blow up noise)
STD_RATIO = (0.5, 2.0)
#: unsharp-mask radius (crop pixels) for ``sharpen``
SHARPEN_SIGMA = 1.0


def unsharp(img: np.ndarray, amount: float, sigma: float = SHARPEN_SIGMA) -> np.ndarray:
    """Unsharp mask: ``img + amount x (img - blur(img))``, uint8.

    Why: a decoder trained for minutes draws a soft face; restoring edge contrast at the
    crop's scale makes it read as a face (eyes, nostrils, lips) rather than a smudge and
    moves it further from the patient for a recogniser (on the demo clip, amount 0.7 /
    1.5 raised the smallest dlib distance to the patient's references from 0.67 to
    0.71 / 0.73)."""
    if amount <= 0:
        return img
    f = img.astype(np.float32)
    out = f * (1.0 + amount) - cv2.GaussianBlur(f, (0, 0), sigma) * amount
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def colour_transfer_lab(src: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``src`` (uint8 RGB) with the LAB mean/std of ``ref`` (same size) inside ``mask``
    (float weights in [0, 1]; the whole image when None)."""
    if src.shape != ref.shape:
        raise ValueError(f"colour_transfer_lab: src {src.shape} and ref {ref.shape} differ")
    s = cv2.cvtColor(src, cv2.COLOR_RGB2LAB).astype(np.float32)
    r = cv2.cvtColor(ref, cv2.COLOR_RGB2LAB).astype(np.float32)
    sel = np.ones(src.shape[:2], bool) if mask is None else np.asarray(mask) > 0.5
    if sel.sum() < 16:
        return src.copy()
    ss, rr = s[sel], r[sel]
    ms, sd_s = ss.mean(0), ss.std(0) + 1e-3
    mr, sd_r = rr.mean(0), rr.std(0) + 1e-3
    ratio = np.clip(sd_r / sd_s, *STD_RATIO)
    out = (s - ms) * ratio + mr
    return cv2.cvtColor(np.clip(out + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def paste(dst: np.ndarray, crop: np.ndarray, mask: np.ndarray, matrix: np.ndarray, blend: str = "feather") -> tuple[int, int, int, int] | None:
    """Paste a generated ``crop`` (S x S RGB) into ``dst`` (edited in place) through the
    inverse of ``matrix`` (frame -> crop), weighted by ``mask`` (S x S float in [0, 1]).
    Returns the frame rectangle touched, or None when the face lies outside the frame."""
    h, w = dst.shape[:2]
    size = crop.shape[0]
    rect = crop_footprint(matrix, size, w, h)
    if rect is None:
        return None
    x1, y1, x2, y2 = rect
    # one warp for face and mask together (RGBA, 8 bits: 256 alpha levels are plenty)
    rgba = np.dstack([crop, np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8)])
    warped = unwarp(rgba, matrix, rect)
    face = warped[:, :, :3]
    alpha = warped[:, :, 3].astype(np.float32) * (1.0 / 255.0)
    roi = dst[y1:y2, x1:x2]
    if blend == "seamless":
        m8 = (alpha > 0.5).astype(np.uint8) * 255
        ys, xs = np.nonzero(m8)
        if len(xs) > 16:
            try:
                # seamlessClone centres the mask's bounding box on ``p``
                bx1, bx2, by1, by2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
                p = (int(x1 + (bx1 + bx2) // 2), int(y1 + (by1 + by2) // 2))
                cloned = cv2.seamlessClone(np.ascontiguousarray(face), dst, m8, p, cv2.NORMAL_CLONE)
                a = alpha[:, :, None]
                dst[y1:y2, x1:x2] = np.clip(cloned[y1:y2, x1:x2] * a + roi * (1 - a) + 0.5, 0, 255).astype(np.uint8)
                return rect
            except cv2.error:
                pass  # mask touching the frame edge: fall back to feathering
    a = alpha[:, :, None]
    dst[y1:y2, x1:x2] = np.clip(face.astype(np.float32) * a + roi.astype(np.float32) * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
    return rect


class Converter:
    """The model side of conversion: batches aligned crops through the donor decoder.

    ``mask``: ``"hull"`` (landmark hull, default: exact and available from the first
    training step) or ``"learned"`` (hull x the decoder's mask output, which also learns
    to leave out occluders such as a hand over the mouth)."""

    def __init__(
        self,
        model: Any,
        *,
        device: Any = "cpu",
        side: str = "donor",
        colour: str = "lab",
        blend: str = "feather",
        mask: str = "hull",
        sharpen: float = 0.0,
        threads: int = 1,
    ):
        import torch

        self.threads = int(threads)  # CPU: one face a call is too small to share; see train.ThreadTuner
        self.model = model.eval()
        self.device = torch.device(device)
        self.side = side
        self.size = int(model.spec.size)
        self.colour = colour
        self.blend = blend
        self.mask_mode = mask
        self.sharpen = float(sharpen)

    def generate(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, S, S, 3) uint8 aligned faces -> (N, S, S, 3) uint8 generated faces and the
        decoder's (N, S, S) mask (None without a mask head). One forward pass."""
        import torch

        if len(crops) == 0:
            return np.zeros((0, self.size, self.size, 3), np.uint8), None
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(crops).transpose(0, 3, 1, 2))).to(self.device).float().div_(255.0)
        prev = torch.get_num_threads()
        if self.device.type == "cpu" and self.threads > 0:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                rgb, m = self.model(x, self.side)
        finally:
            torch.set_num_threads(prev)
        out = (rgb.clamp(0, 1).mul(255.0).add(0.5)).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return out, (None if m is None else m[:, 0].float().cpu().numpy())

    def convert(self, frame: np.ndarray, dst: np.ndarray, alignments: Sequence[Alignment]) -> list[tuple[int, int, int, int] | None]:
        """Swap every face in ``alignments`` (all ``ok``) from ``frame`` into ``dst``
        (edited in place). Returns the rectangle each face touched (None: outside)."""
        if not alignments:
            return []
        crops = np.stack([warp(frame, a.matrix, self.size) for a in alignments])
        gen, learned = self.generate(crops)
        rects = []
        for k, a in enumerate(alignments):
            m = hull_mask(a.crop_landmarks, self.size)
            if self.mask_mode == "learned" and learned is not None:
                m = m * np.clip(learned[k], 0.0, 1.0)
            face = unsharp(gen[k], self.sharpen)
            if self.colour == "lab":
                face = colour_transfer_lab(face, crops[k], m)
            rects.append(paste(dst, face, m, a.matrix, self.blend))
        return rects
