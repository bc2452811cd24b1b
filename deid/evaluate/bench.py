"""Throughput of what ``deid evaluate`` runs, on 640 x 360 frames.

    python -m deid.evaluate.bench [--frames 96] [--faces 32] [--end-to-end]

- pose: the default estimator (MediaPipe Holistic, video mode, as the evaluation runs
  it) on the pancake demo clip resized to 640 x 360 (a person with body and hands);
- identity: dlib's 128-d embedding of one face a frame (landmarks + alignment + ResNet)
  on a talking-head clip letterboxed to 640 x 360, face box given, batched as the
  evaluation batches it (a chunk of frames per call);
- attacker: dlib's HOG face detector (upsample 1) on the same 640 x 360 frames;
- ``--end-to-end``: ``evaluate_outputs`` of the 640 x 360 pancake clip against one
  processed copy (two video passes), frames per second of video evaluated.

Decoding and resizing happen before the clock starts (except end to end). Each line
gives wall-clock and CPU seconds: on a shared machine the wall clock includes time the
process waited for a core; the load average is printed alongside so readers can tell.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..commands import help_text

REPO = Path(__file__).resolve().parents[2]
PANCAKE = REPO / "demo_media" / "flipping_a_pancake.mp4"
TALKING = REPO / "demo_media" / "talking_head_1.mp4"
SIZE = (640, 360)


def _frames(path: Path, n: int, letterbox: bool) -> list[np.ndarray]:
    import cv2

    from ..identity.bench import letterbox as lb
    from ..io import read_frames

    src = read_frames(path, list(range(n)))
    while len(src) < n:  # loop short clips
        src += src[: n - len(src)]
    if letterbox:
        return [lb(f, *SIZE) for f in src]
    return [cv2.resize(f, SIZE, interpolation=cv2.INTER_LINEAR) for f in src]


def _clock(fn, n_items: int, label: str, unit: str) -> dict:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"stage": label, "items": n_items, f"{unit}_per_s_wall": round(n_items / wall, 2),
            f"ms_per_{unit}_wall": round(1000 * wall / n_items, 1), f"ms_per_{unit}_cpu": round(1000 * cpu / n_items, 1),
            "load_avg_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=help_text(__doc__).splitlines()[0])
    ap.add_argument("--frames", type=int, default=96, help="frames for the pose and detector timings")
    ap.add_argument("--faces", type=int, default=32, help="faces for the embedding timing")
    ap.add_argument("--chunk", type=int, default=32, help="frames per model call (io.chunk_size)")
    ap.add_argument("--end-to-end", action="store_true", help="also time evaluate_outputs on a 640x360 clip")
    args = ap.parse_args(argv)

    from ..config import Config
    from .models import EvalModels

    cfg = Config()
    mdl = EvalModels.build(cfg)
    out = []

    body = _frames(PANCAKE, args.frames, letterbox=False)
    mdl.estimator.estimate(body[:4])
    mdl.estimator.reset()
    found = []

    def pose():
        for s in range(0, len(body), args.chunk):
            found.extend(k.num_persons > 0 for k in mdl.estimator.estimate(body[s : s + args.chunk]))

    r = _clock(pose, len(body), f"pose {mdl.pose['name']} ({mdl.pose['version']})", "frame")
    r["frames_with_person"] = int(sum(found))
    out.append(r)

    heads = _frames(TALKING, args.faces, letterbox=True)
    box = mdl.detector.detect(heads[:1])[0].boxes[:1]
    if len(box) == 0:
        raise SystemExit(f"{TALKING}: no face found by {mdl.identity['detector']}; cannot time the embedding")
    mdl.encoder.embed(heads[:2], [box, box])

    def embed():
        for s in range(0, len(heads), args.chunk):
            chunk = heads[s : s + args.chunk]
            mdl.encoder.embed(chunk, [box] * len(chunk))

    r = _clock(embed, len(heads), f"identity embed {mdl.identity['model']} ({mdl.identity['version']})", "face")
    r["face_box_px"] = [round(float(v)) for v in box[0]]
    out.append(r)
    out.append(_clock(lambda: mdl.detector.detect(heads), len(heads), f"attacker detector {mdl.identity['detector']}",
                      "frame"))

    if args.end_to_end:
        from ..io import VideoWriter
        from .api import evaluate_outputs

        with tempfile.TemporaryDirectory() as tmp:
            clip = Path(tmp) / "pancake640.mp4"
            with VideoWriter(clip, *SIZE, 30.0, crf=18, timing="cfr") as w:
                for f in body:
                    w.write(f)
            copy = Path(tmp) / "pancake640.copy.mp4"
            copy.write_bytes(clip.read_bytes())
            r = _clock(lambda: evaluate_outputs(clip, {"copy": copy}, Path(tmp) / "metrics", cfg, models=mdl,
                                                distractors=[], progress=False),
                       len(body), "evaluate_outputs, original + 1 output (2 video passes)", "video_frame")
            out.append(r)
    for r in out:
        print(json.dumps(r), flush=True)
    return out


if __name__ == "__main__":
    main()
