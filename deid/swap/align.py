"""Face alignment for the swap: landmarks -> similarity transform -> fixed-size crop, and back.

Why these choices
-----------------
- **Landmarks: dlib's 68-point predictor** (``shape_predictor_68_face_landmarks.dat`` in
  ``face_recognition_models``), run inside the tracker's face box. It is offline, about
  2.5 ms a face on one CPU core, deterministic, thread-safe behind a lock, and it is
  the model the identity module already loads; its jaw line and eyebrows give the
  convex hull the blend mask is made from. MediaPipe's face mesh (468 points) was the
  other candidate: more robust on profiles but ~4x slower per face, a graph that is
  not re-entrant, and far more points than a similarity transform needs. On the demo
  clip, sp68 points found in MediaPipe's box and in dlib's own HOG box differ by 0.9 %
  of the inter-ocular distance, so the project's default detector can feed it.
- **Template: InsightFace's 5-point ArcFace template** (the 112 x 112 reference points
  of ``insightface.utils.face_align``, MIT; image-left eye, image-right eye, nose tip,
  mouth corners — the project's 5-point order). The crop is that template's frame
  widened to cover eyebrows to chin (:data:`CROP_CENTER`, :data:`CROP_SIDE`), so the
  swapped area is the whole inner face, as in Faceswap's "face" centring.
- **Similarity, not affine**: rotation + uniform scale + shift keeps the face's shape
  (an affine fit would squash a turned head into the template and the decoder would
  learn the squash).  Umeyama's least-squares fit (Umeyama, IEEE TPAMI 1991), with the
  mouth corners down-weighted so a smile does not make the crop "breathe".
- **Transforms are kept** (``M`` maps frame -> crop); conversion pastes the generated
  crop back with the inverse, and ``warp`` then ``unwarp`` recovers the crop region.
- **Temporal smoothing** of the landmarks with a One-Euro filter (Casiez, Roussel and
  Vogel, CHI 2012): heavy smoothing while the head is still (no jitter), little while it
  moves (no lag).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Protocol, Sequence

import cv2
import numpy as np

from ..types import check_frame

#: InsightFace ArcFace 5-point template for a 112 x 112 crop (insightface/utils/face_align.py).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float32,
)
#: the swap crop, in ArcFace-112 pixels: centred lower than ArcFace's (the mouth-chin
#: half of a face is longer than the forehead half we keep) and 1.2x as wide, so the
#: crop holds eyebrows, cheeks, jaw and chin with a little margin for the random warp.
CROP_CENTER = (56.0, 68.0)
CROP_SIDE = 134.0
#: bump when the template or crop geometry changes: cached donor face sets and donor
#: pre-trainings carry it in their file names, so stale ones are not reused
ALIGN_VERSION = "a1"
#: weights of the 5 points in the fit: eyes and nose are rigid, mouth corners move with speech
FIT_WEIGHTS = np.array([1.0, 1.0, 1.0, 0.5, 0.5], np.float32)

#: a face smaller than this (inter-ocular distance in frame pixels) is not swapped:
#: a 64 px crop from fewer pixels than that is interpolation noise (falls back to mask)
MIN_EYE_DISTANCE = 8.0
#: the fit must explain the landmarks: RMS residual in crop pixels, as a fraction of the crop
MAX_FIT_RESIDUAL = 0.08

# iBUG 300-W 68-point layout (0-based): jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67
JAW = slice(0, 17)
BROWS = slice(17, 27)
LEFT_EYE = slice(36, 42)  # the eye on the image's left
RIGHT_EYE = slice(42, 48)
NOSE_TIP = 30
MOUTH_LEFT, MOUTH_RIGHT = 48, 54


def template(size: int) -> np.ndarray:
    """The 5 template points (5, 2) for a ``size`` x ``size`` swap crop."""
    c = np.asarray(CROP_CENTER, np.float32)
    return ((ARCFACE_112 - c) / CROP_SIDE + 0.5) * float(size)


def five_points(pts68: np.ndarray) -> np.ndarray:
    """InsightFace's 5 points from 68 iBUG points: eye outline centres, nose tip, mouth corners."""
    p = np.asarray(pts68, np.float32)
    if p.shape != (68, 2):
        raise ValueError(f"five_points needs (68, 2) landmarks, got {p.shape}")
    return np.stack([p[LEFT_EYE].mean(0), p[RIGHT_EYE].mean(0), p[NOSE_TIP], p[MOUTH_LEFT], p[MOUTH_RIGHT]]).astype(np.float32)


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """2 x 3 similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``
    in the weighted least-squares sense (Umeyama 1991, with per-point weights).
    Reflections are excluded, so a mirrored point set is fitted as well as a rotation can."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"umeyama needs two (N>=2, 2) point sets of the same shape, got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    w = w / w.sum()
    mu_s, mu_d = (w[:, None] * src).sum(0), (w[:, None] * dst).sum(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = (w[:, None, None] * d0[:, :, None] * s0[:, None, :]).sum(0)  # dst x src^T
    var_s = float((w * (s0**2).sum(1)).sum())
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    r = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / var_s) if var_s > 0 else 0.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]]).astype(np.float32)


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2 x 3 affine to (N, 2) points."""
    p = np.asarray(pts, np.float32).reshape(-1, 2)
    return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64)).astype(np.float32)


