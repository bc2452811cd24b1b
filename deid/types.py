"""Small value objects shared by every layer.

Conventions (checked in ``__post_init__``):
- frames: RGB ``uint8`` (H, W, 3), upright (rotation metadata already applied);
- boxes: ``float32`` xyxy in pixels of that upright frame;
- keypoints: ``float32`` (P, K, 3) = x, y, score; score 0 means "not found";
- 5-point face landmarks: ``float32`` (5, 2) in the order image-left eye, image-right eye,
  nose tip, image-left mouth corner, image-right mouth corner (InsightFace's order);
  NaN where a backend does not give that point.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np


def _as_f32(name: str, a: Any, shape_tail: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float32)
    if arr.ndim != 1 + len(shape_tail) or tuple(arr.shape[1:]) != shape_tail:
        want = "(N, " + ", ".join(map(str, shape_tail)) + ")"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    return arr


def check_frame(frame: np.ndarray, what: str = "frame") -> np.ndarray:
    """Raise a helpful error unless ``frame`` is an RGB uint8 (H, W, 3) array."""
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{what} must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
    return frame


@dataclass(frozen=True)
class VideoInfo:
    """What ``deid.io.probe`` learns about a video. Sizes are of the *upright* frame."""

    path: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    rotation: int = 0  # degrees the stored frames are turned clockwise to be upright
    codec: str = ""
    has_audio: bool = False
    is_vfr: bool = False
    pix_fmt: str = ""
    frame_count_exact: bool = True  # False when estimated from duration x fps
    time_base: str = ""  # the video stream's time base, e.g. "1/12800" (timestamps' unit)
    start_time: float = 0.0  # seconds: the first shown frame's timestamp (audio kept beside the video is shifted by it)
    other_video_streams: int = 0  # moving-picture video streams besides the one de-identified (never written)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"{self.path}: bad frame size {self.width}x{self.height}")
        if not (self.fps > 0):
            raise ValueError(f"{self.path}: bad frame rate {self.fps}")
        if self.rotation not in (0, 90, 180, 270):
            raise ValueError(f"{self.path}: rotation must be 0/90/180/270, got {self.rotation}")

    @property
    def start_pts(self) -> int | None:
        """The first shown frame's timestamp in the stream's time base (None without one)."""
        if not self.time_base:
            return None
        return int(round(Fraction(self.start_time) / Fraction(self.time_base)))

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True, eq=False)
class Detections:
    """Faces found in one frame by one detector."""

    boxes: np.ndarray  # (N, 4) float32 xyxy
    scores: np.ndarray  # (N,) float32
    landmarks: np.ndarray | None = None  # (N, 5, 2) float32, NaN where unknown

    def __post_init__(self) -> None:
        b = _as_f32("boxes", self.boxes if len(self.boxes) else np.zeros((0, 4)), (4,))
        s = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(s) != len(b):
            raise ValueError(f"{len(b)} boxes but {len(s)} scores")
        keep = np.isfinite(b).all(axis=1)
        if not keep.all():  # a box at NaN or infinity places nothing: no face there (the frame's
            # person, if any, then has no region and fails closed), not a crash when drawn
            b, s = b[keep], s[keep]
            if self.landmarks is not None:
                object.__setattr__(self, "landmarks", np.asarray(self.landmarks, dtype=np.float32)[keep])
        if len(b) and np.any(b[:, 2:] < b[:, :2]):
            raise ValueError("boxes must be xyxy with x2 >= x1 and y2 >= y1")
        object.__setattr__(self, "boxes", b)
        object.__setattr__(self, "scores", s)
        if self.landmarks is not None:
            lm = np.asarray(self.landmarks, dtype=np.float32)
            if lm.shape != (len(b), 5, 2):
                raise ValueError(f"landmarks must have shape ({len(b)}, 5, 2), got {lm.shape}")
            object.__setattr__(self, "landmarks", lm)

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), None)

    def filter(self, keep: np.ndarray) -> "Detections":
        keep = np.asarray(keep)
        lm = None if self.landmarks is None else self.landmarks[keep]
        return Detections(self.boxes[keep], self.scores[keep], lm)


class BoxSource(str, enum.Enum):
    """Where a face region came from; lower assurance further down the list."""

    DETECTED = "detected"  # the face detector fired in this frame
    INTERPOLATED = "interpolated"  # between two detections of the same track
    HELD = "held"  # carried a few frames before/after a track's detections
    POSE = "pose"  # placed from body keypoints (nose/eyes/ears/shoulders)


class FrameDecision(str, enum.Enum):
    """What the coverage step decided for a frame."""

    OK = "ok"  # every person present has a face region (or no person present)
    FAIL_CLOSED = "fail_closed"  # a person is present but no head could be placed


@dataclass(frozen=True, eq=False)
class FaceRegion:
    """One region to anonymize in one frame: a padded head box plus its provenance."""

    box: np.ndarray  # (4,) float32 xyxy, padded to cover the head, clipped to the frame
    track_id: int = -1
    source: BoxSource = BoxSource.DETECTED
    score: float = 1.0
    landmarks: np.ndarray | None = None  # (5, 2) float32 (see module doc) or None
    face_box: np.ndarray | None = None  # (4,) the unpadded face box, when known
    full_box: np.ndarray | None = None  # (4,) the padded box before clipping, when it reaches past the frame edge

    def __post_init__(self) -> None:
        b = np.asarray(self.box, dtype=np.float32).reshape(-1)
        if b.shape != (4,):
            raise ValueError(f"box must have 4 numbers, got {b.shape}")
        object.__setattr__(self, "box", b)
        if self.face_box is not None:
            object.__setattr__(self, "face_box", np.asarray(self.face_box, np.float32).reshape(4))
        if self.landmarks is not None:
            object.__setattr__(self, "landmarks", np.asarray(self.landmarks, np.float32).reshape(5, 2))
        object.__setattr__(self, "source", BoxSource(self.source))

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


@dataclass(frozen=True, eq=False)
class FramePlan:
    """Everything the render step needs for one frame (the "box-track file" row)."""

    index: int
    faces: tuple[FaceRegion, ...] = ()
    decision: FrameDecision = FrameDecision.OK
    person_present: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "faces", tuple(self.faces))
        object.__setattr__(self, "decision", FrameDecision(self.decision))


@dataclass(frozen=True, eq=False)
class Keypoints:
    """Pose of every person in one frame, on a named keypoint schema."""

    data: np.ndarray  # (P, K, 3) float32: x, y, score
    schema: str = "wholebody133"

    def __post_init__(self) -> None:
        d = np.asarray(self.data, dtype=np.float32)
        if d.ndim != 3 or d.shape[2] != 3:
            raise ValueError(f"keypoints must have shape (P, K, 3), got {d.shape}")
        object.__setattr__(self, "data", d)

    @property
    def num_persons(self) -> int:
        return int(self.data.shape[0])

    @property
    def num_keypoints(self) -> int:
        return int(self.data.shape[1])

    @classmethod
    def empty(cls, num_keypoints: int, schema: str = "wholebody133") -> "Keypoints":
        return cls(np.zeros((0, num_keypoints, 3), np.float32), schema)


@dataclass
class Timings:
    """Accumulates seconds per named stage. ``elapsed()``: wall seconds since it was made,
    plus ``carried`` (work done elsewhere first, e.g. a video's segments on other workers)."""

    seconds: dict[str, float] = field(default_factory=dict)
    carried: float = 0.0
    started: float = field(default_factory=time.perf_counter, repr=False, compare=False)

    def elapsed(self) -> float:
        return self.carried + time.perf_counter() - self.started

    def add(self, stage: str, dt: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + float(dt)
