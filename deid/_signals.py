"""SIGTERM handled like Ctrl-C.

Batch schedulers (Slurm, Kubernetes, ``ray job stop``) stop a job with SIGTERM, whose
default action kills the process on the spot: no ``finally`` runs, so temporaries stay
behind (hidden, and removed by the next run in that folder, but there until then) and
a Ray driver leaves its local cluster running. Inside :func:`sigterm_interrupts` SIGTERM
raises :class:`Terminated` (a ``KeyboardInterrupt``) in the main thread instead, so
the same clean-up as for Ctrl-C runs."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM inside :func:`sigterm_interrupts`."""


_received = [False]


def _raise(signum, frame) -> None:
    _received[0] = True
    raise Terminated()


def terminated(exc: BaseException | None = None) -> bool:
    """Whether an interrupt came from SIGTERM: the exception is :class:`Terminated`, or
    SIGTERM arrived and a library re-raised it as a plain ``KeyboardInterrupt`` (Ray
    does, cancelling its tasks)."""
    return isinstance(exc, Terminated) or _received[0]


_active = [0]  # nesting depth of sigterm_interrupts() blocks that set the handler


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated`; the previous handler is put
    back afterwards. A no-op outside the main thread (only it may set handlers)."""
    previous = None
    if not _active[0]:
        _received[0] = False  # a new run: an earlier SIGTERM (tests call main() again) is not this one's
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            previous = signal.signal(signal.SIGTERM, _raise)
    if previous is not None:
        _active[0] += 1
    try:
        yield
    finally:
        if previous is not None:
            _active[0] -= 1
            signal.signal(signal.SIGTERM, previous)


def rearm() -> None:
    """Set the handler again inside a :func:`sigterm_interrupts` block, after a library
    replaced it: ``ray.init`` installs a native handler that logs and kills the driver
    (leaving its unfinished files and an unfinished status row behind)."""
    if _active[0] and threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGTERM, _raise)
