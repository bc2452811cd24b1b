"""Runs INSIDE bench/.venv-deface (deface's own environment; never imports deid).

    python bench/deface_helper.py anonymize '{"input": IN, "output": OUT}'
    python bench/deface_helper.py detect '{"jobs": [{"frames": FRAMES.npy, "out": BOXES.json}, ...]}'

``anonymize`` does exactly what the ``deface IN -o OUT`` command does with its defaults:
the options come from deface's own argument parser (``deface.deface.parse_cli_args``),
then ``CenterFace(...)`` and ``video_detect(...)`` are called as its ``main`` calls them.
Only ``video_detect`` (read, detect, blur, encode) is timed — the same split as the
deid side, where model building is not timed either.

``detect`` runs deface's detector (``deface.centerface.CenterFace``, default threshold)
on frames decoded by deid (an .npy array, RGB uint8), so both tools see the same
pixels; boxes are written as JSON ``[[x1, y1, x2, y2, score], ...]`` per frame.

The answer is one ``BENCH_RESULT {json}`` line (see bench/common.py).
"""

import json
import resource
import sys
import time


def _usage():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _vmhwm_mb():
    """Peak RSS of this process (VmHWM; ru_maxrss would include the parent's, see bench/common.py)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _emit(out):
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["peak_rss_mb"] = round(_vmhwm_mb(), 1)
    out["children_peak_rss_mb"] = round(c.ru_maxrss / 1024.0, 1)
    print("BENCH_RESULT " + json.dumps(out), flush=True)


def _cli_defaults(argv):
    import deface.deface as D

    old = sys.argv
    sys.argv = ["deface"] + list(argv)
    try:
        return D.parse_cli_args()
    finally:
        sys.argv = old


def anonymize(spec):
    import deface
    import deface.deface as D

    args = _cli_defaults([spec["input"], "--output", spec["output"]])
    in_shape = None
    if args.scale is not None:
        w, h = args.scale.split("x")
        in_shape = int(w), int(h)
    cf = D.CenterFace(in_shape=in_shape, backend=args.backend, override_execution_provider=args.execution_provider)
    c0, t0 = _usage(), time.perf_counter()
    D.video_detect(
        ipath=spec["input"], opath=spec["output"], centerface=cf, threshold=args.thresh, cam=False,
        replacewith=args.replacewith, mask_scale=args.mask_scale, ellipse=not args.boxes, draw_scores=args.draw_scores,
        enable_preview=False, nested=False, keep_audio=args.keep_audio, ffmpeg_config=args.ffmpeg_config,
        replaceimg=None, mosaicsize=args.mosaicsize,
    )
    dt, cpu = time.perf_counter() - t0, _usage() - c0
    opts = {k: getattr(args, k) for k in ("thresh", "scale", "boxes", "mask_scale", "replacewith", "keep_audio", "ffmpeg_config", "backend")}
    return {"ok": True, "seconds": round(dt, 4), "cpu_seconds": round(cpu, 3), "version": deface.__version__,
            "backend_used": cf.backend, "options": opts}


def detect(spec):
    import numpy as np
    from deface.centerface import CenterFace

    args = _cli_defaults(["x"])
    cf = CenterFace(in_shape=None, backend=args.backend)
    facts = {}
    for job in spec["jobs"]:
        frames = np.load(job["frames"], mmap_mode="r")
        boxes = []
        c0, t0 = _usage(), time.perf_counter()
        for f in frames:
            dets, _ = cf(np.ascontiguousarray(f), threshold=args.thresh)
            boxes.append([[round(float(v), 2) for v in d[:4]] + [round(float(d[4]), 3)] for d in dets])
        facts[job["out"]] = {"frames": len(boxes), "seconds": round(time.perf_counter() - t0, 3), "cpu_seconds": round(_usage() - c0, 3)}
        with open(job["out"], "w") as fh:
            json.dump(boxes, fh)
    return {"ok": True, "jobs": facts, "threshold": args.thresh, "backend_used": cf.backend}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("anonymize", "detect"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        out = {"anonymize": anonymize, "detect": detect}[sys.argv[1]](json.loads(sys.argv[2]))
    except Exception as e:  # noqa: BLE001 - reported to the parent as data
        import traceback

        out = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-1500:]}
    _emit(out)
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
