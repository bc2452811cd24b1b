"""Identity-embedding throughput on 640 x 360 frames with one face.

    python -m deid.identity.bench [--video PATH] [--frames 64] [--batch 1 8 32] [--backend dlib]
                                  [--runtime torch dlib]

Frames come from a real clip (default: ../shared/media/video/talking/talking_head_1.mp4),
letterboxed to 640 x 360 as a typical clinical recording; the face box is found once by
dlib's HOG detector and given to ``embed`` for every frame, so the number measures the
identity encoder alone (landmarks + alignment + network), not detection. For dlib both
runtimes of its ResNet run (torch, the default, and dlib's own forward pass: the same
descriptor, see :mod:`deid.identity.dlib_resnet`), so the speed-up is a ratio measured in
one run. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from ..commands import help_text

DEFAULT_VIDEO = Path(os.environ.get("DEID_SHARED_MEDIA", Path(__file__).resolve().parents[2].parent / "shared" / "media")) / "video/talking/talking_head_1.mp4"
if not DEFAULT_VIDEO.is_file():  # the repo's own copy (re-encoded 256 x 256)
    DEFAULT_VIDEO = Path(__file__).resolve().parents[2] / "demo_media" / "talking_head_1.mp4"


def letterbox(frame: np.ndarray, width: int = 640, height: int = 360) -> np.ndarray:
    import cv2

    h, w = frame.shape[:2]
    s = min(width / w, height / h)
    small = cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    out = np.zeros((height, width, 3), np.uint8)
    y0, x0 = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    out[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=help_text(__doc__).splitlines()[0])
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--backend", default="dlib")
    ap.add_argument("--model-path", default="")
    ap.add_argument("--runtime", nargs="+", default=["torch", "dlib"], help="dlib backend: runtimes to time")
    args = ap.parse_args(argv)

    from ..io import read_frames
    from ..registry import IDENTITY_ENCODERS
    from .reference import find_faces

    frames = [letterbox(f) for f in read_frames(args.video, list(range(args.frames)))]
    boxes = find_faces(frames[:1])[0]
    if len(boxes) == 0:
        raise SystemExit(f"{args.video}: no face found in frame 0; pick a clip with a visible face")
    box = boxes[:1]
    kwargs = {"model_path": args.model_path} if args.model_path else {}
    runtimes = args.runtime if args.backend == "dlib" else [None]
    result = {"backend": args.backend, "frame_size": "640x360", "frames": len(frames),
              "face_box_px": [round(float(v)) for v in box[0]], "faces_per_s": {}}
    for rt in runtimes:
        enc = IDENTITY_ENCODERS.create(args.backend, **kwargs, **({"runtime": rt} if rt else {}))
        enc.embed(frames[:2], [box, box])  # warm-up
        speeds = result["faces_per_s"].setdefault(rt, {}) if rt else result["faces_per_s"]
        for bs in args.batch:
            t0 = time.perf_counter()
            n = 0
            for s in range(0, len(frames), bs):
                chunk = frames[s : s + bs]
                out = enc.embed(chunk, [box] * len(chunk))
                n += sum(len(o) for o in out)
            dt = time.perf_counter() - t0
            speeds[f"batch_{bs}"] = round(n / dt, 1)
    if len(runtimes) == 2 and set(runtimes) == {"torch", "dlib"}:
        f = result["faces_per_s"]
        result["torch_over_dlib"] = {k: round(f["torch"][k] / f["dlib"][k], 2) for k in f["torch"]}
    result["threads"] = os.cpu_count()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
