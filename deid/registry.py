"""Named backends. Entries can be registered lazily as ``"module:attr"`` strings so that
importing :mod:`deid` never imports heavy or optional packages (mediapipe, dlib,
onnxruntime, torch) until a backend is actually built."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., T] | str] = {}
        self._test_doubles: set[str] = set()

    def register(self, name: str, factory: Callable[..., T] | str | None = None, *, test_double: bool = False):
        """``reg.register("x", factory)``, ``reg.register("x", "pkg.mod:Class")`` or as a decorator.
        ``test_double``: a stand-in for tests (:mod:`deid.testing`), left out of the names
        offered to users and warned about when a configuration uses it."""
        if test_double:
            self._test_doubles.add(name)
        if factory is not None:
            self._entries[name] = factory
            return factory

        def deco(f: Callable[..., T]) -> Callable[..., T]:
            self._entries[name] = f
            return f

        return deco

    def names(self) -> list[str]:
        """The backends a user may choose (test doubles left out)."""
        return sorted(n for n in self._entries if n not in self._test_doubles)

    def is_test_double(self, name: str) -> bool:
        return name in self._test_doubles

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Callable[..., T]:
        try:
            entry = self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None
        if isinstance(entry, str):
            mod, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(mod), attr)
            self._entries[name] = entry
        return entry

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)


DETECTORS: Registry[Any] = Registry("face detector")
POSE_ESTIMATORS: Registry[Any] = Registry("pose estimator")
IDENTITY_ENCODERS: Registry[Any] = Registry("identity encoder")
ANONYMIZERS: Registry[Any] = Registry("anonymizer")

# Built-in backends (lazy: nothing heavy is imported here).
DETECTORS.register("mediapipe", "deid.detect.mediapipe_backend:MediapipeFaceDetector")
DETECTORS.register("dlib_hog", "deid.detect.dlib_backend:DlibHogDetector")
DETECTORS.register("dlib_cnn", "deid.detect.dlib_backend:DlibCnnDetector")
DETECTORS.register("scrfd", "deid.detect.scrfd_backend:ScrfdDetector")
DETECTORS.register("centerface", "deid.detect.centerface_backend:CenterFaceDetector")

ANONYMIZERS.register("blur", "deid.anonymize.blur:BlurAnonymizer")
ANONYMIZERS.register("pixelate", "deid.anonymize.pixelate:PixelateAnonymizer")
ANONYMIZERS.register("mask", "deid.anonymize.mask:MaskAnonymizer")
ANONYMIZERS.register("swap", "deid.anonymize.swap:SwapAnonymizer")

POSE_ESTIMATORS.register("mediapipe_holistic", "deid.pose.mediapipe_backend:MediapipeHolisticEstimator")
POSE_ESTIMATORS.register("mediapipe_pose", "deid.pose.mediapipe_backend:MediapipePoseEstimator")
POSE_ESTIMATORS.register("openpose", "deid.pose.openpose_backend:OpenPoseEstimator")
POSE_ESTIMATORS.register("rtmpose", "deid.pose.rtmpose_backend:RTMPoseEstimator")

IDENTITY_ENCODERS.register("dlib", "deid.identity.dlib_backend:DlibIdentityEncoder")
IDENTITY_ENCODERS.register("arcface", "deid.identity.arcface_backend:ArcFaceIdentityEncoder")

# Test doubles (deid.testing): real algorithms on synthetic clips, no model files.
DETECTORS.register("color", "deid.testing:ColorFaceDetector", test_double=True)
POSE_ESTIMATORS.register("color_pose", "deid.testing:ColorPoseEstimator", test_double=True)
IDENTITY_ENCODERS.register("patch", "deid.testing:PatchIdentityEncoder", test_double=True)
