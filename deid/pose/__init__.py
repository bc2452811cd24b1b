"""Pose estimation on the project's keypoint schema (wholebody133).

- :mod:`deid.pose.schema` — the keypoint table (names, regions, OKS sigmas, skeleton);
- backends implementing :class:`deid.protocols.PoseEstimator`, all reporting on that schema:
  :class:`MediapipeHolisticEstimator` (default), :class:`MediapipePoseEstimator`,
  :class:`OpenPoseEstimator` (user-supplied CMU model via cv2.dnn),
  :class:`RTMPoseEstimator` (user-supplied ONNX via rtmlib);
- :func:`draw_skeleton` for figures.

Importing this package is cheap: MediaPipe, rtmlib and onnxruntime load when a backend
is built.
"""

from __future__ import annotations

from . import schema
from .base import finalize, keypoints_box, to_wholebody
from .draw import draw_skeleton
from .mediapipe_backend import MediapipeHolisticEstimator, MediapipePoseEstimator
from .openpose_backend import OpenPoseEstimator
from .rtmpose_backend import RTMPoseEstimator
from .schema import GROUPS, NUM_KEYPOINTS, REGIONS, SCHEMA, SCHEMA_NAME, KeypointInfo, indices, sigmas

__all__ = [
    "schema",
    "SCHEMA",
    "SCHEMA_NAME",
    "NUM_KEYPOINTS",
    "REGIONS",
    "GROUPS",
    "KeypointInfo",
    "indices",
    "sigmas",
    "MediapipeHolisticEstimator",
    "MediapipePoseEstimator",
    "OpenPoseEstimator",
    "RTMPoseEstimator",
    "draw_skeleton",
    "finalize",
    "keypoints_box",
    "to_wholebody",
]
