"""A/B of two configurations of the blur path on one clip, in one process.

    python -m bench.ab CLIP --a track.worker_threads=false --b track.worker_threads=true [--repeats 8]

Both configurations' models are built before the clock starts; the runs alternate
(A B, B A, A B, ...) so drift on a shared machine falls on both sides alike. Each run is
one ``render_segment`` of the whole clip (decode, analysis, blur, encode; no leak
audit). Prints every run, the medians of wall and CPU seconds, the speed-up of B over A,
and whether every run of both configurations planned the same regions and decisions in
every frame (a change meant to be pure speed, such as ``track.worker_threads``, must). The
regions are compared, not the video bytes: libx264's frame threads do not give
byte-identical files run to run here (docs/benchmarks.md), while rendering a plan is
deterministic.

For one-off questions ("does this knob pay on this clip?"); ``make bench`` is the
report. Several ``--a`` / ``--b`` give several overrides each.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path


def plans_digest(plans) -> str:
    """sha256 over every frame's decision and regions (boxes to 1/100 px, and where each
    came from), the regions of a frame as a set. Track ids, and the order of regions that
    follows them, are left out: they are labels, numbered in the order the planner
    happens to see tracks, which depends on how observations are batched."""
    h = hashlib.sha256()
    for p in plans:
        h.update(f"{p.index} {p.decision.value} {p.person_present};".encode())
        for r in sorted(f"{[round(float(v), 2) for v in f.box]} {f.source.value};" for f in p.faces):
            h.update(r.encode())
    return h.hexdigest()


def run_ab(clip: str, a: list[str], b: list[str], repeats: int = 8, method: str = "blur") -> dict:
    from deid.config import load_config
    from deid.io import probe
    from deid.pipeline import Components, apply_process_settings, render_segment
    from deid.types import Timings

    info = probe(clip)
    sides = {}
    for name, over in (("A", a), ("B", b)):
        cfg = load_config(None, ["audit.leak_check=false", *over])
        sides[name] = (cfg, Components.build(cfg, [method]))
    wall: dict[str, list[float]] = {"A": [], "B": []}
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    digests: dict[str, set[str]] = {"A": set(), "B": set()}
    with tempfile.TemporaryDirectory(prefix="deid-ab-") as tmp:
        for r in range(repeats):
            for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                cfg, comp = sides[name]
                apply_process_settings(cfg)  # process-wide keys (track.opencv_threads) follow the side
                out = Path(tmp) / f"{name}{r}.mp4"
                c0, t0 = time.process_time(), time.perf_counter()
                seg = render_segment(clip, info, {method: out}, cfg, comp, timings=Timings(), keep_plans=True)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                digests[name].add(plans_digest(seg.book.plans))
                out.unlink()
                print(f"run {r + 1} {name}: {wall[name][-1]:.2f} s wall, {cpu[name][-1]:.2f} CPU-s", flush=True)
    res = {
        name: {"wall_s": statistics.median(wall[name]), "cpu_s": statistics.median(cpu[name]), "runs": wall[name]}
        for name in ("A", "B")
    }
    res["speedup_b_over_a"] = res["A"]["wall_s"] / res["B"]["wall_s"]
    res["identical_plans"] = len(digests["A"] | digests["B"]) == 1
    res["distinct_plans"] = {name: len(d) for name, d in digests.items()}
    res["frames"] = info.frame_count
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clip")
    ap.add_argument("--a", action="append", default=[], help="override for side A (key=value; repeatable)")
    ap.add_argument("--b", action="append", default=[], help="override for side B (key=value; repeatable)")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--method", default="blur")
    args = ap.parse_args(argv)
    res = run_ab(args.clip, args.a, args.b, args.repeats, args.method)
    n = res["frames"]
    for name, over in (("A", args.a), ("B", args.b)):
        r = res[name]
        print(f"{name} ({' '.join(over) or 'defaults'}): median {r['wall_s']:.3f} s ({n / r['wall_s']:.1f} fps), "
              f"{r['cpu_s']:.3f} CPU-s")
    print(f"B is {res['speedup_b_over_a']:.2f}x A in wall time; same regions in every frame: {res['identical_plans']} "
          f"(distinct plans: A {res['distinct_plans']['A']}, B {res['distinct_plans']['B']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
