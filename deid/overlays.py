"""Finding burnt-in text: regions to review for ``anonymize.fixed_regions``.

Cameras, endoscopy towers and ultrasound machines write names, IDs, dates and clocks
into the picture, always at the same place. deid does not search for text while it
de-identifies (there is no text model in the packages it ships with); it fills the boxes
``anonymize.fixed_regions`` names on every frame. This module proposes those boxes for
a person to review (``deid overlays VIDEO...``):

1. sample frames evenly over the video (sparse reads);
2. find letters in each with OpenCV's stroke-width transform (``cv2.text.detectTextSWT``
   from opencv-contrib: a classical detector, no model file; both polarities; frames
   under 480 lines are enlarged first, as small letters are missed, and frames over
   1080 lines reduced, as its time grows with the pixels);
3. keep the pixels inside a letter in at least half of the frames: a banner or a clock
   stays at the same place while the picture changes (a clock's changing digits still
   fill the same cells); letters found by chance in a moving scene do not stay put;
4. join them into lines (a horizontal closing of about a letter and a half, a double
   space) and keep the lines at least twice as wide as tall, grown by a margin.

Text in a room filmed by a still camera (a name on a door, a whiteboard) stays put too
and is proposed as well, which is what a reviewer wants to see. Small or low-contrast
letters can be missed in part, so the boxes are proposals with a picture to check
(``--sheet``), never applied on their own. ``tests/test_overlays.py``: no proposal on the
shared clips (the pancake clip, both talking heads: no text); on a moving synthetic
scene with a name banner and a running clock drawn on it, both proposed and nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

__all__ = ["Overlay", "find_overlays", "text_regions", "merge_fractions", "draw_overlays"]


@dataclass(frozen=True)
class Overlay:
    """One proposed region: ``box`` in pixels of the upright frame (x0, y0, x1, y1), with
    a margin; ``fraction`` the same box as fractions of the frame, rounded outwards (what
    ``anonymize.fixed_regions`` takes); ``frames`` in how many of the sampled frames its
    letters were found (the most for any of its pixels)."""

    box: tuple[int, int, int, int]
    fraction: tuple[float, float, float, float]
    frames: int


def swt_available() -> bool:
    """Does this OpenCV have the stroke-width-transform text detector (contrib ``text``)?"""
    return hasattr(getattr(cv2, "text", None), "detectTextSWT")


def text_votes(frames: Sequence[np.ndarray], min_px: int = 4, channels: Sequence[int] = (0, 2)) -> np.ndarray:
    """(H, W) int: in how many of ``frames`` each pixel lies in a letter box found by
    OpenCV's stroke-width-transform text detector (``cv2.text.detectTextSWT``, from
    opencv-contrib, no model file; light-on-dark and dark-on-light) on the grey picture
    and on each of the BGR ``channels`` alone, letters under ``min_px`` tall left out."""
    if not swt_available():
        from .errors import ConfigError

        raise ConfigError("this OpenCV has no cv2.text.detectTextSWT (its contrib modules are missing): install "
                          "opencv-contrib-python, which mediapipe brings, instead of opencv-python")
    h, w = frames[0].shape[:2]
    # small frames have small letters, which SWT misses: enlarge them (up to 3x) to 480
    # lines; large ones hold large letters, and SWT's time grows with the pixels: 1080
    scale = min(3.0, 480.0 / h) if h < 480 else (1080.0 / h if h > 1080 else 1.0)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    votes = np.zeros((h, w), np.int32)
    for f in frames:
        bgr = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR)
        if scale != 1.0:
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        hit = np.zeros((h, w), bool)
        # the grey picture, and the red and blue channels on their own: coloured letters
        # (a yellow clock over green) can have almost the brightness of what is under them
        views = [bgr] + [cv2.merge([bgr[:, :, c]] * 3) for c in channels]
        for view in views:
            for dark in (False, True):
                rects = cv2.text.detectTextSWT(view, dark)[0]
                for x, y, bw, bh in np.asarray(rects, np.float64).reshape(-1, 4):
                    if bh >= min_px * scale:  # back to the frame's pixels, rounded outwards
                        x0, y0 = max(0, int(np.floor(x / scale))), max(0, int(np.floor(y / scale)))
                        hit[y0:int(np.ceil((y + bh) / scale)), x0:int(np.ceil((x + bw) / scale))] = True
        votes += hit
    return votes


def _lines(mask: np.ndarray, max_height: float) -> list[tuple[int, int, int, int]]:
    """Letters into lines: close ``mask`` horizontally by about 1.5 letters' height (the
    gap of a double space); keep the boxes 4 px tall or more, no taller than
    ``max_height`` of the frame and at least twice as wide as tall."""
    h, w = mask.shape
    m = mask.astype(np.uint8)
    n, _, st, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return []
    k = int(np.clip(np.median(st[1:, 3]), 2, max(2, h * max_height)))  # about a letter's height
    joined = cv2.morphologyEx(m, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (3 * k + 1, 1)))
    n2, _, st2, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    out = []
    for i in range(1, n2):
        x, y, bw, bh, _ = (int(v) for v in st2[i])
        if 4 <= bh <= max_height * h and bw >= 2 * bh:
            out.append((x, y, x + bw, y + bh))
    return out


def _fraction(box: tuple[int, int, int, int], width: int, height: int) -> tuple[float, float, float, float]:
    """Pixels -> fractions rounded outwards to 3 decimals (the region never shrinks)."""
    x0, y0, x1, y1 = box
    return (float(np.floor(x0 / width * 1000) / 1000), float(np.floor(y0 / height * 1000) / 1000),
            float(min(1.0, np.ceil(x1 / width * 1000) / 1000)), float(min(1.0, np.ceil(y1 / height * 1000) / 1000)))


def find_overlays(
    path: str | os.PathLike,
    samples: int = 24,
    share: float = 0.5,
    max_height: float = 0.15,
    margin: float = 0.4,
) -> tuple[list[Overlay], np.ndarray]:
    """Proposed text regions of the video at ``path`` and one of its frames (for a
    picture): ``samples`` frames spread over the video, the pixels inside a letter in at
    least ``share`` of them (:func:`text_votes`), joined into lines no taller than
    ``max_height`` of the frame; each box grown by ``margin`` of its height on every side
    (anti-aliasing, outlines, a longer name on another day)."""
    from .audit import sample_indices
    from .io import probe, read_frames

    info = probe(path)
    n = max(1, int(info.frame_count))
    idx = sample_indices(n, samples)
    frames = read_frames(path, idx)
    if not frames:
        return [], np.zeros((max(info.height, 1), max(info.width, 1), 3), np.uint8)
    return text_regions(frames, share, max_height, margin), frames[len(frames) // 2]


def text_regions(frames: Sequence[np.ndarray], share: float = 0.5, max_height: float = 0.15, margin: float = 0.4,
                 channels: Sequence[int] = (0, 2)) -> list[Overlay]:
    """The lines of text that stay at the same place in at least ``share`` of ``frames``
    (see :func:`find_overlays`; ``channels``: as :func:`text_votes`)."""
    if not len(frames):
        return []
    h, w = frames[0].shape[:2]
    votes = text_votes(frames, channels=channels)
    found = []
    for x0, y0, x1, y1 in _lines(votes >= max(1.0, share * len(frames)), max_height):
        pad = int(np.ceil(margin * (y1 - y0)))
        box = (max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad))
        found.append(Overlay(box, _fraction(box, w, h), int(votes[y0:y1, x0:x1].max())))
    found.sort(key=lambda o: (o.box[1], o.box[0]))
    return found


def merge_fractions(regions: Sequence[Sequence[float]]) -> list[tuple[float, float, float, float]]:
    """Regions (fractions) with overlapping ones merged into their union box, e.g. the
    same banner proposed for several videos of one device."""
    boxes = [tuple(float(v) for v in r) for r in regions]
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes, key=lambda b: (b[1], b[0]))


def draw_overlays(frame: np.ndarray, overlays: Sequence[Overlay], path: str | os.PathLike) -> Path:
    """Write ``frame`` (RGB) with the proposed boxes drawn and numbered, for review."""
    img = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR)
    for i, o in enumerate(overlays, 1):
        x0, y0, x1, y1 = o.box
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 255), 2)
        cv2.putText(img, str(i), (x0 + 2, min(img.shape[0] - 2, y1 + 14)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1, cv2.LINE_AA)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"cannot encode {p}")
    # an original frame (faces in clear) for its owner's review only: created 0600, never
    # readable by others even for a moment, and renamed into place when complete
    tmp = p.with_name(f".{p.name}.{os.getpid()}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(png.tobytes())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p
