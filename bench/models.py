"""CPU cost of each model the blur path runs, per call, on the demo clip's frames.

    python -m bench.models [--clip PATH] [--repeats 3]

Why the speed targets are hard: the per-call CPU time of every model (one thread, the
process's own CPU time, so other load on the machine inflates it less than wall time),
how often the default configuration calls it on the clip (from one run of the pipeline's
own counters), and so its share per frame, next to a bare decode+encode of the same clip.
CenterFace is timed on both runtimes (onnxruntime on the rewritten graph, the default;
OpenCV's DNN on the file as shipped). Median of ``--repeats`` passes, each printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from .common import DEMO_CLIP, bare_transcode


def _per_call(fn, items, repeats: int, label: str) -> float:
    fn(items[:2])  # warm-up (graph start, first-size allocations)
    runs = []
    for _ in range(repeats):
        c = time.process_time()
        for it in items:
            fn([it])
        runs.append((time.process_time() - c) * 1000 / len(items))
    med = statistics.median(runs)
    print(f"  {label:<34} {med:7.2f} ms a call (runs: {', '.join(f'{r:.2f}' for r in runs)})", flush=True)
    return med


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=DEMO_CLIP)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import cv2

    from deid.config import Config
    from deid.detect.centerface_backend import CenterFaceDetector
    from deid.detect.mediapipe_backend import MediapipeFaceDetector
    from deid.errors import DeidError
    from deid.io import probe, read_frames
    from deid.pipeline import process_video
    from deid.pose.mediapipe_backend import MediapipePoseEstimator

    cv2.setNumThreads(1)  # as the pipeline (track.opencv_threads: 1)
    try:
        info = probe(args.clip)
        frames = read_frames(args.clip)
    except DeidError as e:
        raise SystemExit(f"bench.models: {e}") from None
    if not frames:
        raise SystemExit(f"bench.models: {args.clip}: no frames decoded")
    n = len(frames)
    print(f"{args.clip.name}: {n} frames, {info.width}x{info.height}")

    # how often the default configuration calls each model on this clip
    cfg = Config().replace("audit.leak_check=false")
    with tempfile.TemporaryDirectory() as tmp:
        res = process_video(args.clip, Path(tmp), ["blur"], cfg, overwrite=True, sha256=False)
        if res.status != "done":  # (the call counts below would be those of a partial run)
            raise SystemExit(f"bench.models: the pipeline failed on {args.clip}: {res.error}")
        counts = res.counts
        c = time.process_time()
        bare_transcode(args.clip, Path(tmp) / "bare.mp4")
        bare_ms = (time.process_time() - c) * 1000 / n
    pose_calls = int(counts.get("pose_runs", 0))
    extra_every = cfg.detect.extra_every
    print(f"  {'bare decode+encode':<34} {bare_ms:7.2f} ms a frame (one run)")

    out: dict[str, float] = {"bare_ms_frame": bare_ms}
    out["short"] = _per_call(MediapipeFaceDetector(models="short").detect, frames, args.repeats, "MediaPipe face, short range")
    out["full"] = _per_call(MediapipeFaceDetector(models="full").detect, frames, args.repeats, "MediaPipe face, full range")
    sparse = frames[::extra_every]
    out["centerface_ort"] = _per_call(CenterFaceDetector(min_score=0.2).detect, sparse, args.repeats,
                                      "CenterFace, onnxruntime (default)")
    out["centerface_opencv"] = _per_call(CenterFaceDetector(min_score=0.2, runtime="opencv").detect, sparse,
                                         args.repeats, "CenterFace, OpenCV DNN")
    pose = MediapipePoseEstimator()
    out["pose"] = _per_call(pose.estimate, frames[: max(8, min(n, 80))], args.repeats, "MediaPipe pose (tracking mode)")
    pose.close()

    # the full-range model runs where the short-range one found nothing and on every
    # full_range_every-th frame: count its calls on this clip
    both = MediapipeFaceDetector(models="short,full", full_range_every=cfg.detect.full_range_every)
    calls = {"n": 0}
    one = both._one

    def counted(fd, img, w, h):
        calls["n"] += fd is both._fd[1]
        return one(fd, img, w, h)

    both._one = counted
    both.detect_indexed(frames, range(n))
    full_calls = calls["n"]
    per_frame = {
        "MediaPipe short (every frame)": out["short"],
        f"MediaPipe full ({full_calls} calls in {n} frames)": out["full"] * full_calls / n,
        f"CenterFace (every {extra_every}th frame)": out["centerface_ort"] / extra_every,
        f"MediaPipe pose ({pose_calls} calls in {n} frames)": out["pose"] * pose_calls / n,
    }
    print("per frame of this clip (calls as the default configuration makes them):")
    for k, v in per_frame.items():
        print(f"  {k:<44} {v:6.2f} ms")
    print(f"  {'sum of these':<44} {sum(per_frame.values()):6.2f} ms vs bare decode+encode {bare_ms:.2f} ms")
    print(f"CenterFace: onnxruntime / OpenCV = {out['centerface_ort'] / out['centerface_opencv']:.2f} of the CPU time")
    return out


if __name__ == "__main__":
    main()