def matrix_scale(m: np.ndarray) -> float:
    """Uniform scale of a similarity (crop pixels per frame pixel)."""
    return float(math.sqrt(abs(np.linalg.det(np.asarray(m, np.float64)[:, :2]))))


@dataclass(frozen=True, eq=False)
class Alignment:
    """One face's alignment: ``matrix`` maps frame pixels to crop pixels of a ``size``
    crop; ``landmarks`` are the 68 points in the frame; ``ok`` is False (with ``why``)
    when the swap must not be attempted (the caller masks the face instead)."""

    matrix: np.ndarray  # (2, 3) float32, frame -> crop
    landmarks: np.ndarray  # (68, 2) float32, frame pixels
    size: int
    ok: bool = True
    why: str = ""

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, np.float32)
        if m.shape != (2, 3):
            raise ValueError(f"alignment matrix must be (2, 3), got {m.shape}")
        object.__setattr__(self, "matrix", m)
        lm = np.asarray(self.landmarks, np.float32)
        if lm.shape != (68, 2):
            raise ValueError(f"alignment landmarks must be (68, 2), got {lm.shape}")
        object.__setattr__(self, "landmarks", lm)

    @property
    def crop_landmarks(self) -> np.ndarray:
        return transform_points(self.matrix, self.landmarks)


def align(pts68: np.ndarray, size: int) -> Alignment:
    """Fit the crop transform to 68 landmarks and check that it is usable."""
    pts = np.asarray(pts68, np.float32)
    bad = Alignment(np.eye(2, 3, dtype=np.float32), np.zeros((68, 2), np.float32), size, False, "")
    if pts.shape != (68, 2) or not np.all(np.isfinite(pts)):
        return Alignment(bad.matrix, bad.landmarks, size, False, "no landmarks")
    five = five_points(pts)
    iod = float(np.linalg.norm(five[1] - five[0]))
    if iod < MIN_EYE_DISTANCE:
        # one wording whatever the size: the reason is a key of the audit record's
        # swap_failed_reasons (the measured size made one key per tenth of a pixel)
        return Alignment(bad.matrix, pts, size, False, f"face too small (eye distance under {MIN_EYE_DISTANCE:g} px)")
    m = umeyama(five, template(size), FIT_WEIGHTS)
    if not np.all(np.isfinite(m)) or matrix_scale(m) <= 1e-6:
        return Alignment(bad.matrix, pts, size, False, "degenerate warp")
    resid = transform_points(m, five) - template(size)
    rms = float(np.sqrt((FIT_WEIGHTS[:, None] * resid**2).sum() / FIT_WEIGHTS.sum()))
    if rms > MAX_FIT_RESIDUAL * size:
        return Alignment(m, pts, size, False, f"landmarks do not fit a face (residual over {MAX_FIT_RESIDUAL:g} of the crop)")
    return Alignment(m, pts, size, True, "")


def warp(frame: np.ndarray, m: np.ndarray, size: int, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``frame`` under ``m`` (frame -> crop)."""
    return cv2.warpAffine(frame, np.asarray(m, np.float32), (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def crop_footprint(m: np.ndarray, size: int, width: int, height: int, pad: int = 2) -> tuple[int, int, int, int] | None:
    """Integer frame rectangle x1, y1, x2, y2 covering the crop's area (clipped), or None."""
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float32)
    fc = transform_points(invert(m), corners)
    x1 = max(0, int(np.floor(fc[:, 0].min())) - pad)
    y1 = max(0, int(np.floor(fc[:, 1].min())) - pad)
    x2 = min(width, int(np.ceil(fc[:, 0].max())) + pad)
    y2 = min(height, int(np.ceil(fc[:, 1].max())) + pad)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return x1, y1, x2, y2


