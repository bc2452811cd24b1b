"""``deid probe VIDEO|FOLDER...``: what a video is (size, rate, frames, rotation, audio, VFR);
folders are searched recursively, as by ``deid anonymize``."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="describe videos (size, fps, frames, rotation, audio, VFR)")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files, or folders (searched recursively by extension)")
    p.add_argument("--json", action="store_true", help="one JSON object per line (a file that failed: its path and error)")
    p.set_defaults(func=run)
    _hint_leading_dash(p)


def _hint_leading_dash(p: argparse.ArgumentParser) -> None:
    """argparse reads ``-clip.mp4`` as an option and then finds no VIDEO: say how to name it."""
    error = p.error

    def hinted(message: str):
        if "arguments are required" in message:
            message += " (a file whose name starts with '-' goes after --, as in: deid probe -- -clip.mp4, or ./-clip.mp4)"
        error(message)

    p.error = hinted  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from ..errors import DeidError
    from ..io import probe

    from ..pipeline import discover_inputs

    rc = 0
    videos = discover_inputs(args.videos)
    if not videos:
        print(f"deid: error: no video files found in {', '.join(args.videos)}", file=sys.stderr)
        return 1
    for v in videos:
        try:
            info = probe(v)
        except DeidError as e:
            print(f"deid: error: {e}", file=sys.stderr)
            if args.json:  # a script reading the lines sees every file it asked about
                print(json.dumps({"path": str(v), "error": str(e)}))
            rc = 1
            continue
        if args.json:
            print(json.dumps(info.to_dict()))
        else:
            print(
                f"{info.path}: {info.width}x{info.height} (upright; rotation {info.rotation}°), {info.fps:.3f} fps, "
                f"{info.frame_count} frames{'' if info.frame_count_exact else ' (estimated)'}, {info.duration:.2f} s, "
                f"{info.codec}/{info.pix_fmt}, audio: {'yes' if info.has_audio else 'no'}, "
                f"{'variable' if info.is_vfr else 'constant'} frame rate"
                + (f" ({info.frame_count / info.duration:.3f} fps on average)" if info.is_vfr and info.duration > 0 else "")
                + (f"; {info.other_video_streams} more video stream(s), which deid does not write" if info.other_video_streams else "")
            )
    return rc
