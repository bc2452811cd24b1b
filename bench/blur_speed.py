"""Blur path vs a bare decode+encode of the same 640x360 clip, in one run (issue 3).

    python -m bench.blur_speed [--repeats 3]

Prints each run, the medians, and the ratio (deid fps / bare fps). The streaming path is
timed with the leak audit off and on: the audit re-identifies a fixed number of sampled
frames per output (``audit.sample_frames``; more past 12 minutes,
``audit.sample_per_minute``), a per-video cost reported separately.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from .common import OUT, REPO, bare_transcode, make_clip, timed


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clips", default="pancake,talking")
    args = ap.parse_args(argv)
    from deid.config import Config
    from deid.pipeline import Components, process_video

    sources = {
        "pancake": REPO / "demo_media" / "flipping_a_pancake.mp4",
        "talking": REPO / "demo_media" / "talking_head_1.mp4",
    }
    results = {}
    tmp = Path(tempfile.mkdtemp(prefix="deid-bench-"))
    try:
        for name in args.clips.split(","):
            clip = make_clip(sources[name], OUT / f"{name}_640x360.mp4")
            from deid.io import probe

            n = probe(clip).frame_count
            print(f"{name}: {clip} ({n} frames, 640x360)")
            bare, _ = timed(lambda: bare_transcode(clip, tmp / "bare.mp4"), args.repeats, "bare decode+encode")
            row = {"frames": n, "bare_fps": n / bare}
            for label, over in (("blur", ["audit.leak_check=false"]), ("blur+audit", [])):
                cfg = Config().replace(*over)
                comp = Components.build(cfg, ["blur"])

                def once():
                    r = process_video(clip, tmp, ["blur"], cfg, components=comp, overwrite=True, sha256=False)
                    assert r.status == "done", r.error

                med, _ = timed(once, args.repeats, label)
                row[f"{label}_fps"] = n / med
                row[f"{label}_ratio"] = bare / med
            results[name] = row
            print(f"  -> bare {row['bare_fps']:.1f} fps | blur {row['blur_fps']:.1f} fps (ratio {row['blur_ratio']:.2f}) | "
                  f"blur+audit {row['blur+audit_fps']:.1f} fps (ratio {row['blur+audit_ratio']:.2f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
