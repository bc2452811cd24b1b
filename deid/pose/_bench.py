"""Throughput of the MediaPipe pose backends on 640x360 frames.

    python -m deid.pose._bench [--video PATH] [--frames 150] [--size 640x360]

Decodes the clip once (default: ../shared/media/video/flipping_a_pancake.mkv, resized to
640x360), then times ``estimate`` per backend in video mode (tracking on, as the pipeline
runs it) and static mode, after a few warm-up frames. Prints one JSON line per run:
frames/s, ms/frame, and how many frames had a person. Decoding is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from ..commands import help_text

DEFAULT_VIDEO = Path(__file__).resolve().parents[2].parent / "shared" / "media" / "video" / "flipping_a_pancake.mkv"


def load_frames(path: str | os.PathLike, n: int, size: tuple[int, int]) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(cv2.resize(f.to_ndarray(format="rgb24"), size, interpolation=cv2.INTER_LINEAR))
            if len(out) >= n:
                break
    return out


def bench(name: str, make, frames: list[np.ndarray], warmup: int = 5, batch: int = 8) -> dict:
    est = make()
    est.estimate(frames[:warmup])
    est.reset()
    found = 0
    t0 = time.perf_counter()
    for i in range(0, len(frames), batch):
        found += sum(k.num_persons > 0 for k in est.estimate(frames[i : i + batch]))
    dt = time.perf_counter() - t0
    getattr(est, "close", lambda: None)()
    return {
        "backend": name,
        "frames": len(frames),
        "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
        "fps": round(len(frames) / dt, 2),
        "ms_per_frame": round(1000 * dt / len(frames), 1),
        "frames_with_person": int(found),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    from .mediapipe_backend import MediapipeHolisticEstimator, MediapipePoseEstimator

    ap = argparse.ArgumentParser(description=help_text(__doc__).splitlines()[0])
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--size", default="640x360")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    frames = load_frames(args.video, args.frames, (w, h))
    runs = [
        ("mediapipe_holistic (video)", lambda: MediapipeHolisticEstimator()),
        ("mediapipe_pose (video)", lambda: MediapipePoseEstimator()),
        ("mediapipe_holistic (static)", lambda: MediapipeHolisticEstimator(static=True)),
        ("mediapipe_pose (static)", lambda: MediapipePoseEstimator(static=True)),
    ]
    results = []
    for name, make in runs:
        r = bench(name, make, frames)
        print(json.dumps(r), flush=True)
        results.append(r)
    return results


if __name__ == "__main__":
    main()
