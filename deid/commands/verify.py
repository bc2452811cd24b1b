"""``deid verify DIR...``: is an output folder ready to share?

Every video must have its audit record beside it, be unchanged since deid wrote it (the
record's sha256), be finished, have passed the leak audit and carry no identifying
metadata; nothing in the folder may name the inputs or show their frames (an archive's
status table, the evaluation's tables and report, raw videos or photos under any name, a
link to another folder). Prints the findings; exit code 1 when any is an error (with
``--strict``, a warning too). Changes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import help_text


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check an output folder before sharing it (audit records, hashes, leaks, stray records)",
                       description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", metavar="DIR")
    p.add_argument("--no-hash", action="store_true", help="do not re-hash the outputs (quicker; a changed file goes unnoticed)")
    p.add_argument("--strict", action="store_true", help="fail on warnings too")
    p.add_argument("--json", action="store_true", help="one JSON object per folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..verify import verify_folder

    rc = 0
    for d in args.folders:
        rep = verify_folder(d, hashes=not args.no_hash)
        bad = rep.errors or (args.strict and rep.warnings)
        rc = 1 if bad else rc
        if args.json:
            print(json.dumps(rep.to_dict()))
            continue
        for f in rep.findings:
            print(f"{f.level.upper():7}  {f.path}: {f.what}", file=sys.stdout)
        verdict = "NOT ready to share" if bad else "ready to share" + (" (after reading the warnings)" if rep.warnings else "")
        print(f"{d}: {rep.outputs} de-identified video(s) verified; {len(rep.errors)} error(s), "
              f"{len(rep.warnings)} warning(s): {verdict}")
    return rc
