"""Output safety: atomic publication, never over an input, never over an output by accident.

A file being written is a hidden temporary in the *output* directory
(``.clip.blur.mp4.partial-<random>``); it is renamed to its final name only when
complete, and removed when anything fails. So a crash never leaves a half-written file
that looks finished, and readers of the output directory never see partial files under
a final name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import InvalidInputError, OutputExistsError

PARTIAL_MARK = ".partial-"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], *, overwrite: bool = False) -> Path:
    """Refuse to write over an input (whatever the flags) or over an existing output
    (unless ``overwrite``)."""
    out_p = Path(out)
    out_abs = out_p.resolve()
    for i in inputs:
        ip = Path(i)
        if ip.resolve() == out_abs or _same_file(ip, out_p):
            raise InvalidInputError(f"{out_p}: refusing to write an output over its input {ip}")
    if out_p.exists() and not overwrite:
        raise OutputExistsError(f"{out_p}: output exists; pass --overwrite to replace it")
    if out_p.exists() and out_p.is_dir():
        raise InvalidInputError(f"{out_p}: output path is a directory")
    return out_p


def _owner_tag() -> str:
    """``<host hash>p<pid>``: which process writes a temporary (see :func:`remove_stale_partials`)."""
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6] + f"p{os.getpid()}"


NAME_MAX = 255  # bytes in one file name (ext4, xfs, btrfs, NTFS in UTF-16 units, APFS)


def temp_path_for(final: str | os.PathLike) -> Path:
    """A hidden temporary beside ``final``: ``.<name>.partial-<owner>-<random><suffix>``;
    a long name (e.g. 80 CJK characters, 240 bytes) is shortened so that the
    temporary's own name still fits the file system."""
    f = Path(final)
    tail = f"{PARTIAL_MARK}{_owner_tag()}-{secrets.token_hex(4)}{f.suffix}"
    name = f.name
    room = NAME_MAX - 1 - len(tail.encode())
    if len(name.encode()) > room:
        name = name.encode()[:room].decode("utf-8", "ignore")
    return f.with_name(f".{name}{tail}")


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` running on this host (ours or another user's)?"""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _owner_alive(p: Path) -> bool:
    """Is the process that writes temporary ``p`` still running on this host? Unknown
    owners (another host, an old name without a tag) count as not running."""
    tag = p.name.split(PARTIAL_MARK, 1)[-1].split("-", 1)[0]
    host, _, pid = tag.partition("p")
    return pid.isdigit() and host == _owner_tag().partition("p")[0] and pid_alive(int(pid))


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike, *, allow_empty: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success rename it into place.
    Nothing written to the temporary is an error, unless ``allow_empty`` (then nothing
    is published)."""
    final_p = Path(final)
    final_p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final_p)
    try:
        yield tmp
        if not tmp.exists():
            if allow_empty:
                return
            raise RuntimeError(f"{tmp}: nothing was written")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final_p)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(final: str | os.PathLike, text: str) -> Path:
    with atomic_output(final) as tmp:
        Path(tmp).write_text(text)
    return Path(final)


def _this_host(p: Path) -> bool:
    """Was temporary ``p`` written by a process of this host (its name's tag)?"""
    tag = p.name.split(PARTIAL_MARK, 1)[-1].split("-", 1)[0]
    return tag.partition("p")[0] == _owner_tag().partition("p")[0]


def remove_stale_partials(directory: str | os.PathLike, *, recursive: bool = False, keep_live: bool = True,
                          this_host_only: bool = False) -> list[Path]:
    """Delete temporaries left by a killed process (they never carry a final name), in
    ``directory`` (and its sub-folders when ``recursive``). With ``keep_live`` a
    temporary whose writer still runs on this host — another run into the same folder —
    is left alone; with ``this_host_only`` so is every temporary written on another
    host (whose writer may be running: a folder shared over the network)."""
    d = Path(directory)
    removed = []
    if d.is_dir():
        for p in (d.rglob if recursive else d.glob)(f".*{PARTIAL_MARK}*"):
            if keep_live and _owner_alive(p):
                continue
            if this_host_only and not _this_host(p):
                continue
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed
