"""``deid overlays VIDEO...``: find text burnt into the picture, for ``anonymize.fixed_regions``.

Samples frames, finds letters with OpenCV's stroke-width transform and keeps the lines
that stay at the same place in most frames (a device's name / ID / date banner, a
clock). Prints each video's proposed boxes and the ``--set`` line that fills them on
every frame; ``--sheet DIR`` writes a picture of each video with its boxes to review
first; ``--manifest CSV`` writes an archive manifest with each video's own boxes (its
``fixed_regions`` column), for ``deid archive``. A proposal, not a guarantee: small or low-contrast text can be missed in part
(the boxes carry a margin), and text in a room filmed by a still camera is proposed too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import help_text


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("overlays", help="find burnt-in text (name / date banners) to fill with anonymize.fixed_regions",
                       description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or folders (searched recursively)")
    p.add_argument("--samples", type=int, default=24, help="frames sampled per video (default 24)")
    p.add_argument("--share", type=float, default=0.5, help="a letter must be found in this share of them (default 0.5)")
    p.add_argument("--sheet", metavar="DIR", help="write <stem>.overlays.png per video: a frame with the boxes drawn")
    p.add_argument("--manifest", metavar="CSV",
                   help="also write an archive manifest (video, fixed_regions: each video's own boxes) to review and "
                        "pass to `deid archive --manifest`; relative paths start at the CSV's folder")
    p.add_argument("--json", action="store_true", help="one JSON object per video")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError, DeidError
    from ..io import probe
    from ..overlays import draw_overlays, find_overlays, merge_fractions

    if args.samples < 1 or not 0 < args.share <= 1:
        raise ConfigError("--samples must be >= 1 and --share in (0, 1]")
    from ..pipeline import discover_inputs

    rc = 0
    every: list[tuple[float, float, float, float]] = []
    rows: list[tuple[str, str]] = []  # (video, its boxes) for --manifest
    for v in discover_inputs(args.videos):
        try:
            found, frame = find_overlays(v, samples=args.samples, share=args.share)
        except DeidError as e:
            print(f"deid: error: {e}", file=sys.stderr)
            rc = 1
            continue
        sheet = draw_overlays(frame, found, Path(args.sheet) / f"{Path(v).stem}.overlays.png") if args.sheet else None
        every += [o.fraction for o in found]
        rows.append((str(v), json.dumps([list(o.fraction) for o in found]) if found else ""))
        if args.json:
            print(json.dumps({"video": str(v), "regions": [{"box_px": list(o.box), "fixed_region": list(o.fraction),
                                                             "frames_with_text": o.frames} for o in found],
                              "sheet": str(sheet) if sheet else None}))
            continue
        n = min(args.samples, probe(v).frame_count)
        few = f" (only {n} frame(s): text in a still scene counts as an overlay too)" if n < 8 else ""
        print(f"{v}: " + (f"{len(found)} text region(s)" if found else f"no text found in {n} sampled frame(s)")
              + few + (f"; picture: {sheet}" if sheet else ""))
        for i, o in enumerate(found, 1):
            x0, y0, x1, y1 = o.box
            print(f"  {i}  x {x0}-{x1}, y {y0}-{y1} px  ->  {list(o.fraction)}")
    if args.manifest:
        _write_manifest(Path(args.manifest), rows)
        if not args.json:
            print(f"manifest: {args.manifest} ({len(rows)} video(s); review the boxes, then "
                  f"`deid archive --manifest {args.manifest} --out DIR`)")
    if every and not args.json:
        regions = ", ".join(str(list(r)) for r in merge_fractions(every))
        print("to fill them on every frame of every output (review them first):\n"
              f"  --set 'anonymize.fixed_regions=[{regions}]'")
    return rc


def _write_manifest(path: Path, rows: list[tuple[str, str]]) -> None:
    """``video,fixed_regions`` rows, paths relative to the manifest's folder where they
    lie inside it (the archive root by default), written atomically."""
    import csv
    import io
    import os

    from ..io.atomic import write_text_atomic

    base = path.expanduser().resolve().parent
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["video", "fixed_regions"])
    for v, regions in rows:
        p = Path(v).expanduser().resolve()
        rel = os.path.relpath(p, base) if base in p.parents else str(p)
        w.writerow([Path(rel).as_posix(), regions])
    base.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, buf.getvalue())
