"""Silence native start-up logging (MediaPipe/TFLite/absl write to file descriptor 2
before any Python logging exists). Used only around model construction and warm-up,
so genuine errors later in a run still reach the terminal; Python exceptions raised
inside the block propagate as usual."""

from __future__ import annotations

import contextlib
import os
import sys
import threading

_lock = threading.RLock()  # re-entrant: a silenced block may build models that silence their own start-up


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool | None = None):
    if enabled is None:
        enabled = os.environ.get("DEID_NATIVE_LOGS", "") not in ("1", "true", "yes")
    if not enabled:
        yield
        return
    with _lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no real fd 2 (e.g. some notebook kernels)
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
