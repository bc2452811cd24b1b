"""``deid doctor``: read-only checks of the installation — packages, the models the
configuration uses (built the way a run builds them), codecs, a tiny end-to-end run in a
temporary folder (deleted), optional user-supplied model files. Changes nothing outside
that temporary folder. ``--config`` / ``--set``: check the models a site's configuration
needs (e.g. ``detect.backend=scrfd`` with its model file) instead of the defaults."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the installation (packages, bundled models, codecs); changes nothing")
    p.add_argument("--json", action="store_true", help="one JSON object for scripts")
    from . import add_config_args

    add_config_args(p)
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


def _pipeline_models(cfg):
    """Every model a de-identification run with ``cfg`` builds (detectors, pose fallback,
    further-people search, presence, the leak audit's recogniser)."""
    from ..pipeline import Components, backends_for_tests_only

    doubles = backends_for_tests_only(cfg)
    if doubles:  # they build and run, on synthetic clips only: "all passed" would mislead
        raise RuntimeError(f"{', '.join(doubles)}: test double(s) for synthetic clips, not for real video")
    comp = Components.build(cfg, ["blur", "pixelate", "mask"])
    det = comp.detector
    names = [getattr(m, "name", type(m).__name__) for m, *_ in getattr(det, "members", [])] or [getattr(det, "name", type(det).__name__)]
    parts = [f"detectors {' + '.join(names)}"]
    if comp.pose is not None:
        parts.append(f"pose {getattr(comp.pose, 'name', type(comp.pose).__name__)}")
    if comp.more_people is not None:
        parts.append("further-people search")
    if comp.presence is not None:
        parts.append(f"presence {type(comp.presence).__name__}")
    if comp.identity is not None:
        parts.append(f"leak audit {getattr(comp.identity, 'name', type(comp.identity).__name__)}")
    return comp, "; ".join(parts)


def _end_to_end(cfg, comp):
    """A 12-frame synthetic clip through the whole pipeline (decode, detect, track, blur,
    encode, verify, leak audit) in a temporary folder; checks frames and metadata."""
    import tempfile
    from pathlib import Path

    from ..io import has_sensitive_tags, probe
    from ..pipeline import process_video
    from ..testing import make_synthetic_video

    with tempfile.TemporaryDirectory(prefix="deid-doctor-") as tmp:
        clip = make_synthetic_video(Path(tmp) / "clip.mp4", n_frames=12)
        res = process_video(clip.path, Path(tmp) / "out", ["blur"], cfg, components=comp)
        if res.status != "done":
            raise RuntimeError(f"run {res.status}: {res.error}")
        out = res.outputs[0].path
        n = probe(out).frame_count
        if n != 12:
            raise RuntimeError(f"output has {n} frames, expected 12")
        tags = has_sensitive_tags(out)
        if tags:
            raise RuntimeError(f"output carries metadata tags {tags}")
        return f"12 frames in, 12 out, no metadata tags, {res.timings.get('total', 0):.1f} s"


def _evaluation_models(cfg):
    """The evaluation's pose estimator, recogniser and face detectors (deid evaluate),
    built and run on a synthetic frame: a user's model file can load and still fail on
    its first input (an export fixed at another size, a file of another kind)."""
    from ..evaluate.models import EvalModels
    from ..registry import DETECTORS, IDENTITY_ENCODERS, POSE_ESTIMATORS
    from ..testing import draw_frame

    ev = cfg.evaluate
    doubles = [f"{key}={name}" for key, reg, name in (("evaluate.pose.backend", POSE_ESTIMATORS, ev.pose.backend),
                                                      ("evaluate.identity.backend", IDENTITY_ENCODERS, ev.identity.backend),
                                                      ("evaluate.face_detector", DETECTORS, ev.face_detector))
               if reg.is_test_double(name)]
    if doubles:  # they run, on synthetic clips only
        raise RuntimeError(f"{', '.join(doubles)}: test double(s) for synthetic clips, not for real video")
    mdl = EvalModels.build(cfg)
    frame, box = draw_frame(0, 1, 320, 240)
    mdl.estimator.estimate([frame])
    if hasattr(mdl.estimator, "reset"):
        mdl.estimator.reset()
    mdl.encoder.embed([frame], [box[None]])
    mdl.detector.detect([frame])
    if mdl.locator is not None:
        mdl.locator.detect([frame])
    return (f"pose {mdl.pose['name']} ({mdl.pose['model']}), identity {mdl.identity['name']} ({mdl.identity['model']}), "
            f"attacker's detector {cfg.evaluate.face_detector}; ran on a synthetic frame")


def _dlib():
    import dlib
    import face_recognition_models as frm

    files = [frm.face_recognition_model_location(), frm.pose_predictor_five_point_model_location(),
             frm.pose_predictor_model_location(), frm.cnn_face_detector_model_location()]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise RuntimeError(f"missing model files: {missing}")
    dlib.face_recognition_model_v1(files[0])
    from ..identity.dlib_resnet import DlibResNet

    DlibResNet(files[0])  # the same weights on torch (the default runtime)
    return f"dlib {dlib.__version__}: ResNet 128-d (readable by the torch runtime), 5/68-point predictors, MMOD CNN present"


def _codecs():
    import av

    if "libx264" not in av.codecs_available:
        raise RuntimeError("PyAV has no libx264 encoder")
    if "filter_units" not in av.bitstream_filters_available:
        raise RuntimeError("FFmpeg lacks the filter_units bitstream filter (x264 banner would stay in outputs)")
    return f"PyAV {av.__version__}: libx264, filter_units"


def _text_detector():
    from ..overlays import swt_available

    if not swt_available():
        raise RuntimeError("cv2.text.detectTextSWT is missing (OpenCV without its contrib modules): `deid overlays` "
                           "cannot propose burnt-in text boxes; install opencv-contrib-python (mediapipe brings it)")
    import cv2

    return f"OpenCV {cv2.__version__}: stroke-width-transform text detector (deid overlays)"


def _torch():
    import torch

    return f"torch {torch.__version__}, CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no (CPU)'}"


def _ray():
    from importlib.metadata import version  # installed or not, without importing ray into deid

    return f"ray {version('ray')}"


def _optional_models():
    env = ["DEID_SCRFD_MODEL", "DEID_ARCFACE_MODEL", "DEID_OPENPOSE_MODEL", "DEID_OPENPOSE_PROTO", "DEID_RTMPOSE_MODEL",
           "DEID_RTMPOSE_DET_MODEL"]
    parts = []
    for e in env:
        v = os.environ.get(e)
        parts.append(f"{e}={'(unset)' if not v else v + (' ok' if os.path.isfile(v) else ' MISSING')}")
    if any(p.endswith(" MISSING") for p in parts):  # set, but to a file that is not there: a mistake to show
        raise FileNotFoundError("; ".join(parts))
    return "; ".join(parts)


def _donor():
    from ..swap.donors import BUILTIN_DONORS

    found, missing = [], []
    for name, (_, locate) in sorted(BUILTIN_DONORS.items()):
        try:
            found.append(f"{name}: {locate()}")
        except Exception as e:  # noqa: BLE001 - one missing demo donor is a note, not a failure
            missing.append(f"{name} not available ({e})")
    if not found:
        raise RuntimeError("; ".join(missing))
    return "; ".join(found + missing)


def _browser():
    p = shutil.which("chromium") or shutil.which("chromium-browser")
    if not p:
        raise RuntimeError("chromium not found (only the report's browser test needs it: apt-get install -y chromium)")
    return p


CHECKS = [
    ("python", lambda: sys.version.split()[0]),
    ("numpy/protobuf pins", _versions),
    ("dlib models", _dlib),
    ("video codecs", _codecs),
    ("text detector", _text_detector),
    ("torch", _torch),
    ("ray", _ray),
    ("demo donors", _donor),
    ("optional model files", _optional_models),
    ("chromium (report test)", _browser),
]
OPTIONAL = ("chromium (report test)", "optional model files")  # shown BAD, but only the configured backends fail the run


def run(args: argparse.Namespace) -> int:
    from . import load_cfg

    results = [_check(n, f) for n, f in CHECKS[:2]]
    cfg = None
    try:
        cfg = load_cfg(args)
        given = [getattr(args, "config", None) or "built-in defaults", *(getattr(args, "overrides", None) or [])]
        results.append({"check": "configuration", "ok": True, "detail": ", ".join(given)})
    except Exception as e:  # noqa: BLE001 - reported like every other check
        results.append({"check": "configuration", "ok": False, "detail": f"{type(e).__name__}: {e}"})
    if cfg is not None:
        built: dict = {}

        def models():
            built["comp"], detail = _pipeline_models(cfg)
            return detail

        results.append(_check("pipeline models", models))
        if "comp" in built:
            results.append(_check("end-to-end run", lambda: _end_to_end(cfg, built["comp"])))
        results.append(_check("evaluation models", lambda: _evaluation_models(cfg)))
    results += [_check(n, f) for n, f in CHECKS[2:]]
    required_failed = [r for r in results if not r["ok"] and r["check"] not in OPTIONAL]
    if args.json:
        print(json.dumps({"ok": not required_failed, "checks": results}, indent=1))
    else:
        w = max(len(r["check"]) for r in results)
        for r in results:
            print(f"{'ok ' if r['ok'] else 'BAD'}  {r['check'].ljust(w)}  {r['detail']}")
        print("all required checks passed" if not required_failed else f"{len(required_failed)} required check(s) failed")
    return 0 if not required_failed else 1
