"""``deid anonymize INPUT... --out DIR --method blur``: de-identify videos.

Outputs are named ``<stem>.<method>.mp4`` in ``--out`` with ``<stem>.<method>.audit.json``
and ``<stem>.<method>.frames.parquet`` beside them. Several methods in one call
(``--method blur,mask``) share one analysis pass. Exit code 1 when any video failed;
the other videos still finish.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import add_config_args, help_text, load_cfg

log = logging.getLogger("deid")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "anonymize",
        help="de-identify videos (blur, pixelate, mask, swap)",
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files or folders (searched recursively)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--method",
        "-m",
        action="append",
        required=True,
        help="blur | pixelate | mask | swap; repeat or comma-separate for several (one analysis pass)",
    )
    p.add_argument("--donor", help="consenting donor for --method swap (see `deid donor list`)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never inputs)")
    p.add_argument("--skip-existing", action="store_true",
                   help="leave out videos already de-identified into --out from the same input bytes with the same "
                        "configuration (their audit records say so); rerun a folder after adding videos")
    p.add_argument("--dry-run", action="store_true", help="list what would be written, write nothing")
    p.add_argument("--keep-audio", action="store_true", help="keep the audio track (stripped by default: voices identify)")
    p.add_argument("--evaluate", action="store_true", help="also run `deid evaluate` on each result (pose OKS AP, identity)")
    p.add_argument("--records", metavar="DIR",
                   help="where --evaluate writes its tables (DIR/metrics), which name the inputs: default --out, or with "
                        "io.output_names=pseudonym <out>.records beside it (never inside --out then)")
    p.add_argument("--json", action="store_true", help="print one JSON summary for scripts instead of the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_args(p)
    p.set_defaults(func=run)


def parse_methods(values: list[str]) -> list[str]:
    """``--method`` values (repeated and/or comma-separated) -> methods, each once."""
    from ..anonymize import METHODS
    from ..archive import parse_methods as _parse
    from ..errors import ConfigError

    out = list(_parse(list(values)))
    if not out:
        raise ConfigError("no method given (--method is empty); choose from " + ", ".join(METHODS))
    return out


def run(args: argparse.Namespace) -> int:
    from ..batch import run_batch, summary_table

    cfg = load_cfg(args)
    overrides = []
    if args.keep_audio:
        overrides.append("io.keep_audio=true")
    if args.donor:
        overrides.append(f"swap.donor={args.donor}")
    if overrides:
        cfg = cfg.replace(*overrides)
    methods = parse_methods(args.method)
    if args.records and not args.evaluate:
        log.warning("--records %s: nothing to keep there without --evaluate (the outputs' audit records stay beside them)", args.records)
    results = run_batch(
        args.inputs,
        args.out,
        methods,
        cfg,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        dry_run=args.dry_run,
        progress=not (args.no_progress or args.json),
        evaluate=args.evaluate,
        records_dir=args.records,
        on_result=None if args.json else _one_line,
    )
    if args.json:
        print(json.dumps([r for r in (res.__dict__ for res in results)], default=_jsonable, indent=1))
    else:
        print(summary_table(results))
    published = not args.dry_run and any(r.status in ("done", "partial") for r in results)
    if args.evaluate and published:
        from ..records import records_folder

        records = records_folder(args.out, cfg.io.output_names, args.records)
        # the report names the inputs and shows frames: never suggested inside the folder to share
        shared = Path(args.out).resolve()
        report = records / "report.html" if records.resolve() != shared else Path("report.html")
        print(f"evaluation tables: {records / 'metrics'} (HTML report: deid report {records / 'metrics'} --out {report})",
              file=sys.stderr)
    if cfg.io.output_names == "pseudonym" and not args.json and published:
        print(f"before sharing {args.out}: deid verify {args.out}", file=sys.stderr)
    failed = [r for r in results if not r.ok]
    for r in failed:
        if r.failed_methods and r.status != "failed":  # the video's other outputs were written
            for m, f in r.failed_methods.items():
                print(f"deid: error: {_naming_input(r.input, f'{m}: ' + f['error'])}", file=sys.stderr)
        else:
            print(f"deid: error: {_naming_input(r.input, r.error)}", file=sys.stderr)
    # a video with a failed method (its other outputs written) was evaluated too
    not_evaluated = [r for r in results if (r.ok or r.status in ("done", "partial")) and r.evaluation_error]
    for r in not_evaluated:
        print(f"deid: error: {r.input}: evaluation: {r.evaluation_error}", file=sys.stderr)
    return 1 if failed or not_evaluated else 0


def _one_line(r, i: int, n: int) -> None:
    """A line as each video finishes (a log under nohup or cron shows progress as it
    happens, not only at the end); above the progress bars when they are shown."""
    from tqdm import tqdm

    name = Path(r.input).name
    if r.status in ("done", "partial", "planned"):
        made = ", ".join(o.method for o in r.outputs) or "nothing new"
        secs = r.timings.get("total")
        text = f"{r.status}: {made}" + (f" in {secs:.1f} s" if secs else "")
        if r.skipped_methods:
            text += f" ({', '.join(r.skipped_methods)} already done)"
        for m, f in r.failed_methods.items():
            text += f"; {m} failed: {f['error']}"
    elif r.status == "skipped":
        text = f"skipped: {r.error}" if r.error else "skipped"
    else:
        text = f"failed: {_naming_input(r.input, r.error)}"
    if r.evaluation_error:
        text += f"; evaluation: {r.evaluation_error}"
    tqdm.write(f"[{i}/{n}] {name}: {text}", file=sys.stderr)


def _naming_input(path: str, error: str | None) -> str:
    """One error line that names its video: most errors already start with the path; the
    others (swap training, the leak audit, a model failing) get it in front."""
    error = error or "failed"
    return error if path in error or Path(path).name in error else f"{path}: {error}"


def _jsonable(o):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "__dict__"):
        return o.__dict__
    if isinstance(o, Path):
        return str(o)
    return str(o)
