"""Face detectors behind the :class:`deid.protocols.FaceDetector` protocol.

Backends (registered in :mod:`deid.registry`):
- ``mediapipe`` (default): BlazeFace short-range + full-range models, merged (recall first);
- ``dlib_hog``: dlib's HOG + linear SVM frontal detector;
- ``dlib_cnn``: dlib's MMOD CNN detector shipped in ``face_recognition_models``;
- ``scrfd``: a user-supplied SCRFD ONNX through insightface's model zoo (optional).
"""

from .base import build_detector, nms, resize_for_detection

__all__ = ["build_detector", "nms", "resize_for_detection"]
