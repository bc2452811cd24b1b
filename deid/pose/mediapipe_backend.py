"""MediaPipe pose backends (the default; model files ship inside the ``mediapipe`` wheel).

- :class:`MediapipeHolisticEstimator` — ``mp.solutions.holistic``: BlazePose body (33
  points) + face mesh (468) + both hands (21 each), one person per frame. Everything the
  paper's evaluation compares (body, face, hands) from one graph.
- :class:`MediapipePoseEstimator` — ``mp.solutions.pose``: body + feet only, about twice
  as fast; the face tracker's fallback uses it to place a head box from nose/eyes/ears
  when the face detector misses.

Both report on wholebody133 (:mod:`deid.pose.schema`) in pixels of the input frame.

Mapping notes (checked on real frames, see tests/test_pose_mediapipe.py):

- BlazePose's 33 points -> COCO-17 by name; feet: ``heel`` -> heel and ``foot_index`` (the
  tip of the foot) -> big toe; the small toes have no BlazePose counterpart (score 0).
- Holistic's ``left_hand_landmarks`` is the *person's* left hand: its wrist sits on pose
  point 15 (left_wrist), not 16 (measured on the pancake clip: every left hand found was
  within 17 px of pose point 15 and >= 57 px from point 16).
- MediaPipe's hand order (wrist, thumb CMC/MCP/IP/tip, index MCP/PIP/DIP/tip, ...) is
  COCO-WholeBody's hand order (wrist, thumb1..4, forefinger1..4, ...), so hands map 1:1.
- Face: 68 of the 468 mesh vertices stand in for the iBUG-68 points (:data:`MESH_TO_IBUG68`).
- Scores: body points carry BlazePose's ``visibility``; face and hand points carry the
  sub-model's presence (1.0 when the face / hand was found): the legacy solutions API
  leaves per-point visibility/presence of face and hand landmarks at 0.

Model complexity: only ``model_complexity=1`` works offline (the 0 and 2 models are
downloaded on first use by MediaPipe, which this project never allows).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import ConfigError
from ..types import Keypoints
from .base import check_extra_kwargs, check_frames, empty, finalize
from .schema import NUM_KEYPOINTS

__all__ = ["MediapipeHolisticEstimator", "MediapipePoseEstimator", "BLAZEPOSE_TO_WHOLEBODY", "MESH_TO_IBUG68"]

# BlazePose landmark index -> wholebody133 index (-1: no counterpart). BlazePose names:
# https://ai.google.dev/edge/mediapipe/solutions/vision/pose_landmarker (0 nose, 2 left_eye,
# 5 right_eye, 7/8 ears, 11..16 arms, 23..28 legs, 29/30 heels, 31/32 foot_index).
_BLAZE = {
    0: 0, 2: 1, 5: 2, 7: 3, 8: 4,
    11: 5, 12: 6, 13: 7, 14: 8, 15: 9, 16: 10,
    23: 11, 24: 12, 25: 13, 26: 14, 27: 15, 28: 16,
    31: 17, 29: 19,  # left foot_index -> left_big_toe, left_heel -> left_heel
    32: 20, 30: 22,  # right foot_index -> right_big_toe, right_heel -> right_heel
}
BLAZEPOSE_TO_WHOLEBODY = np.array([_BLAZE.get(i, -1) for i in range(33)], np.int64)

# Face mesh vertex (or mean of two) for each iBUG-68 point, in iBUG order (0-16 jaw from
# the person's right ear to the left, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 lips).
# Base: the correspondence circulated with LatentSync 1.5 and many face-mesh tools
# (162, 234, 93, ...); jaw ends, outer brow ends and jaw points 3/4/12/13 from
# PeizhiYan/Mediapipe_2_Dlib_Landmarks (127/356, 70/300, averaged pairs). Each choice was
# kept where it agreed better with dlib's 68-point predictor (trained on iBUG 300-W, the
# set COCO-WholeBody's face points follow) on 16 faces from ../shared/media: mean error
# 0.052 of the inter-ocular distance (0.060 with the base mapping alone; the jaw ends moved
# from 0.24 to 0.10 and 0.06). Both ends are mirror-symmetric on the mesh.
MESH_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (149,), (148,), (152,),  # jaw 0-8
    (377,), (378,), (365,), (397, 288), (361, 288), (323,), (454,), (356,),  # jaw 9-16
    (70,), (63,), (105,), (66,), (107,),  # right brow 17-21
    (336,), (296,), (334,), (293,), (300,),  # left brow 22-26
    (168,), (197,), (5,), (4,),  # nose bridge 27-30
    (75,), (97,), (2,), (326,), (305,),  # nose base 31-35
    (33,), (160,), (158,), (133,), (153,), (144,),  # right eye 36-41
    (362,), (385,), (387,), (263,), (373,), (380,),  # left eye 42-47
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (405,), (314,), (17,), (84,), (181,),  # outer lips 48-59
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),  # inner lips 60-67
)
assert len(MESH_TO_IBUG68) == 68

# (68, 468) averaging matrix: ibug_xy = M @ mesh_xy
_MESH_AVG = np.zeros((68, 468), np.float32)
for _k, _ix in enumerate(MESH_TO_IBUG68):
    _MESH_AVG[_k, list(_ix)] = 1.0 / len(_ix)

_FACE0, _LHAND0, _RHAND0 = 23, 91, 112


def _landmarks_xy(lms, w: int, h: int, n: int | None = None) -> np.ndarray:
    """(N, 2) pixel coordinates of a NormalizedLandmarkList."""
    pts = lms.landmark if n is None else lms.landmark[:n]
    return np.array([(p.x * w, p.y * h) for p in pts], np.float32)


def _pose_points(pose_lms, w: int, h: int) -> np.ndarray:
    """BlazePose landmarks -> (133, 3) with visibility as the score."""
    arr = np.array([(p.x * w, p.y * h, p.visibility) for p in pose_lms.landmark], np.float32)
    out = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    keep = BLAZEPOSE_TO_WHOLEBODY >= 0
    out[BLAZEPOSE_TO_WHOLEBODY[keep]] = arr[: len(BLAZEPOSE_TO_WHOLEBODY)][keep]
    return out


def _downscale(frame: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the longer side is ``max_side`` (0 = never). Landmarks are normalised to
    the image, so multiplying them by the *original* size maps them back exactly."""
    h, w = frame.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return np.ascontiguousarray(frame)
    s = max_side / float(max(h, w))
    return cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _check_complexity(model_complexity: int) -> None:
    if model_complexity != 1:
        raise ConfigError(
            f"mediapipe pose model_complexity={model_complexity} is not available offline: only the "
            "complexity-1 model ships inside the mediapipe wheel (0 and 2 are downloaded on first use). "
            "Use model_complexity=1."
        )


