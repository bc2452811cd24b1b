"""The leak audit's frame reads on a long video: seeking (the default) vs decoding from the start.

    python -m bench.sparse_read [--minutes 20] [--repeats 3] [--clip demo_media/talking_head_1.mp4]

Loops the clip (packet copy, as ``make bench``'s length rows do) to ``--minutes``, takes
the frames the leak audit samples for a video that long (``audit.sample_frames`` evenly
spaced, raised by ``audit.sample_per_minute``) and times ``deid.io.read_frames`` on them
both ways in the same run. Prints each run, the medians and the ratio; the frames must
come out identical.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .common import OUT, REPO, median, timed
from .length import loop_clip


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clip", default=str(REPO / "demo_media" / "talking_head_1.mp4"))
    args = ap.parse_args(argv)
    from deid.audit import sample_indices
    from deid.config import Config
    from deid.io import decode, probe

    src = args.clip
    long = OUT / "long" / f"sparse_{Path(src).stem}_{args.minutes:g}min.mp4"
    loop_clip(src, long, args.minutes)
    info = probe(long)
    audit = Config().audit.for_video(info.frame_count, info.fps)
    idx = sorted(set(sample_indices(info.frame_count, audit.sample_frames)))
    spans = decode.sparse_spans(long, set(idx))
    print(f"{long.name}: {info.frame_count} frames, {info.width}x{info.height}; {len(idx)} audit samples; "
          f"{len(spans or [])} ranges read by seeking")
    got = {}

    def read(share: float):
        def run():
            decode.SPARSE_SHARE, saved = share, decode.SPARSE_SHARE
            try:
                got[share] = decode.read_frames(long, idx)
            finally:
                decode.SPARSE_SHARE = saved
        return run

    t_seq, runs_seq = timed(read(0.0), args.repeats, "from the start")
    t_seek, runs_seek = timed(read(decode.SPARSE_SHARE), args.repeats, "seeking")
    same = len(got[0.0]) == len(got[decode.SPARSE_SHARE]) == len(idx) and all(
        np.array_equal(a, b) for a, b in zip(got[0.0], got[decode.SPARSE_SHARE]))
    res = {"video": long.name, "frames": info.frame_count, "samples": len(idx), "ranges": len(spans or []),
           "from_start_s": runs_seq, "seeking_s": runs_seek, "ratio": round(median(runs_seq) / max(median(runs_seek), 1e-9), 2),
           "identical": same}
    print(f"-> from the start {t_seq:.2f} s, seeking {t_seek:.2f} s: {res['ratio']}x; frames identical: {same}")
    print(json.dumps(res))
    if not same:
        raise SystemExit("the two reads differ")
    return res


if __name__ == "__main__":
    main()
