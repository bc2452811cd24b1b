"""Keyframe scheduling (``track.keyframe_every``): speed against coverage, per clip.

    python -m bench.keyframes [--every 1,2,3,4] [--clips demo,talking,shared]
    python -m bench.keyframes --every 1 --compare "detect.mediapipe_models=short" [--compare ...]

For each clip and each k, the blur path runs with the leak audit off (models built once,
before the clock starts) and its per-frame plans are kept. Coverage is measured against
the k = 1 run on the same clip (every frame analysed): in each frame, the area deid
hides with k = 1 (the ellipses inscribed in its regions, or the whole frame when it
fails closed) and the share of it that the k run also hides. A frame counts as
*uncovered* when less than 90 % of the k = 1 area is hidden; the figure that matters for
privacy is that count, next to the speed-up.

``--compare OVERRIDES`` (repeatable; space-separated ``key=value`` settings) adds any
other schedule as a variant, measured the same way against the same reference: e.g. one
MediaPipe model instead of two, or pose on every other missed frame. Each variant builds
its own models. Wall times are the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import DEMO_MEDIA, OUT, SHARED_MEDIA

UNCOVERED = 0.9


def hidden_mask(plan, width: int, height: int) -> np.ndarray:
    """What a plan hides: inscribed ellipses of its regions, or the whole frame when the
    frame fails closed (redacted)."""
    import cv2

    m = np.zeros((height, width), np.uint8)
    if plan.decision.value == "fail_closed":
        m[:] = 1
        return m.astype(bool)
    for f in plan.faces:
        x1, y1, x2, y2 = (float(v) for v in f.box)
        c = (int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2)))
        ax = (max(1, int(round((x2 - x1) / 2))), max(1, int(round((y2 - y1) / 2))))
        cv2.ellipse(m, c, ax, 0, 0, 360, 1, -1)
    return m.astype(bool)


def coverage(ref_plans, plans, width: int, height: int) -> dict:
    """Per-frame share of the reference's hidden area that ``plans`` also hide. Frames
    the reference redacts whole (fail closed) are counted apart: there the comparison is
    between a redacted frame and regions, not between two sets of regions."""
    by = {p.index: p for p in plans}
    shares, worst, extra = [], [], []
    ref_fc = fc_to_regions = 0
    for rp in ref_plans:
        p = by.get(rp.index)
        if rp.decision.value == "fail_closed":
            ref_fc += 1
            fc_to_regions += int(p is None or p.decision.value != "fail_closed")
            continue
        a = hidden_mask(rp, width, height)
        b = hidden_mask(p, width, height) if p is not None else np.zeros_like(a)
        extra.append(int(b.sum()) - int(a.sum()))
        if a.any():
            v = float((a & b).sum() / a.sum())
            shares.append(v)
            worst.append((round(v, 3), rp.index))
    s = np.asarray(shares) if shares else np.ones(1)
    return {
        "frames_with_regions": len(shares),
        "uncovered_frames": int((s < UNCOVERED).sum()) if shares else 0,
        "min_share": round(float(s.min()), 3),
        "mean_share": round(float(s.mean()), 4),
        "worst_frames": sorted(worst)[:5],
        "ref_fail_closed_frames": ref_fc,
        "ref_fail_closed_now_regions": fc_to_regions,
        "extra_area_px_per_frame": round(float(np.mean(extra)), 1) if extra else 0.0,
    }


def clips(which: str) -> list[Path]:
    out = []
    for w in which.split(","):
        if w == "demo":
            out.append(DEMO_MEDIA / "flipping_a_pancake.mp4")
        elif w == "talking":
            out += [DEMO_MEDIA / "talking_head_1.mp4", DEMO_MEDIA / "talking_head_2.mp4"]
        elif w == "shared":
            v = SHARED_MEDIA / "video"
            if v.is_dir():
                out += [v / "flipping_a_pancake.mkv", *sorted((v / "rotation").glob("*.mov"))]
            else:
                print(f"shared media not found at {v}: skipped")
        elif w:
            out.append(Path(w))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", default="1,2,3,4")
    ap.add_argument("--clips", default="demo,talking,shared")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides (key=value)")
    ap.add_argument("--compare", action="append", default=[], metavar="OVERRIDES",
                    help="another schedule to measure against the k = 1 run: space-separated key=value settings (repeatable)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per variant and clip; the fastest is kept")
    ap.add_argument("--json", type=Path, default=OUT / "keyframes.json")
    args = ap.parse_args(argv)
    from deid.config import Config
    from deid.pipeline import Components, process_video

    ks = [int(x) for x in args.every.split(",")]
    if ks[0] != 1:
        ks = [1] + ks
    base = Config().replace("audit.leak_check=false", *args.set)
    variants: list[tuple[Any, Any, bool]] = [(k, base.replace(f"track.keyframe_every={k}"), False) for k in ks]
    variants += [(c, base.replace(*c.split()), True) for c in args.compare]
    comp = Components.build(base, ["blur"])
    tmp = Path(tempfile.mkdtemp(prefix="deid-keyframes-"))
    results: dict = {}
    try:
        built = {key: (Components.build(cfg, ["blur"]) if own else comp) for key, cfg, own in variants}
        for clip in clips(args.clips):
            rows: dict = {}
            ref = None
            for key, cfg, _ in variants:
                wall = float("inf")
                for _ in range(max(1, args.repeats)):
                    t = time.perf_counter()
                    r = process_video(clip, tmp, ["blur"], cfg, components=built[key], overwrite=True, sha256=False, keep_plans=True)
                    wall = min(wall, time.perf_counter() - t)
                    if r.status != "done":
                        raise RuntimeError(f"{clip.name} {key}: {r.status} {r.error}")
                w, h = r.info.size
                row = {
                    "frames": r.frames_read,
                    "wall_s": round(wall, 3),
                    "fps": round(r.frames_read / wall, 1),
                    "analyze_s": round(r.timings.get("analyze", 0.0), 3),
                    "fail_closed": int(r.counts.get("frames_fail_closed", 0)),
                    **{c: int(r.counts.get(c, 0)) for c in ("keyframes", "keyframe_gap_frames_skipped", "keyframe_gap_frames_analysed", "pose_runs")},
                }
                if ref is None:
                    ref = r.plans
                    ref_wh = (w, h)
                else:
                    row.update(coverage(ref, r.plans, *ref_wh))
                    row["speedup"] = round(rows[1]["wall_s"] / wall, 2)
                rows[key] = row
                label = f"k={key}" if isinstance(key, int) else repr(key)
                print(f"{clip.name} {label}: {json.dumps(row)}", flush=True)
            results[clip.name] = rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _summary(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    return results


def _summary(results: dict) -> None:
    """Per variant, over all clips: total wall time against the reference's, and frames
    left below 90 % of the reference's hidden area."""
    if not results:
        return
    keys = list(next(iter(results.values())))
    ref_wall = sum(rows[keys[0]]["wall_s"] for rows in results.values())
    print(f"\nall clips ({len(results)}): reference k=1 {ref_wall:.2f} s")
    for key in keys[1:]:
        wall = sum(rows[key]["wall_s"] for rows in results.values())
        unc = sum(rows[key].get("uncovered_frames", 0) for rows in results.values())
        label = f"k={key}" if isinstance(key, int) else repr(key)
        print(f"  {label}: {wall:.2f} s ({ref_wall / wall:.2f}x), {unc} frames uncovered")


if __name__ == "__main__":
    main()
