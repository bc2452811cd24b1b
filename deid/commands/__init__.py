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
    hand over to it here. Output streams straight through; a stop is passed on
    (:func:`run_child`)."""
    import sys

    return run_child([sys.executable, "-m", "ray_jobs.deidentify", *argv])


def run_child(cmd: list[str]) -> int:
    """Run ``cmd`` and return its exit code, passing a stop on to it and waiting while it
    unwinds. A scheduler's SIGTERM (Slurm, Kubernetes, systemd) reaches this process
    only: it is sent on to the child, whose exit code (143) is returned. Ctrl-C on a
    terminal reaches the child too (same process group), so it is not sent twice (a
    second interrupt would cut the child's clean-up short); a SIGINT sent to this process
    alone is passed on. The child is never killed: ``subprocess.call`` SIGKILLs it a
    quarter of a second after an interrupt, which for the archive job left the patients'
    swap models, face crops and reference embeddings in its work folder and its local
    Ray running."""
    import signal
    import subprocess

    from .._signals import Terminated

    p = subprocess.Popen(cmd)
    while True:
        try:
            return p.wait()
        except KeyboardInterrupt as e:
            if p.poll() is not None:
                return p.returncode
            if isinstance(e, Terminated):
                p.send_signal(signal.SIGTERM)
            elif not _terminal_interrupts_child():
                p.send_signal(signal.SIGINT)


def _terminal_interrupts_child() -> bool:
    """Whether a Ctrl-C on this process's terminal also reached its children: this
    process group is the terminal's foreground group (the children share the group)."""
    import os

    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def help_text(doc: str | None) -> str:
    """A module docstring as ``--help`` shows it: without the reST double backquotes."""
    return re.sub(r"``([^`]+)``", r"\1", doc or "")
