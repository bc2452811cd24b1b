"""Swap benchmarks (not tests): ``python -m deid.swap.bench [train|convert|all]``.

- ``train``: the demo patient clip (talking_head_1.mp4, 200 frames 512x512) against a
  donor (default ``demo-carphone``, starting from its cached donor pre-training when
  there is one; ``--no-pretrained`` trains from scratch): face-set extraction, then
  training in steps of ``--every`` minutes up to ``--minutes``; after each step the swap
  is run on all frames (consecutive: the landmark smoothing needs them) and the identity
  gate (dlib, both attackers, threshold + margin) checks every ``--stride``-th frame of
  the track, and every frame after a failure. Prints, per step, the pass rate and the
  smallest distance, and the training time at which every check first passed ("time to
  a gate-passing swap"). ``--keep DIR`` keeps the model for ``convert``.
- ``convert``: frames per second of :class:`deid.anonymize.swap.SwapAnonymizer.apply`
  on a 640x360 clip with one face (the demo clip scaled and letterboxed), regions from
  the MediaPipe detector computed beforehand (not timed), default gating
  (``swap.gate_every``). Run ``--repeat`` times (the machine is shared: report each).
  Also the whole pipeline (decode, detect, track, swap, encode, leak audit) once.

- ``sides``: where the swap's pose accuracy goes. With a model (``--model-dir``), the
  patient clip is converted twice, gate off: through the donor's decoder (the swap) and
  through the patient's own decoder (a reconstruction: the same alignment, generator
  size, colour matching and blending, but no change of identity); both are scored with
  ``deid evaluate`` against the original (pose OKS AP per region, identity). The gap
  between the reconstruction and 1.0 is what the generator and the pasting cost; the
  gap between the swap and the reconstruction is what the change of face costs. The
  reconstruction shows the patient's face: it is written to a private (0700) temporary
  folder and deleted with the evaluation's tables after printing.

Nothing here is asserted: numbers go to stdout (and ``--json FILE``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..commands import help_text

MEDIA = Path(os.environ.get("DEID_SHARED_MEDIA", Path(__file__).resolve().parents[3] / "shared" / "media"))
DEMO_PATIENT = MEDIA / "video" / "talking" / "talking_head_1.mp4"


def detector_regions(frames: list[np.ndarray], cfg: Any) -> list[list[Any]]:
    """Face regions per frame the way the pipeline makes them (detector + padding)."""
    from ..detect import build_detector
    from ..track.boxes import clip, pad_face_box
    from ..types import FaceRegion

    det = build_detector(cfg)
    t = cfg.track
    out = []
    for f in frames:
        d = det.detect([f])[0]
        h, w = f.shape[:2]
        lms = d.landmarks if d.landmarks is not None else [None] * len(d)
        out.append(
            [
                FaceRegion(box=clip(pad_face_box(b, t.pad_side, t.pad_top, t.pad_bottom), w, h), face_box=b, landmarks=lm, track_id=1 + k)
                for k, (b, lm) in enumerate(zip(d.boxes, lms))
            ]
        )
    return out


def gate_eval(model_dir: Path, cfg: Any, frames: list[np.ndarray], regions: list[list[Any]], identity: Any, every: int) -> dict[str, Any]:
    """Swap every face of consecutive frames (the landmark smoothing needs them), gate
    every ``every``-th frame of the track (and every frame after a failure); pass rate
    and distances."""
    from ..anonymize.swap import SwapAnonymizer

    anon = SwapAnonymizer.from_dir(model_dir, cfg.replace(f"swap.gate_every={every}"), identity=identity)
    for f, r in zip(frames, regions):
        anon.apply(f, r)
    s = anon.stats()
    checks = max(1, s["gate_checks"])
    return {
        "faces": s["faces"],
        "gate_checks": s["gate_checks"],
        "gate_pass_rate": round(1.0 - s["gate_failures"] / checks, 3),
        "gate_min_distance": s["gate_min_distance"],
        "swap_failed": s["faces_masked_swap_failed"],
    }


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    from ..config import Config
    from ..detect import build_detector
    from ..io import read_frames
    from ..registry import IDENTITY_ENCODERS
    from .align import DlibLandmarker
    from .donors import DonorLibrary, donor_faceset
    from .faceset import extract_faceset
    from .pretrain import pretrained_path
    from .session import REFERENCES_FILE, SESSION_FILE, private_dir
    from .train import CHECKPOINT, TrainData, fit, resolve_spec

    cfg = Config().replace(f"swap.donor={args.donor}", f"swap.preset={args.preset}", *args.set)
    identity = IDENTITY_ENCODERS.create("dlib")
    detector = build_detector(cfg)
    lm = DlibLandmarker()
    lib = DonorLibrary(cfg.swap.donor_library or None)
    donor = lib.get(args.donor)
    spec = resolve_spec(cfg.swap)
    work = Path(args.keep) if args.keep else private_dir()
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    ext = extract_faceset([args.patient], spec.size, detector=detector, landmarker=lm, identity=identity, max_frames=cfg.swap.max_frames)
    t_extract = time.perf_counter() - t
    t = time.perf_counter()
    dfaces = donor_faceset(donor, spec.size, detector=detector, landmarker=lm)
    t_donor = time.perf_counter() - t
    np.save(work / REFERENCES_FILE, ext.references)
    (work / SESSION_FILE).write_text(json.dumps({"single_person": True, "donor": donor.name}))
    data = TrainData(ext.faceset, dfaces)
    init = pretrained_path(donor, spec)
    t_pre = None
    if args.pretrained and not init.is_file() and args.pretrain_minutes > 0:
        from .pretrain import pretrain_donor

        t = time.perf_counter()
        pretrain_donor(donor, cfg, minutes=args.pretrain_minutes, detector=detector, landmarker=lm)
        t_pre = round((time.perf_counter() - t) / 60.0, 2)
    init = init if (args.pretrained and init.is_file()) else None
    from ..io import probe

    frames = read_frames(args.patient, list(range(min(probe(args.patient).frame_count, args.eval_frames))))
    regions = detector_regions(frames, cfg)
    rows = []
    first_pass = None
    done_min = 0.0
    while done_min < args.minutes - 1e-9:
        done_min = min(args.minutes, done_min + args.every)
        run = dataclasses.replace(cfg.swap, max_minutes=done_min, max_steps=0)
        res = fit(data, run, work, resume_from=work / CHECKPOINT if (work / CHECKPOINT).is_file() else None, init_from=init, spec=spec)
        ev = gate_eval(work, cfg, frames, regions, identity, args.stride)
        row = {
            "train_minutes": round(res.elapsed_s / 60.0, 2),
            "steps": res.steps,
            **ev,
            "loss_patient": round(res.losses["patient"], 4),
            "load_avg_1min": round(os.getloadavg()[0], 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if first_pass is None and ev["gate_pass_rate"] >= 1.0 and ev["swap_failed"] == 0:
            first_pass = row["train_minutes"]
            if args.stop_at_pass:
                break
    out = {
        "patient": str(args.patient),
        "donor": donor.name,
        "preset": args.preset,
        "init_from_donor_pretrain": init is not None,
        "donor_pretrain_built_minutes": t_pre,
        "extract_seconds_patient": round(t_extract, 1),
        "extract_seconds_donor": round(t_donor, 1),
        "patient_faces": len(ext.faceset),
        "donor_faces": len(dfaces),
        "eval_frames": len(frames),
        "steps": rows,
        "minutes_to_gate_passing_swap": first_pass,
        "model_dir": str(work) if args.keep else "(deleted)",
    }
    if not args.keep:
        from .session import remove_private_dir

        remove_private_dir(work)
    return out


def _letterbox_640x360(frames: list[np.ndarray]) -> list[np.ndarray]:
    import cv2

    out = []
    for f in frames:
        s = 360.0 / f.shape[0]
        g = cv2.resize(f, (round(f.shape[1] * s), 360), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((360, 640, 3), np.uint8)
        x = (640 - g.shape[1]) // 2
        canvas[:, x : x + g.shape[1]] = g
        out.append(canvas)
    return out


def bench_convert(args: argparse.Namespace) -> dict[str, Any]:
    from ..anonymize.swap import SwapAnonymizer
    from ..config import Config
    from ..io import VideoWriter, read_frames
    from ..registry import IDENTITY_ENCODERS

    if not args.model_dir:
        raise SystemExit("convert needs --model-dir (a model folder, e.g. from `bench train --keep DIR` or `deid swap train`)")
    cfg = Config().replace(*args.set)
    identity = IDENTITY_ENCODERS.create("dlib")
    frames = _letterbox_640x360(read_frames(args.patient))
    regions = detector_regions(frames, cfg)
    runs = []
    for _ in range(args.repeat):
        anon = SwapAnonymizer.from_dir(args.model_dir, cfg, identity=identity)
        t = time.perf_counter()
        for f, r in zip(frames, regions):
            anon.apply(f, r)
        dt = time.perf_counter() - t
        s = anon.stats()
        runs.append({"fps": round(len(frames) / dt, 2), "frames": len(frames), "faces_swapped": s["faces_swapped"], "gate_checks": s["gate_checks"], "gate_failures": s["gate_failures"]})
        print(json.dumps(runs[-1]), flush=True)
    out: dict[str, Any] = {"size": "640x360", "gate_every": cfg.swap.gate_every, "apply_runs": runs}
    if args.pipeline:
        from ..pipeline import Components, process_video

        with tempfile.TemporaryDirectory() as tmp:
            clip = Path(tmp) / "clip640.mp4"
            with VideoWriter(clip, 640, 360, 25.0, crf=18, preset="veryfast") as w:
                for f in frames:
                    w.write(f)
            anon = SwapAnonymizer.from_dir(args.model_dir, cfg, identity=identity)
            comp = Components.build(cfg, [], identity=identity, anonymizers={"swap": anon})
            process_video(clip, Path(tmp) / "o1", ["swap"], cfg, components=comp)  # warm-up: models, caches
            anon.reset()
            t = time.perf_counter()
            res = process_video(clip, Path(tmp) / "o2", ["swap"], cfg, components=comp)
            dt = time.perf_counter() - t
            out["pipeline"] = {
                "status": res.status,
                "error": res.error,
                "fps_end_to_end": round(len(frames) / dt, 2),
                "timings": res.timings,
                "leak": res.outputs[0].leak if res.outputs else {},
            }
            print(json.dumps(out["pipeline"]), flush=True)
    return out


def bench_sides(args: argparse.Namespace) -> dict[str, Any]:
    from ..anonymize.swap import SwapAnonymizer
    from ..config import Config
    from ..evaluate.api import evaluate_outputs
    from ..pipeline import Components, process_video
    from .session import remove_private_dir

    if not args.model_dir:
        raise SystemExit("sides needs --model-dir (a model folder, e.g. from `bench train --keep DIR` or `deid swap train`)")
    cfg = Config().replace("audit.leak_check=false", f"evaluate.identity_every={args.stride}", *args.set)
    base = Components.build(cfg, [])
    tmp = Path(tempfile.mkdtemp(prefix="deid-swap-sides-"))  # 0700: holds a reconstruction of the patient
    try:
        outs = {}
        for side, label in (("donor", "swap"), ("patient", "reconstruction")):
            anon = SwapAnonymizer.from_dir(args.model_dir, cfg)
            anon.gate = None  # the reconstruction would fail it by design; the swap is compared like for like
            anon.converter.side = side
            res = process_video(args.patient, tmp / label, ["swap"], cfg, components=base.with_anonymizer("swap", anon))
            if res.status != "done":
                raise SystemExit(f"{label}: {res.status}: {res.error}")
            outs[label] = res.outputs[0].path
        ev = evaluate_outputs(args.patient, outs, tmp / "metrics", cfg, distractors=[], progress=False)
        print(ev["table"], flush=True)
        keep = ("ap_overall", "ap_body", "ap_head", "ap_face", "oks_mean", "mean_dist_patient", "frames_match_patient")
        rows = {r["method"]: {k: r.get(k) for k in keep} for r in ev["summary"] if r["method"] in outs}
        return {"patient": str(args.patient), "model_dir": str(args.model_dir), "sides": rows}
    finally:
        remove_private_dir(tmp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deid.swap.bench", description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", default="all", choices=("train", "convert", "sides", "all"))
    p.add_argument("--patient", type=Path, default=DEMO_PATIENT)
    p.add_argument("--donor", default="demo-carphone")
    p.add_argument("--preset", default="small")
    p.add_argument("--minutes", type=float, default=10.0, help="training budget")
    p.add_argument("--every", type=float, default=1.0, help="evaluate the gate every so many training minutes")
    p.add_argument("--stride", type=int, default=10, help="gate every k-th frame in the evaluation")
    p.add_argument("--eval-frames", type=int, default=200, help="evaluate on the first N frames")
    p.add_argument("--stop-at-pass", action="store_true", help="stop training once every checked face passes")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="ignore the donor's cached pre-training")
    p.add_argument("--pretrain-minutes", type=float, default=0.0, help="build the donor pre-training first when it is missing")
    p.add_argument("--keep", metavar="DIR", help="keep the trained model in DIR (private data: delete it afterwards)")
    p.add_argument("--model-dir", metavar="DIR", help="model for `convert` and `sides`")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--pipeline", action="store_true", help="also time the whole pipeline once")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not args.patient.is_file():
        print(f"demo patient clip not found: {args.patient} (set DEID_SHARED_MEDIA)", file=sys.stderr)
        return 2
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}}
    scratch = None  # a model `all` trains without --keep: deleted after conversion
    if args.what in ("train", "all"):
        if args.what == "all" and not args.keep:
            args.keep = scratch = tempfile.mkdtemp(prefix="deid-swap-bench-")
        result["train"] = bench_train(args)
    if args.what in ("convert", "all"):
        if args.what == "all":
            args.model_dir = args.keep
        result["convert"] = bench_convert(args)
        if scratch:
            from .session import remove_private_dir

            remove_private_dir(scratch)
    if args.what == "sides":
        result["sides"] = bench_sides(args)
    result["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