def unwarp(crop: np.ndarray, m: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """Paste-ready: the crop mapped back into frame rectangle ``rect`` (x1, y1, x2, y2)
    with the inverse of ``m``. Works for any channel count (images and masks)."""
    x1, y1, x2, y2 = rect
    shift = np.array([[1, 0, x1], [0, 1, y1]], np.float64)
    # crop <- frame <- rect: compose m with the rect's offset, then invert while warping
    m_rect = np.asarray(m, np.float64) @ np.vstack([shift, [0, 0, 1]])
    out = cv2.warpAffine(
        crop, m_rect.astype(np.float32), (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT
    )
    if crop.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def hull_mask(crop_pts68: np.ndarray, size: int, forehead: float = 0.3, feather: float = 0.05, grow: float = 0.0) -> np.ndarray:
    """Soft face mask (size, size) float32 in [0, 1] for a crop: the convex hull of jaw
    and eyebrows, with the brows raised by ``forehead`` x the brow-to-chin height to take
    the lower forehead, feathered over ``feather`` x size inside its edge (so the
    outer rim of the hull is blended, never a hard seam)."""
    p = np.asarray(crop_pts68, np.float32).reshape(68, 2)
    brows = p[BROWS].copy()
    chin_y = float(p[8, 1])
    lift = forehead * max(1.0, chin_y - float(brows[:, 1].mean()))
    brows[:, 1] -= lift
    pts = np.concatenate([p[JAW], brows]).astype(np.float32)
    if grow:
        c = pts.mean(0)
        pts = c + (pts - c) * (1.0 + grow)
    hull = cv2.convexHull(pts).astype(np.int32)
    m = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(m, hull, 255, lineType=cv2.LINE_AA)
    k = max(1, int(round(feather * size)))
    if k > 1:
        m = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        m = cv2.GaussianBlur(m, (0, 0), k / 2.0)
    return m.astype(np.float32) / 255.0


# ----------------------------------------------------------------------------- landmarks


class Landmarker(Protocol):
    """68 iBUG landmarks for each box in a frame: a list of (68, 2) float32 arrays."""

    def __call__(self, frame: np.ndarray, boxes: Sequence[np.ndarray]) -> list[np.ndarray]: ...


class DlibLandmarker:
    """dlib's 68-point predictor in given boxes (see the module doc for why this one)."""

    def __init__(self, path: str = ""):
        from ..identity.landmarks import load_shape_predictor, model_file

        self.path = path or model_file("sp68")
        self._sp = load_shape_predictor(self.path)
        self._lock = threading.Lock()  # dlib objects are not thread-safe

    def __call__(self, frame: np.ndarray, boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        from ..identity.landmarks import dlib_rect, shape_to_array

        check_frame(frame, "DlibLandmarker frame")
        img = np.ascontiguousarray(frame)
        out = []
        with self._lock:
            for b in boxes:
                out.append(shape_to_array(self._sp(img, dlib_rect(np.asarray(b, np.float32)))))
        return out


#: landmark backends by the name ``swap.landmarks`` uses ("module:attr", imported when built)
LANDMARKERS = {
    "dlib68": "deid.swap.align:DlibLandmarker",
    "synthetic": "deid.swap.testing:SyntheticLandmarker",  # synthetic test clips (deid.testing)
}


def build_landmarker(name: str = "dlib68") -> Landmarker:
    import importlib

    from ..errors import ConfigError

    if name not in LANDMARKERS:
        raise ConfigError(f"unknown swap.landmarks {name!r}; choose one of: {', '.join(LANDMARKERS)}")
    mod, _, attr = LANDMARKERS[name].partition(":")
    return getattr(importlib.import_module(mod), attr)()


def box_from_landmarks(pts68: np.ndarray) -> np.ndarray:
    """A square box around 68 landmarks, the kind of box the predictor expects: used to
    re-find landmarks in a frame where the tracker only has a padded head box."""
    p = np.asarray(pts68, np.float32)
    x1, y1 = p.min(0)
    x2, y2 = p.max(0)
    cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)
    return np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], np.float32)


def face_box_from_head(head: np.ndarray, pad_side: float, pad_top: float, pad_bottom: float) -> np.ndarray:
    """Undo :func:`deid.track.boxes.pad_face_box`: the face box inside a padded head box."""
    h = np.asarray(head, np.float32)
    w = (h[2] - h[0]) / (1.0 + 2.0 * pad_side)
    ht = (h[3] - h[1]) / (1.0 + pad_top + pad_bottom)
    x1 = h[0] + pad_side * w
    y1 = h[1] + pad_top * ht
    return np.array([x1, y1, x1 + w, y1 + ht], np.float32)


# ----------------------------------------------------------------------------- smoothing


class OneEuro:
    """One-Euro filter over an array signal (Casiez et al., CHI 2012).

    ``min_cutoff`` (Hz) sets the smoothing when still, ``beta`` how fast the cutoff
    rises with speed; ``d_cutoff`` filters the speed estimate. The speed is measured in
    units of ``scale`` per second (the face's inter-ocular distance), so the same
    parameters work for small and large faces."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0):
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, dt: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.x is None or self.x.shape != x.shape or self.min_cutoff <= 0:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self.x) / dt / max(scale, 1e-6)
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        speed = float(np.abs(self.dx).mean())
        a = self._alpha(self.min_cutoff + self.beta * speed, dt)
        self.x = (a * x + (1 - a) * self.x).astype(np.float32)
        return self.x.copy()
