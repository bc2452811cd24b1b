"""``deid evaluate``: how much pose and motion survive de-identification, and whether
anyone is still recognisable.

Library layout (one stage per module, so a distributed runner can put the expensive
stages in actor pools and the cheap ones in tasks):

- :mod:`.extract` — (1) keypoints and (2) faces + embeddings of a video or frame range;
- :mod:`.references` — patient, target and distractor embeddings, the attack gallery;
- :mod:`.score` — (3) one (video, method) scored from extracted arrays into table rows;
- :mod:`.store` — the METRICS_DIR layout, per-video writes and (4) :func:`aggregate`;
- :mod:`.api` — :func:`evaluate_outputs`, the whole thing for one video;
- :mod:`.cli` — the ``deid evaluate`` command; :mod:`.table` — the printed table;
- :mod:`.bench` — throughput of the evaluation's models (``python -m deid.evaluate.bench``).

Importing this package is cheap (argparse only); the names below load their module
on first use.
"""

from __future__ import annotations

from typing import Any

from .cli import add_parser, run

_LAZY = {
    "evaluate_outputs": ".api",
    "parse_processed": ".api",
    "method_from_name": ".api",
    "extract": ".extract",
    "extract_keypoints": ".extract",
    "extract_faces": ".extract",
    "VideoKeypoints": ".extract",
    "VideoFaces": ".extract",
    "References": ".references",
    "build_references": ".references",
    "score_method": ".score",
    "MethodScores": ".score",
    "aggregate": ".store",
    "write_method_scores": ".store",
    "write_status": ".store",
    "write_status_from_audits": ".store",
    "write_video_entry": ".store",
    "EvalModels": ".models",
    "format_table": ".table",
}

__all__ = ["add_parser", "run", *_LAZY]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'deid.evaluate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value
