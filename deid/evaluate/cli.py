"""``deid evaluate --original VIDEO --processed VIDEO... --out DIR``: pose OKS AP per
body region, identity leaks and a re-identification attack, written as the METRICS_DIR
tables (see docs/evaluation.md) and printed as a paper-style table.

A processed video's method comes from its name (``clip.blur.mp4`` -> blur, as
``deid anonymize`` names outputs) or from ``METHOD=PATH``. The original's keypoints
are the ground truth; the table names the pose estimator and identity model behind
the numbers. Exit code 1 when an output could not be evaluated (the others still are).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..commands import help_text


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..commands import add_config_args

    p = sub.add_parser(
        "evaluate",
        help="measure pose preservation (OKS AP) and re-identification of de-identified videos",
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--original", required=True, metavar="VIDEO", help="the original video (its poses are the ground truth)")
    p.add_argument("--processed", required=True, nargs="+", metavar="VIDEO",
                   help="de-identified versions: <stem>.<method>.mp4 or METHOD=PATH")
    p.add_argument("--reference", nargs="+", default=[], metavar="PHOTO",
                   help="photos of the patient (default: the original video's own faces)")
    p.add_argument("--target-faces", metavar="DIR|VIDEO", help="the swap donor's photos (folder) or video")
    p.add_argument("--distractors", nargs="*", metavar="PHOTO|VIDEO",
                   help="other identities for the re-identification gallery, PATH or NAME=PATH, one identity each "
                        "(default: the demo clips and the packaged donor that are not the patient; give none to disable)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="METRICS_DIR to write (shared by several videos)")
    p.add_argument("--video-id", help="id of this video in the tables (default: the original's file stem)")
    p.add_argument("--json", action="store_true", help="print the summary rows as JSON instead of the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..commands import load_cfg
    from ..errors import DeidError
    from .api import evaluate_outputs, parse_processed
    from .store import jsonable

    out = Path(args.out)
    if out.exists() and not out.is_dir():  # else mkdir's "File exists: X" reaches the user
        raise DeidError(f"--out {out} is a file; give the folder the metrics tables go to (METRICS_DIR)")
    cfg = load_cfg(args)
    processed = parse_processed(args.processed)
    res = evaluate_outputs(
        args.original,
        processed,
        args.out,
        cfg,
        references=args.reference,
        target_faces=args.target_faces,
        distractors=args.distractors,
        video_id=args.video_id,
        progress=False if args.no_progress else None,
    )
    if args.json:
        print(json.dumps(jsonable({"video": res["video"], "metrics_dir": res["metrics_dir"], "summary": res["summary"],
                                   "errors": res["errors"], "references": res["references"]}), allow_nan=False))
    else:
        print(res["table"])
        print(f"\ntables written to {res['metrics_dir']}")
    for m, e in res["errors"].items():
        print(f"deid: error: {m}: {e}", file=sys.stderr)
    return 1 if res["errors"] else 0
