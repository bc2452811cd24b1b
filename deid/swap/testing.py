"""Test doubles for the swap, in the spirit of :mod:`deid.testing` (real algorithms on
synthetic material, no model files):

- :class:`SyntheticLandmarker`: 68 landmarks placed from the geometry
  :func:`deid.testing.draw_frame` draws (face ellipse, eyes, mouth) inside a face box,
  with the eye centres refined on the drawn eye blobs;
- :class:`StillPatientEncoder`: an identity encoder that says every face is the
  patient (distance 0), to prove that the gate falls back to the mask;
- :func:`write_synthetic_donor`: a folder of PNG frames of a differently drawn face, a
  donor for tests.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..testing import EYE_RGB, draw_frame, face_color_mask


def _ellipse(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def synthetic_landmarks(box: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG-ordered points for a synthetic face filling ``box`` (draw_frame's layout:
    eyes at +-0.2 w, -0.1 h from the centre; mouth at +0.22 h, 0.18 w wide)."""
    x1, y1, x2, y2 = [float(v) for v in box[:4]]
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    jaw = _ellipse(cx, cy, w / 2, h / 2, math.pi, 0.0, 17)  # image-left, down round the chin, image-right
    brow_l = np.stack([np.linspace(cx - 0.32 * w, cx - 0.08 * w, 5), np.full(5, cy - 0.22 * h)], 1)
    brow_r = np.stack([np.linspace(cx + 0.08 * w, cx + 0.32 * w, 5), np.full(5, cy - 0.22 * h)], 1)
    bridge = np.stack([np.full(4, cx), np.linspace(cy - 0.08 * h, cy + 0.08 * h, 4)], 1)
    nostrils = np.stack([np.linspace(cx - 0.08 * w, cx + 0.08 * w, 5), np.full(5, cy + 0.11 * h)], 1)
    eye_l = _ellipse(cx - 0.2 * w, cy - 0.1 * h, 0.07 * w, 0.04 * h, math.pi, -math.pi, 7)[:6]
    eye_r = _ellipse(cx + 0.2 * w, cy - 0.1 * h, 0.07 * w, 0.04 * h, math.pi, -math.pi, 7)[:6]
    mouth_o = _ellipse(cx, cy + 0.22 * h, 0.18 * w, 0.05 * h, math.pi, -math.pi, 13)[:12]
    mouth_i = _ellipse(cx, cy + 0.22 * h, 0.12 * w, 0.025 * h, math.pi, -math.pi, 9)[:8]
    pts = np.concatenate([jaw, brow_l, brow_r, bridge, nostrils, eye_l, eye_r, mouth_o, mouth_i]).astype(np.float32)
    assert pts.shape == (68, 2)
    return pts


class SyntheticLandmarker:
    """Landmarks for synthetic faces: the layout above in the box, shifted so the eye
    centres sit on the dark eye blobs actually found in the image (when found)."""

    def __call__(self, frame: np.ndarray, boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        h, w = frame.shape[:2]
        for b in boxes:
            pts = synthetic_landmarks(np.asarray(b, np.float32))
            x1, y1 = max(0, int(b[0])), max(0, int(b[1]))
            x2, y2 = min(w, int(math.ceil(b[2]))), min(h, int(math.ceil(b[3])))
            if x2 - x1 > 4 and y2 - y1 > 4:
                m = face_color_mask(frame[y1:y2, x1:x2], EYE_RGB, tol=60)
                n, _, stats, cents = cv2.connectedComponentsWithStats(m, connectivity=8)
                blobs = [cents[k] + (x1, y1) for k in range(1, n) if stats[k][4] >= 2]
                if len(blobs) >= 2:
                    eyes_now = np.stack([pts[36:42].mean(0), pts[42:48].mean(0)])
                    found = sorted(blobs, key=lambda c: min(np.linalg.norm(c - e) for e in eyes_now))[:2]
                    found = sorted(found, key=lambda c: c[0])
                    shift = (np.mean(found, 0) - eyes_now.mean(0)).astype(np.float32)
                    if np.linalg.norm(shift) < 0.2 * (b[2] - b[0]):
                        pts = pts + shift
            out.append(pts.astype(np.float32))
        return out


class StillPatientEncoder:
    """Identity encoder that finds every face to be the patient (distance 0)."""

    name = "still_patient"
    dim = 4
    threshold = 0.6

    def __init__(self, **_: object):
        self.calls = 0

    def embed(self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        return [np.zeros((len(np.asarray(b).reshape(-1, 4)), self.dim), np.float32) for b in boxes]

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.zeros((len(np.asarray(a).reshape(-1, self.dim)), len(np.asarray(b).reshape(-1, self.dim))), np.float32)


def write_synthetic_donor(folder: str | Path, n: int = 24, width: int = 160, height: int = 120) -> Path:
    """PNG frames of a synthetic face drawn larger than the patient clip's (a different
    "person" for the swap); returns the folder."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, _ = draw_frame(i, n, width, height, face_size=0.3)
        cv2.imwrite(str(d / f"donor_{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return d


def synthetic_train_data(folder: str | Path, size: int = 32, n_patient: int = 24, n_donor: int = 16):
    """TrainData extracted from a synthetic patient clip and a synthetic donor folder."""
    from ..testing import ColorFaceDetector, make_synthetic_video
    from .faceset import extract_faceset
    from .train import TrainData

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    clip = make_synthetic_video(d / "patient.mp4", n_frames=n_patient, width=320, height=240)
    donor = write_synthetic_donor(d / "donor", n=n_donor, width=320, height=240)
    kw = dict(detector=ColorFaceDetector(), landmarker=SyntheticLandmarker())
    return TrainData(extract_faceset([clip.path], size, **kw).faceset, extract_faceset([donor], size, **kw).faceset)


def train_tiny_model(folder: str | Path, steps: int = 5, references: np.ndarray | None = None) -> Path:
    """A model folder (model.pt, references.npy, session.json) of the tiny preset trained
    ``steps`` steps on synthetic faces — what the anonymizer tests convert with."""
    import json

    from ..config import SwapConfig
    from .train import fit

    d = Path(folder)
    data = synthetic_train_data(d / "data")
    fit(data, SwapConfig(preset="tiny", max_steps=steps, max_minutes=0), d, device="cpu")
    if references is not None:
        np.save(d / "references.npy", np.asarray(references, np.float32))
    (d / "session.json").write_text(json.dumps({"single_person": True, "donor": "synthetic", "preset": "tiny"}))
    return d
