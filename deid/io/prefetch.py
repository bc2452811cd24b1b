"""Decode ahead in a background thread (FFmpeg releases the GIL while the models run)."""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any, Iterable, Iterator

__all__ = ["prefetch"]


def prefetch(it: Iterable[Any], maxsize: int = 2, name: str = "deid-reader") -> Iterator[Any]:
    """Yield the items of ``it``, produced by a background thread at most ``maxsize``
    ahead. An error in ``it`` is raised here, where the items are consumed; closing the
    generator early (a ``break``, an error in the consumer) stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    done = object()
    stop = threading.Event()

    def worker() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
            q.put(e)

    t = threading.Thread(target=worker, name=name, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        t.join(timeout=5)
