"""Ray's overhead: the same inputs through the plain in-process pipeline
(``deid.batch.run_batch``) and through the local Ray archive job.

    python -m bench.ray_overhead                  # the demo clips, blur + mask, 2 repeats
    python -m bench.ray_overhead --repeats 3 --methods blur --segment-frames 0

Both sides use one configuration (the defaults: MediaPipe detection, pose fallback,
leak audit on; evaluation off) and start from empty output folders every repeat. The
Ray side is timed twice over:

- **job**: ``run_archive`` on a Ray instance that is already up — what an archive run
  costs on a running cluster (plan tasks, actor start-up and model loading, segment
  rendering, stitching, status table);
- **with start-up**: plus ``ray.init`` and ``ray.shutdown`` of the local one-node
  instance, paid once per job in local mode.

The overhead is ``median(ray) / median(in-process) - 1``. Both pipelines run the same
per-frame work; what Ray adds is scheduling, model loading in each actor, segment
overlap analysis and the remux. With 2 render actors on a multi-core machine Ray also
runs two videos at once, which the in-process batch does not: the figure is what a
user sees, not a per-core cost. Results: printed, and ``bench/out/ray_overhead.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from .common import OUT, REPO, machine_facts


def _inputs(args: argparse.Namespace) -> list[Path]:
    if args.inputs:
        return [Path(p) for p in args.inputs]
    return sorted((REPO / "demo_media").glob("*.mp4"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ray_overhead", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="videos (default: demo_media/*.mp4)")
    p.add_argument("--methods", default="blur,mask")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--segment-frames", type=int, default=None, help="ray.segment_frames (default: the config's)")
    p.add_argument("--concurrency", type=int, default=2, help="render actors (ray.concurrency)")
    p.add_argument("--config", default=None, help="YAML config for both sides (default: built-in defaults)")
    p.add_argument("--limit", type=float, default=0.15, help="overhead allowed (exit code 1 above it)")
    args = p.parse_args(argv)

    import ray

    from deid.archive import load_manifest
    from deid.batch import run_batch
    from deid.config import load_config
    from ray_jobs.cluster import connect
    from ray_jobs.deidentify import run_archive

    cfg = load_config(args.config)
    r = {"concurrency": args.concurrency, "progress_every_s": 0.0}
    if args.segment_frames is not None:
        r["segment_frames"] = args.segment_frames
    cfg = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, **r))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    inputs = _inputs(args)
    work = OUT / "ray_overhead"
    shutil.rmtree(work, ignore_errors=True)
    (work / "archive").mkdir(parents=True)
    for f in inputs:  # one folder to scan = the manifest (same inputs, same order)
        shutil.copy2(f, work / "archive" / f.name)
    print(f"inputs: {', '.join(f.name for f in inputs)}; methods {','.join(methods)}; "
          f"segments of {cfg.ray.segment_frames} frames (overlap {cfg.ray.segment_overlap}); {cfg.ray.concurrency} render actors", flush=True)

    t_plain: list[float] = []
    t_job: list[float] = []
    t_full: list[float] = []
    frames = 0
    for k in range(args.repeats):
        # in process
        out = work / f"plain{k}"
        t0 = time.perf_counter()
        res = run_batch([work / "archive"], out, methods, cfg, progress=False)
        t_plain.append(time.perf_counter() - t0)
        bad = [x.error for x in res if not x.ok]
        if bad:
            print("in-process run failed:", bad, file=sys.stderr)
            return 2
        frames = sum(x.frames_read for x in res)
        print(f"  in-process run {k + 1}/{args.repeats}: {t_plain[-1]:.1f} s ({frames} frames)", flush=True)
        # Ray, local one-node instance
        out = work / f"ray{k}"
        man = load_manifest(work / "archive", methods=methods, out_dir=out)
        t0 = time.perf_counter()
        where, started = connect(cfg, local=True, train="swap" in methods)
        t1 = time.perf_counter()
        run = run_archive(cfg, man, out, progress=False, echo=lambda s: None)
        t2 = time.perf_counter()
        if started:
            ray.shutdown()
        t3 = time.perf_counter()
        if not run.ok:
            print("Ray run failed:", run.summary()["failed"], file=sys.stderr)
            return 2
        t_job.append(t2 - t1)
        t_full.append(t3 - t0)
        print(f"  Ray run {k + 1}/{args.repeats}: job {t_job[-1]:.1f} s, with start-up {t_full[-1]:.1f} s", flush=True)

    med = statistics.median
    over_job = med(t_job) / med(t_plain) - 1.0
    over_full = med(t_full) / med(t_plain) - 1.0
    result = {
        "inputs": [f.name for f in inputs],
        "methods": methods,
        "frames": frames,
        "segment_frames": cfg.ray.segment_frames,
        "segment_overlap": cfg.ray.segment_overlap,
        "concurrency": cfg.ray.concurrency,
        "in_process_s": t_plain,
        "ray_job_s": t_job,
        "ray_with_startup_s": t_full,
        "overhead_job": round(over_job, 4),
        "overhead_with_startup": round(over_full, 4),
        "limit": args.limit,
        "machine": machine_facts(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ray_overhead.json").write_text(json.dumps(result, indent=1))
    print(f"in-process {med(t_plain):.1f} s, Ray job {med(t_job):.1f} s ({over_job:+.1%}), "
          f"with Ray start-up {med(t_full):.1f} s ({over_full:+.1%}); limit {args.limit:.0%}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if over_job <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
