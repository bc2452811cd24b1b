"""Face landmarks inside a given box, from dlib's shape predictors in
``face_recognition_models`` (no download: the files ship in that wheel).

- the 5-point predictor (eye corners + nose base) is what dlib's face-chip alignment
  for its 128-d ResNet expects;
- the 68-point predictor (iBUG 300-W layout) gives the InsightFace 5 keypoints that
  ArcFace's ``norm_crop`` aligns on.

A shape predictor always returns points, whatever is in the box: "cannot be
embedded" is therefore decided from the box (see :func:`deid.identity.base.embeddable`),
not from the predictor.
"""

from __future__ import annotations

import threading

import numpy as np

from ..errors import ModelWeightsError

# 0-based indices in the iBUG 300-W 68-point layout (Sagonas et al., 300 Faces in-the-Wild,
# 2013). Points 36-41 outline the eye seen on the image's left (the subject's right eye),
# 42-47 the other eye; 30 is the nose tip; 48 and 54 are the mouth corners on the image's
# left and right. Together they give InsightFace's 5-point order
# (image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner).
IBUG68_LEFT_EYE = tuple(range(36, 42))
IBUG68_RIGHT_EYE = tuple(range(42, 48))
IBUG68_NOSE_TIP = 30
IBUG68_MOUTH_LEFT = 48
IBUG68_MOUTH_RIGHT = 54


def model_file(name: str) -> str:
    """Path of a dlib model file shipped in ``face_recognition_models``:
    ``resnet`` (128-d face descriptor), ``sp5``, ``sp68`` (shape predictors), ``cnn`` (MMOD)."""
    try:
        import face_recognition_models as frm
    except ImportError as e:  # pragma: no cover - part of the pinned install
        raise ModelWeightsError(
            f"face_recognition_models is not installed ({e}); dlib identity needs it: "
            "pip install face_recognition_models==0.3.0"
        ) from None
    getters = {
        "resnet": frm.face_recognition_model_location,
        "sp5": frm.pose_predictor_five_point_model_location,
        "sp68": frm.pose_predictor_model_location,
        "cnn": frm.cnn_face_detector_model_location,
    }
    return getters[name]()


def load_shape_predictor(path: str):
    import dlib

    try:
        return dlib.shape_predictor(path)
    except RuntimeError as e:
        raise ModelWeightsError(
            f"{path}: cannot load dlib shape predictor ({e}); reinstall face_recognition_models"
        ) from None


def dlib_rect(box: np.ndarray):
    """dlib.rectangle of an xyxy float box (dlib rectangles are integer and inclusive)."""
    import dlib

    x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
    return dlib.rectangle(x1, y1, max(x1, x2 - 1), max(y1, y2 - 1))


def shape_to_array(shape) -> np.ndarray:
    """(P, 2) float32 points of a dlib ``full_object_detection``."""
    return np.asarray([(p.x, p.y) for p in shape.parts()], np.float32).reshape(-1, 2)


def five_from_68(pts68: np.ndarray) -> np.ndarray:
    """InsightFace's 5 keypoints (5, 2) from 68 iBUG points (68, 2): eye centres are the
    mean of each eye's six outline points."""
    p = np.asarray(pts68, np.float32)
    if p.shape != (68, 2):
        raise ValueError(f"five_from_68 needs (68, 2) points, got {p.shape}")
    return np.stack(
        [
            p[list(IBUG68_LEFT_EYE)].mean(axis=0),
            p[list(IBUG68_RIGHT_EYE)].mean(axis=0),
            p[IBUG68_NOSE_TIP],
            p[IBUG68_MOUTH_LEFT],
            p[IBUG68_MOUTH_RIGHT],
        ]
    ).astype(np.float32)


class Landmarks68:
    """68-point landmarks in given boxes (thread-safe; dlib objects are not)."""

    def __init__(self, path: str = ""):
        self.path = path or model_file("sp68")
        self._sp = load_shape_predictor(self.path)
        self._lock = threading.Lock()

    def __call__(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        with self._lock:
            return shape_to_array(self._sp(frame, dlib_rect(box)))

    def five(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        return five_from_68(self(frame, box))