_met_a_person = False


def _meet_a_person_once() -> None:
    """Run a throwaway pose graph once per process on a picture of a person (matplotlib's
    sample portrait), with the caller silencing fd 2: MediaPipe's landmark projection logs
    a one-time warning ("Using NORM_RECT without IMAGE_DIMENSIONS ...") the first time a
    person's landmarks are projected, which would otherwise land in the middle of a run's
    progress output. The real graphs never see this picture. No picture: nothing done."""
    global _met_a_person
    if _met_a_person:
        return
    _met_a_person = True
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        img = cv2.imread(str(path))
        if img is None:
            return
        import mediapipe as mp

        with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as g:
            g.process(np.ascontiguousarray(_downscale(img[:, :, ::-1], 256)))
    except Exception:  # noqa: BLE001 - cosmetic: a warning line, never a reason to fail
        return


class _MediapipeBase:
    """Graph lifecycle shared by both estimators: build lazily, rebuild on reset()."""

    name = "mediapipe"

    def __init__(self, static: bool, model_complexity: int, min_detection_confidence: float, min_tracking_confidence: float,
                 smooth_landmarks: bool, max_side: int, keep_outside: bool):
        _check_complexity(model_complexity)
        self.model_complexity = int(model_complexity)
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.smooth_landmarks = bool(smooth_landmarks)
        self.static = bool(static)
        self.max_side = int(max_side)
        self.keep_outside = bool(keep_outside)
        self._graph = None
        self._lock = threading.Lock()  # a MediaPipe graph is not re-entrant
        self._graph = self._build_quietly()

    def _build_quietly(self):
        """Build the graph and run it once on a blank image with native start-up logging
        silenced (TFLite/absl print to fd 2 on first use)."""
        from .._quiet import native_stderr_silenced

        with native_stderr_silenced():
            _meet_a_person_once()
            g = self._build()
            g.process(np.zeros((64, 64, 3), np.uint8))
        return g

    def _build(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def _one(self, frame: np.ndarray) -> Keypoints:  # pragma: no cover - overridden
        raise NotImplementedError

    def estimate(self, frames: Sequence[np.ndarray]) -> list[Keypoints]:
        frames = check_frames(frames, type(self).__name__)
        with self._lock:
            if self._graph is None:
                self._graph = self._build_quietly()
            return [self._one(f) for f in frames]

    def reset(self) -> None:
        """Forget the tracking state: the next frame is treated as the first of a video."""
        with self._lock:
            self._close_graph()
            self._graph = self._build_quietly()

    def _close_graph(self) -> None:
        if self._graph is not None:
            try:
                self._graph.close()
            except Exception:  # noqa: BLE001 - closing twice / at interpreter exit is harmless
                pass
            self._graph = None

    def close(self) -> None:
        with self._lock:
            self._close_graph()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MediapipeHolisticEstimator(_MediapipeBase):
    """Body + face + hands of one person per frame (mp.solutions.holistic).

    ``static=False`` (video mode) tracks across calls: feed one video's frames in order
    and call :meth:`reset` between videos. ``static=True`` treats every frame as an
    unrelated image (slower: the person detector runs each time).
    ``max_side`` > 0 downscales before inference (coordinates come back in input pixels).
    """

    name = "mediapipe_holistic"

    def __init__(
        self,
        static: bool = False,
        model_complexity: int = 1,
        refine_face_landmarks: bool = False,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        smooth_landmarks: bool = True,
        max_side: int = 0,
        keep_outside: bool = False,
        **kwargs: object,
    ):
        check_extra_kwargs(kwargs, type(self).__name__)
        self.refine_face_landmarks = bool(refine_face_landmarks)
        super().__init__(static, model_complexity, min_detection_confidence, min_tracking_confidence, smooth_landmarks, max_side,
                         keep_outside)

    def _build(self):
        import mediapipe as mp  # heavy; imported when an estimator is built

        return mp.solutions.holistic.Holistic(
            static_image_mode=self.static,
            model_complexity=self.model_complexity,
            smooth_landmarks=self.smooth_landmarks,
            refine_face_landmarks=self.refine_face_landmarks,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )

    def _one(self, frame: np.ndarray) -> Keypoints:
        h, w = frame.shape[:2]
        res = self._graph.process(_downscale(frame, self.max_side))
        if res.pose_landmarks is None:
            return empty()
        kp = _pose_points(res.pose_landmarks, w, h)
        if res.face_landmarks is not None:
            mesh = _landmarks_xy(res.face_landmarks, w, h, 468)
            kp[_FACE0 : _FACE0 + 68, :2] = _MESH_AVG @ mesh
            kp[_FACE0 : _FACE0 + 68, 2] = 1.0
        for lms, base in ((res.left_hand_landmarks, _LHAND0), (res.right_hand_landmarks, _RHAND0)):
            if lms is not None:
                kp[base : base + 21, :2] = _landmarks_xy(lms, w, h, 21)
                kp[base : base + 21, 2] = 1.0
        return finalize(kp[None], w, h, self.keep_outside)


class MediapipePoseEstimator(_MediapipeBase):
    """Body + feet of one person per frame (mp.solutions.pose); same output schema, face
    and hands left at score 0. Lighter than holistic; used for head placement."""

    name = "mediapipe_pose"

    def __init__(
        self,
        static: bool = False,
        model_complexity: int = 1,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        smooth_landmarks: bool = True,
        max_side: int = 0,
        keep_outside: bool = False,
        **kwargs: object,
    ):
        check_extra_kwargs(kwargs, type(self).__name__)
        super().__init__(static, model_complexity, min_detection_confidence, min_tracking_confidence, smooth_landmarks, max_side,
                         keep_outside)

    def _build(self):
        import mediapipe as mp

        return mp.solutions.pose.Pose(
            static_image_mode=self.static,
            model_complexity=self.model_complexity,
            smooth_landmarks=self.smooth_landmarks,
            enable_segmentation=False,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )

    def _one(self, frame: np.ndarray) -> Keypoints:
        h, w = frame.shape[:2]
        res = self._graph.process(_downscale(frame, self.max_side))
        if res.pose_landmarks is None:
            return empty()
        return finalize(_pose_points(res.pose_landmarks, w, h)[None], w, h, self.keep_outside)
