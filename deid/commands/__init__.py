"""Sub-commands of the ``deid`` console script (one module each, see :mod:`deid.cli`)."""

from __future__ import annotations

import argparse
import re


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE", help="YAML config (default: built-in defaults; see configs/default.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set track.max_gap=10 (repeatable)",
    )


def load_cfg(args: argparse.Namespace):
    from ..config import load_config

    return load_config(getattr(args, "config", None), getattr(args, "overrides", []) or [])


def run_ray_job(argv: list[str]) -> int:
    """Run the archive job, ``python -m ray_jobs.deidentify ARGV``, in its own process and
    return its exit code. The library never imports ray: the Ray adapter lives in
    ``ray_jobs/`` and the CLI commands that need it (``deid archive``, ``deid demo``)
    hand over to it here. Output streams straight through."""
    import subprocess
    import sys

    try:
        return subprocess.call([sys.executable, "-m", "ray_jobs.deidentify", *argv])
    except KeyboardInterrupt:  # the job got the same SIGINT; it says how to resume
        return 130


def help_text(doc: str | None) -> str:
    """A module docstring as ``--help`` shows it: without the reST double backquotes."""
    return re.sub(r"``([^`]+)``", r"\1", doc or "")
