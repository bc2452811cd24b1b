"""Training batches: random transform, random warp and colour augmentation.

Facts from the deepfakes/Faceswap training recipe (values, not code):
- a random similarity per sample (rotation +-10 deg, zoom +-5 %, shift +-5 %, horizontal
  flip half the time) applied to input *and* target, so the model sees more poses than
  the clip holds;
- a random *warp* of the input only — a coarse 5 x 5 grid of control points moved by
  Gaussian noise, interpolated to a smooth displacement field. The target is the
  unwarped face, so the autoencoder cannot just copy pixels: it has to learn what a
  face looks like, which is what makes decoding another person's code work;
- colour jitter in LAB (lightness +-30 % contrast, a/b shifts +-8) on input and target
  alike, so the decoder learns to follow the input's lighting (conversion then sees
  the patient's lighting through the shared code and colour matching has less to do).
"""

from __future__ import annotations

import cv2
import numpy as np

ROTATION_DEG = 10.0
ZOOM = 0.05
SHIFT = 0.05
FLIP_P = 0.5
WARP_GRID = 5
WARP_SIGMA = 0.025  # control point noise, fraction of the crop side
LIGHTNESS = 0.30
AB_SHIFT = 8.0


def random_similarity(rng: np.random.Generator, size: int) -> tuple[np.ndarray, bool]:
    """A 2 x 3 random similarity about the crop centre, and whether to flip."""
    ang = rng.uniform(-ROTATION_DEG, ROTATION_DEG)
    scale = 1.0 + rng.uniform(-ZOOM, ZOOM)
    m = cv2.getRotationMatrix2D((size / 2.0, size / 2.0), ang, scale)
    m[:, 2] += rng.uniform(-SHIFT, SHIFT, 2) * size
    return m.astype(np.float32), bool(rng.random() < FLIP_P)


def warp_field(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random (map_x, map_y) for ``cv2.remap``: a 5x5 grid of Gaussian offsets
    (interior points only; the border stays put) upsampled bicubically."""
    g = WARP_GRID
    off = rng.normal(0.0, WARP_SIGMA * size, (2, g, g)).astype(np.float32)
    off[:, [0, -1], :] = 0.0
    off[:, :, [0, -1]] = 0.0
    dx = cv2.resize(off[0], (size, size), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(off[1], (size, size), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs + dx, ys + dy


def colour_jitter(rng: np.random.Generator) -> tuple[float, float, float]:
    """(lightness gain, a shift, b shift)."""
    return 1.0 + rng.uniform(-LIGHTNESS, LIGHTNESS), rng.uniform(-AB_SHIFT, AB_SHIFT), rng.uniform(-AB_SHIFT, AB_SHIFT)


def apply_colour(img: np.ndarray, jitter: tuple[float, float, float]) -> np.ndarray:
    """Jitter a uint8 RGB image in LAB: L is stretched about its mean, a/b shifted."""
    gain, da, db = jitter
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
    lm = float(lab[..., 0].mean())
    lab[..., 0] = (lab[..., 0] - lm) * gain + lm
    lab[..., 1] += da
    lab[..., 2] += db
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def make_batch(
    crops: np.ndarray,
    masks: np.ndarray,
    idx: np.ndarray,
    rng: np.random.Generator,
    *,
    warp: bool = True,
    colour: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, masks) as float32 NCHW in [0, 1] / N1HW for faces ``idx``."""
    size = crops.shape[1]
    n = len(idx)
    xin = np.empty((n, size, size, 3), np.uint8)
    tgt = np.empty((n, size, size, 3), np.uint8)
    msk = np.empty((n, size, size), np.float32)
    for k, i in enumerate(idx):
        m, flip = random_similarity(rng, size)
        img = cv2.warpAffine(crops[i], m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mk = cv2.warpAffine(masks[i], m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        if flip:
            img, mk = img[:, ::-1], mk[:, ::-1]
        if colour:
            img = apply_colour(np.ascontiguousarray(img), colour_jitter(rng))
        tgt[k] = img
        msk[k] = mk
        if warp:
            mx, my = warp_field(rng, size)
            xin[k] = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        else:
            xin[k] = img
    to_t = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0  # noqa: E731
    return to_t(xin), to_t(tgt), msk[:, None]


def grid_image(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile equally sized uint8 RGB images (rows of columns) into one image."""
    if not rows or not rows[0]:
        return np.zeros((1, 1, 3), np.uint8)
    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            out[y : y + h, x : x + w] = img
    return out
