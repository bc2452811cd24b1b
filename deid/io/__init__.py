"""Video I/O: probe, streaming decode, metadata-free atomic encode, output safety."""

from .atomic import atomic_output, check_output_path, remove_stale_partials, write_text_atomic
from .decode import FrameBatch, VideoReader, iter_frames, read_frames, upright
from .encode import VideoWriter, container_tags, has_sensitive_tags
from .probe import VIDEO_EXTENSIONS, probe, scan_stream

__all__ = [
    "VIDEO_EXTENSIONS",
    "FrameBatch",
    "VideoReader",
    "VideoWriter",
    "atomic_output",
    "check_output_path",
    "container_tags",
    "has_sensitive_tags",
    "iter_frames",
    "probe",
    "read_frames",
    "remove_stale_partials",
    "scan_stream",
    "upright",
    "write_text_atomic",
]
