"""The final report: a METRICS_DIR (what ``deid evaluate`` wrote) -> one offline HTML file
with the paper-style AP table, the identity table, clinical feature errors, plots, frame
strips of processed frames, per-video status, and the run's configuration; plus a JSON
summary beside it for CI and scripts. See docs/report.md.

>>> from deid.report import build_report
>>> build_report("demo_out/metrics", "demo_out/report.html")  # doctest: +SKIP
PosixPath('demo_out/report.html')

Modules: :mod:`.data` (reading the METRICS_DIR), :mod:`.tables` (aggregation),
:mod:`.plots` (matplotlib -> PNG), :mod:`.strips` (face-checked thumbnails),
:mod:`.html` (page building blocks), :mod:`.build` (the entry point), :mod:`.cli`.
Heavy imports (matplotlib, mediapipe, cv2) happen when a report is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .build import ReportOptions, build_report  # noqa: F401

__all__ = ["build_report", "ReportOptions", "summary_path"]


def summary_path(out_html: Any):
    """Where :func:`build_report` writes the JSON summary for ``out_html``:
    ``report.html`` -> ``report_summary.json`` beside it."""
    from pathlib import Path

    p = Path(out_html)
    return p.with_name(p.stem + "_summary.json")


def __getattr__(name: str) -> Any:
    if name in ("build_report", "ReportOptions"):
        from . import build

        return getattr(build, name)
    raise AttributeError(name)
