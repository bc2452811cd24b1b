"""Error hierarchy. A message says what failed, on which file or frame, and what to do."""

from __future__ import annotations

import errno
import os


class DeidError(Exception):
    """Base class for every error deid raises on purpose."""

    #: short machine-readable kind, written into audit records and status tables
    kind = "error"


class InvalidInputError(DeidError):
    """The input is missing, empty, not a video, or would be overwritten."""

    kind = "invalid_input"


class VideoDecodeError(DeidError):
    """The container opened but the stream could not be decoded (fully)."""

    kind = "decode_error"

    def __init__(self, message: str, *, last_good_frame: int | None = None):
        super().__init__(message)
        self.last_good_frame = last_good_frame


class VideoEncodeError(DeidError):
    kind = "encode_error"


class ModelWeightsError(DeidError):
    """A model file is missing or does not have the expected signature."""

    kind = "model_weights"


class ConfigError(DeidError):
    kind = "config"


class OutputExistsError(InvalidInputError):
    kind = "output_exists"


class LeakDetectedError(DeidError):
    """The leak audit found an identifiable face in the output."""

    kind = "leak"


class ConsentError(DeidError):
    """A face-swap donor has no valid consent record."""

    kind = "consent"


class OutputWriteError(DeidError):
    """The output's storage refused the write: full, over quota, read-only, file too big."""

    kind = "output_write"


#: errors that only writing raises and that say the storage, not deid, is at fault
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def one_line(e: BaseException, limit: int | None = 300) -> str:
    """``e``'s message on one line (a library's own text may span several: a traceback of
    onnxruntime, OpenCV's file/line banner), at most ``limit`` characters: for an error
    line that names the model file and what to do."""
    msg = " ".join(str(e).split())
    return msg if limit is None else msg[:limit]


def storage_error(e: BaseException, what: str) -> OutputWriteError | None:
    """``e`` as an :class:`OutputWriteError` saying ``what: <reason>`` (no temporary's
    name, no traceback: the user's remedy is the storage) when it is a storage failure,
    else None."""
    if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
        return OutputWriteError(f"{what}: {os.strerror(e.errno)}")
    return None
