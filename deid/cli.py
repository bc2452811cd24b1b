"""``deid`` console script.

Each sub-command lives in its own module which defines ``add_parser(subparsers)``; the
parser it adds sets ``func=run`` with ``run(args) -> int`` (the exit code). Command
modules keep their top-level imports light (argparse only) so ``deid --help`` is fast;
heavy libraries are imported inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import DeidError

#: (module, description) — order is the order shown in --help
COMMANDS: list[str] = [
    "deid.commands.anonymize",  # anonymize
    "deid.commands.probe",  # probe
    "deid.commands.overlays",  # overlays (burnt-in text, for anonymize.fixed_regions)
    "deid.commands.verify",  # verify (an output folder before sharing it)
    "deid.evaluate",  # evaluate
    "deid.swap.cli",  # swap train, donor add/list/check
    "deid.report.cli",  # report
    "deid.commands.archive",  # archive (Ray)
    "deid.commands.demo",  # demo
    "deid.commands.doctor",  # doctor
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deid",
        description="De-identify medical videos while keeping the motion clinicians need.",
    )
    p.add_argument("--version", action="version", version=f"deid {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in COMMANDS:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name and mod_name.startswith(e.name):
                continue  # command not built yet
            raise
        mod.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the raw command line, for commands that hand it to another program
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ._signals import sigterm_interrupts, terminated

    try:
        with sigterm_interrupts():
            rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that has gone shows here, not as a traceback at exit
        return rc
    except DeidError as e:
        print(f"deid: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `deid probe *.mp4 | head`: the reader has gone, nothing to report
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141  # 128 + SIGPIPE, as a shell reports it
    except OSError as e:  # the file system said no (permissions, full, read-only): not deid's bug
        logging.getLogger("deid").debug("OSError", exc_info=True)
        where = f": {e.filename}" if e.filename else ""
        print(f"deid: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        if terminated(e):
            print("deid: terminated (SIGTERM); unfinished outputs removed", file=sys.stderr)
            return 143
        print("deid: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
