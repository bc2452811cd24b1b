"""Anonymizers behind one interface: ``apply(frame, faces) -> frame``."""

from __future__ import annotations

from typing import Any

from ..registry import ANONYMIZERS
from .base import redact_frame

METHODS = ("blur", "pixelate", "mask", "swap")


def build_anonymizer(method: str, cfg: Any = None, **kw: Any):
    """Build the anonymizer ``method`` with its section of ``cfg.anonymize`` (or ``cfg.swap``)."""
    if cfg is not None and method in ("blur", "pixelate", "mask"):
        kw.setdefault("cfg", getattr(cfg.anonymize, method))
    elif cfg is not None and method == "swap":
        kw.setdefault("cfg", cfg)
    return ANONYMIZERS.create(method, **kw)


__all__ = ["METHODS", "build_anonymizer", "redact_frame"]
