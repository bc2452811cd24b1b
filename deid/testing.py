"""Synthetic videos and fake backends, so most tests need no model and no real media.

The synthetic clip draws a person: a body (torso, arms) and a face — a flat, saturated
"skin" ellipse (``FACE_RGB``) with eyes and a mouth — moving along a path. The fakes are
*real* algorithms on that clip, not canned answers:

- :class:`ColorFaceDetector` finds the face by its colour (so it also works on the
  decoded, lossy output of the pipeline, and a blurred or masked face is no longer found);
- :class:`ColorPoseEstimator` places nose/eyes/shoulders from the drawn geometry colours;
- :class:`PatchIdentityEncoder` embeds a face as a normalised colour/texture descriptor
  of its box, so an untouched face matches itself and an anonymized one does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .types import Detections, Keypoints

FACE_RGB = (250, 40, 210)  # saturated magenta: never produced by blur of a normal background
EYE_RGB = (20, 20, 20)
SHIRT_RGB = (40, 200, 60)
BG_RGB = (70, 110, 160)


@dataclass(frozen=True)
class SyntheticClip:
    path: Path
    boxes: list[np.ndarray | None]  # ground-truth face box per frame (None when hidden / absent)
    width: int
    height: int
    fps: float


def face_center(i: int, n: int, width: int, height: int) -> tuple[float, float]:
    t = i / max(1, n - 1)
    cx = width * (0.3 + 0.4 * t)
    cy = height * (0.35 + 0.05 * math.sin(2 * math.pi * t * 2))
    return cx, cy


def draw_frame(
    i: int,
    n: int,
    width: int,
    height: int,
    face_size: float = 0.22,
    draw_face: bool = True,
    face_color: tuple[int, int, int] = FACE_RGB,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One synthetic frame (RGB) and its ground-truth face box."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BG_RGB
    # mild texture so the encoder has something to do
    yy, xx = np.mgrid[0:height, 0:width]
    img[..., 2] = np.clip(BG_RGB[2] + 20 * np.sin(xx / 7.0 + i / 5.0), 0, 255).astype(np.uint8)
    cx, cy = face_center(i, n, width, height)
    fw = face_size * min(width, height)
    fh = fw * 1.25
    # body: torso + arms
    sw = fw * 1.8
    top = cy + fh * 0.6
    cv2.rectangle(img, (int(cx - sw / 2), int(top)), (int(cx + sw / 2), int(min(height - 1, top + fh * 2.2))), SHIRT_RGB, -1)
    wave = math.sin(i / 3.0)
    for side in (-1, 1):
        sx, sy = cx + side * sw / 2, top + fh * 0.2
        ex, ey = sx + side * fw * 0.9, sy + fh * (0.6 + 0.4 * wave * side)
        cv2.line(img, (int(sx), int(sy)), (int(ex), int(ey)), SHIRT_RGB, max(2, int(fw * 0.2)))
    box = None
    if draw_face:
        cv2.ellipse(img, (int(cx), int(cy)), (int(fw / 2), int(fh / 2)), 0, 0, 360, face_color, -1)
        for side in (-1, 1):
            cv2.circle(img, (int(cx + side * fw * 0.2), int(cy - fh * 0.1)), max(1, int(fw * 0.07)), EYE_RGB, -1)
        cv2.ellipse(img, (int(cx), int(cy + fh * 0.22)), (max(1, int(fw * 0.18)), max(1, int(fh * 0.05))), 0, 0, 360, EYE_RGB, -1)
        box = np.array([cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2], np.float32)
    return img, box


def make_synthetic_video(
    path: str | Path,
    n_frames: int = 40,
    width: int = 160,
    height: int = 120,
    fps: float = 25.0,
    hidden: Sequence[int] = (),
    no_person: Sequence[int] = (),
    with_audio: bool = False,
    metadata: dict[str, str] | None = None,
    rotation: int = 0,
    crf: int = 12,
) -> SyntheticClip:
    """Write a synthetic clip with PyAV. ``hidden`` frames show the person with the face
    drawn in a colour the colour detector ignores (a *missed* face); ``no_person`` frames
    show only background. ``metadata`` tags and ``rotation`` simulate phone videos."""
    import av

    path = Path(path)
    hidden, no_person = set(hidden), set(no_person)
    boxes: list[np.ndarray | None] = []
    with av.open(str(path), "w") as out:
        for k, v in (metadata or {}).items():
            out.metadata[k] = v
        s = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": str(crf), "preset": "ultrafast"}
        if rotation:
            s.metadata["rotate"] = str(rotation)
        a = None
        if with_audio:
            a = out.add_stream("aac", rate=16000)
            a.layout = "mono"
        for i in range(n_frames):
            if i in no_person:
                img = np.empty((height, width, 3), np.uint8)
                img[:] = BG_RGB
                box = None
            else:
                img, box = draw_frame(i, n_frames, width, height, face_color=(200, 150, 120) if i in hidden else FACE_RGB)
                if i in hidden:
                    box = box  # still a face, just one the detector misses
            boxes.append(box)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
        if a is not None:
            n_samples = int(16000 * n_frames / fps)
            t = np.arange(n_samples) / 16000.0
            pcm = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            frame_size = a.codec_context.frame_size or 1024
            for k in range(0, n_samples, frame_size):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, k : k + frame_size]), format="flt", layout="mono")
                af.sample_rate = 16000
                af.pts = k
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode():
                out.mux(p)
    return SyntheticClip(path, boxes, width, height, fps)


# ----------------------------------------------------------------------------- fakes


def face_color_mask(frame: np.ndarray, color: tuple[int, int, int] = FACE_RGB, tol: int = 60) -> np.ndarray:
    d = np.abs(frame.astype(np.int16) - np.asarray(color, np.int16)).sum(axis=2)
    return (d < tol).astype(np.uint8)


class ColorFaceDetector:
    """Finds synthetic faces by their colour (connected components of FACE_RGB pixels)."""

    name = "color"

    def __init__(self, min_area: int = 20, tol: int = 60, **_: object):
        self.min_area = min_area
        self.tol = tol
        self.calls = 0

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        for f in frames:
            self.calls += 1
            m = face_color_mask(f, tol=self.tol)
            n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
            boxes, scores = [], []
            for k in range(1, n):
                x, y, w, h, a = stats[k]
                if a >= self.min_area:
                    boxes.append([x, y, x + w, y + h])
                    scores.append(min(1.0, a / (w * h + 1e-6)))
            out.append(Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32)))
        return out


class ColorPoseEstimator:
    """Places head keypoints above the synthetic torso (shirt colour), COCO-17 prefix of
    the wholebody133 layout; used to exercise the pose fallback without a model."""

    name = "color_pose"

    def __init__(self, num_keypoints: int = 133, **_: object):
        self.K = num_keypoints
        self.calls = 0

    def reset(self) -> None:
        pass

    def estimate(self, frames: Sequence[np.ndarray]) -> list[Keypoints]:
        out = []
        for f in frames:
            self.calls += 1
            m = face_color_mask(f, SHIRT_RGB, tol=60)
            ys, xs = np.nonzero(m)
            if len(xs) < 30:
                out.append(Keypoints.empty(self.K))
                continue
            top = float(np.percentile(ys, 2))
            left, right = float(np.percentile(xs, 10)), float(np.percentile(xs, 90))
            cx = (left + right) / 2
            sw = (right - left) * 0.8
            kp = np.zeros((1, self.K, 3), np.float32)
            kp[0, 5] = (cx + sw / 2, top, 0.9)  # left shoulder (image right)
            kp[0, 6] = (cx - sw / 2, top, 0.9)
            kp[0, 0] = (cx, top - sw * 0.45, 0.9)  # nose
            kp[0, 1] = (cx + sw * 0.12, top - sw * 0.52, 0.9)
            kp[0, 2] = (cx - sw * 0.12, top - sw * 0.52, 0.9)
            out.append(Keypoints(kp))
        return out


class PatchIdentityEncoder:
    """Embeds a face box as a normalised 8x8 grey thumbnail + mean colour (dim 67).
    The same untouched face matches itself (distance ~0); a blurred / masked face does not."""

    name = "patch"
    dim = 67
    threshold = 0.6

    def __init__(self, **_: object):
        pass

    def embed(self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for f, bs in zip(frames, boxes):
            bs = np.asarray(bs, np.float32).reshape(-1, 4)
            rows = []
            for b in bs:
                x1, y1, x2, y2 = [int(round(v)) for v in b]
                x1, y1 = max(0, x1), max(0, y1)
                x2, y2 = min(f.shape[1], x2), min(f.shape[0], y2)
                if x2 - x1 < 4 or y2 - y1 < 4:
                    rows.append(np.full(self.dim, np.nan, np.float32))
                    continue
                patch = f[y1:y2, x1:x2]
                g = cv2.resize(cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY), (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32)
                g = (g - g.mean()) / (g.std() + 8.0)
                col = patch.reshape(-1, 3).mean(axis=0) / 64.0
                v = np.concatenate([g.ravel() / 4.0, col]).astype(np.float32)
                rows.append(v)
            out.append(np.asarray(rows, np.float32).reshape(-1, self.dim))
        return out

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float32).reshape(-1, self.dim)
        b = np.asarray(b, np.float32).reshape(-1, self.dim)
        return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)


class ColorPresence:
    """Person present when enough shirt-coloured pixels are visible."""

    name = "color_presence"

    def __init__(self, min_pixels: int = 30):
        self.min_pixels = min_pixels

    def present(self, frames: Sequence[np.ndarray]) -> list[bool]:
        return [int(face_color_mask(f, SHIRT_RGB, tol=60).sum()) >= self.min_pixels for f in frames]


class NoopAnonymizer:
    """Leaves frames untouched — for testing that the leak audit catches a leak."""

    name = "noop"

    def apply(self, frame: np.ndarray, faces) -> np.ndarray:
        return frame.copy()


def fake_components(cfg, methods: Sequence[str], **over):
    """Pipeline components built from the fakes above (no model files, no mediapipe)."""
    from .anonymize import build_anonymizer
    from .pipeline import Components

    anons = {m: build_anonymizer(m, cfg) for m in methods if m in ("blur", "pixelate", "mask")}
    anons.update(over.pop("anonymizers", {}))
    return Components(
        cfg,
        detector=over.pop("detector", ColorFaceDetector()),
        pose=over.pop("pose", ColorPoseEstimator()),
        presence=over.pop("presence", None),
        anonymizers=anons,
        identity=over.pop("identity", PatchIdentityEncoder()),
        more_people=over.pop("more_people", None),
    )


ONNX_IR_VERSION = 8  # readable by OpenCV 4.x's ONNX importer and by onnxruntime
ONNX_OPSET = 13


def save_onnx(model, path: str | Path) -> Path:
    """Check and write a tiny ONNX model that a test built with a real model's input/output
    signature (``onnx.helper.make_model(graph, opset_imports=[make_opsetid("", ONNX_OPSET)])``),
    at an IR version every loader here reads."""
    import onnx

    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path

