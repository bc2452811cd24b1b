"""The models an evaluation runs, built once from ``cfg.evaluate`` (and reused across
videos in one process), and the facts about them that go into run.json and the
printed table: numbers from different pose estimators or identity models are not
comparable, so every result names the models behind it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: distributions whose version identifies each backend's model code
_POSE_DISTS = {
    "mediapipe_holistic": ("mediapipe",),
    "mediapipe_pose": ("mediapipe",),
    "openpose": ("opencv-python", "opencv-python-headless", "opencv-contrib-python"),
    "rtmpose": ("rtmlib", "onnxruntime"),
}
_IDENTITY_DISTS = {"dlib": ("dlib-bin", "dlib"), "arcface": ("insightface", "onnxruntime")}
_POSE_MODELS = {
    "mediapipe_holistic": "MediaPipe Holistic (BlazePose body + face mesh + hands), model_complexity={c}, video mode",
    "mediapipe_pose": "MediaPipe Pose (BlazePose body), model_complexity={c}, video mode",
}

_CACHE: dict[str, "EvalModels"] = {}


def _version(dists: tuple[str, ...]) -> str:
    from importlib import metadata

    out = []
    for d in dists:
        try:
            out.append(f"{d} {metadata.version(d)}")
        except metadata.PackageNotFoundError:
            continue
        if d.startswith(("opencv", "dlib")):
            break  # one of the alternatives is enough
    if not out:
        from .. import __version__

        return f"deid {__version__}"
    return ", ".join(out)


def pose_info(name: str, estimator: Any) -> dict[str, str]:
    model = _POSE_MODELS.get(name, "")
    if model:
        model = model.format(c=getattr(estimator, "model_complexity", "?"))
    else:
        path = getattr(estimator, "model_path", "") or ""
        model = os.path.basename(str(path)) if path else type(estimator).__name__
        # a top-down model's numbers depend on where its person boxes came from as much as
        # on the model: name the detector too (RTMPose on YOLOX boxes or on MediaPipe's)
        boxes = getattr(estimator, "person_boxes", "")
        if boxes == "yolox":
            model += f", person boxes: YOLOX {os.path.basename(str(getattr(estimator, 'det_model_path', '')))}"
        elif boxes == "mediapipe":
            model += ", person boxes: MediaPipe Pose (one person a frame)"
        elif boxes == "frame":
            model += ", person boxes: the whole frame"
    return {"name": name, "model": model, "version": _version(_POSE_DISTS.get(name, ()))}


def identity_info(name: str, encoder: Any, detector_name: str, upsample: int, locator_name: str) -> dict[str, Any]:
    path = getattr(encoder, "model_path", "") or ""
    model = os.path.basename(str(path)) if path else type(encoder).__name__
    if name == "dlib":
        rt = getattr(encoder, "runtime", "")
        model = f"dlib 128-d ResNet ({model}{', run on torch' if rt == 'torch' else ''})"
    det = f"{detector_name} (upsample {upsample})" if detector_name.startswith("dlib") else detector_name
    return {
        "name": name,
        "threshold": float(getattr(encoder, "threshold", 0.6)),
        "model": model,
        "version": _version(_IDENTITY_DISTS.get(name, ())),
        "dim": int(getattr(encoder, "dim", 0)),
        "detector": det,
        "locator": locator_name or "none",
    }


def build_pose_estimator(pc: Any) -> Any:
    """The evaluation's pose estimator from ``evaluate.pose`` (in process and in the Ray
    job's actors alike)."""
    from ..registry import POSE_ESTIMATORS

    return POSE_ESTIMATORS.create(pc.backend, model_path=pc.model_path, det_model_path=pc.det_model_path, min_score=pc.min_score,
                                  **({"proto_path": pc.proto_path} if pc.proto_path else {}))


@dataclass
class EvalModels:
    """The pose estimator, identity encoder, the attacker's face detector and the
    locator (second detector for the original's faces; None when it would be the same)."""

    estimator: Any
    encoder: Any
    detector: Any
    locator: Any
    pose: dict[str, str]
    identity: dict[str, Any]

    @classmethod
    def build(cls, cfg: Any, **prebuilt: Any) -> "EvalModels":
        from ..detect import build_detector
        from ..identity import build_identity_encoder

        ev = cfg.evaluate
        pc = ev.pose
        est = prebuilt.get("estimator") or build_pose_estimator(pc)
        enc = prebuilt.get("encoder") or build_identity_encoder(ev.identity)
        det_kw = {"upsample": ev.face_upsample, "max_side": 960} if ev.face_detector.startswith("dlib") else {}
        if ev.face_detector == "dlib_hog":
            det_kw["threads"] = 0  # two threads where the process may use two CPUs (same boxes)
        if ev.face_detector == "scrfd" and cfg.detect.model_path:
            det_kw["model_path"] = cfg.detect.model_path  # the user's file, as its error message says
        det = prebuilt.get("detector") or build_detector(None, name=ev.face_detector, **det_kw)
        loc_name = cfg.detect.backend if ev.locate_faces == "pipeline" else ev.locate_faces
        if "locator" in prebuilt:
            loc = prebuilt["locator"]
            loc_name = getattr(loc, "name", loc_name) if loc is not None else "none"
        elif loc_name in ("none", "", ev.face_detector):
            loc, loc_name = None, ""
        elif ev.locate_faces == "pipeline":
            loc = build_detector(cfg)
        else:
            loc = build_detector(cfg, name=loc_name)
        return cls(
            est, enc, det, loc,
            pose_info(pc.backend, est),
            identity_info(ev.identity.backend, enc, ev.face_detector, ev.face_upsample, loc_name),
        )

    @classmethod
    def cached(cls, cfg: Any) -> "EvalModels":
        """Built once per process per (evaluate, detect) configuration: evaluating many
        videos one after another (``deid anonymize --evaluate``) loads models once."""
        from ..config import config_hash

        key = config_hash(cfg, ["evaluate", "detect"])
        if key not in _CACHE:
            _CACHE[key] = cls.build(cfg)
        return _CACHE[key]
