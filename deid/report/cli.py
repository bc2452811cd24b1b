"""``deid report METRICS_DIR --out report.html``: the evaluation as one offline HTML page.

Writes the HTML (styles and images embedded; opens from a file with no network) and a
JSON summary with the same headline figures beside it (``report_summary.json`` for
``report.html``). Exit code 0 when written; 1 when the metrics directory is unusable.
``--fail-on-leak`` makes the exit code 3 when any processed frame still matches the
patient or the original face (for CI).
"""

from __future__ import annotations

import argparse

from ..commands import help_text


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write the HTML report (+ JSON summary) of an evaluation",
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("metrics_dir", metavar="METRICS_DIR", help="directory written by `deid evaluate --out`")
    p.add_argument("--out", "-o", metavar="HTML", help="HTML file to write (default: METRICS_DIR/report.html)")
    p.add_argument("--no-strips", action="store_true", help="no frame thumbnails (tables and plots only)")
    p.add_argument("--strip-videos", type=int, default=None, metavar="N",
                   help="videos that get frame strips (default 4; the lowest AP first)")
    p.add_argument("--per-video-limit", type=int, default=None, metavar="N",
                   help="above N videos use the archive layout: distributions and worst-video lists (default 6)")
    p.add_argument("--no-json", action="store_true", help="do not write the JSON summary")
    p.add_argument("--fail-on-leak", action="store_true", help="exit 3 when any processed frame still matches")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from pathlib import Path

    from ..errors import ConfigError, InvalidInputError
    from . import summary_path
    from .build import ReportOptions, build_report

    if args.fail_on_leak and args.no_json:
        raise ConfigError("--fail-on-leak reads the JSON summary; drop --no-json")
    if Path(args.metrics_dir).exists() and not Path(args.metrics_dir).is_dir():
        raise InvalidInputError(f"{args.metrics_dir}: is a file, not a metrics directory; give the folder "
                                "`deid evaluate --out` wrote")

    opts = ReportOptions()
    changes = {}
    if args.no_strips:
        changes["strips"] = False
    if args.strip_videos is not None:
        changes["max_strip_videos"] = max(0, args.strip_videos)
    if args.per_video_limit is not None:
        changes["per_video_limit"] = max(0, args.per_video_limit)
    if args.no_json:
        changes["summary_json"] = False
    opts = dataclasses.replace(opts, **changes)
    out = Path(args.out) if args.out else Path(args.metrics_dir) / "report.html"
    html = build_report(args.metrics_dir, out, options=opts)
    js = summary_path(html)
    print(f"report: {html} ({html.stat().st_size / 1024:.0f} KB)" + (f"\nsummary: {js}" if opts.summary_json else ""))
    if opts.summary_json:
        s = json.loads(js.read_text(encoding="utf-8"))
        print(f"{s['verdict']['level'].upper()}: {s['verdict']['text']}")
        v = s["verdict"]
        if args.fail_on_leak and any(v.get(k) for k in ("frames_match_patient", "frames_match_same_place",
                                                         "frames_match_original", "audit_leaks")):
            return 3
    return 0
