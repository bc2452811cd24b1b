"""Identity encoders behind :class:`deid.protocols.IdentityEncoder`: embed faces so
that "is this still the patient?" becomes a distance and a threshold.

Backends (registered in :mod:`deid.registry`):
- ``dlib`` (default): dlib's 128-d ResNet, Euclidean distance, same person below 0.6;
- ``arcface`` (optional): a user-supplied ArcFace ONNX via InsightFace's model zoo,
  cosine distance (``$DEID_ARCFACE_MODEL`` / ``evaluate.identity.model_path``).

Heavy imports (dlib, insightface) happen only when a backend is built.
"""

from __future__ import annotations

from typing import Any

from .base import cosine_distance, euclidean_distance


def build_identity_encoder(cfg: Any) -> Any:
    """Encoder from an :class:`deid.config.IdentityConfig` (``evaluate.identity``).

    ``threshold`` in the config is dlib's 0.6 by default; for ArcFace the backend's own
    documented threshold is used unless the config changed it from that default."""
    from ..registry import IDENTITY_ENCODERS

    kwargs: dict[str, Any] = {}
    if cfg.backend == "arcface":
        kwargs["model_path"] = cfg.model_path
        if cfg.threshold != 0.6:
            kwargs["threshold"] = cfg.threshold
    elif cfg.backend == "dlib":
        kwargs["threshold"] = cfg.threshold
        if cfg.model_path:
            kwargs["model_path"] = cfg.model_path
    return IDENTITY_ENCODERS.create(cfg.backend, **kwargs)


def effective_threshold(encoder: Any, configured: float | None) -> float:
    """The "same person" distance to use with ``encoder``: ``configured`` (a config's
    ``audit.threshold`` / ``evaluate.identity.threshold``) when it was changed from dlib's
    0.6 default, else the encoder's own threshold. The 0.6 default is dlib's Euclidean
    rule; an ArcFace encoder (cosine distance) keeps its own documented 0.72 unless the
    config names another number."""
    from .dlib_backend import DLIB_THRESHOLD

    own = getattr(encoder, "threshold", None)
    if configured is None or (float(configured) == DLIB_THRESHOLD and own is not None):
        return float(own if own is not None else DLIB_THRESHOLD)
    return float(configured)


__all__ = ["build_identity_encoder", "cosine_distance", "effective_threshold", "euclidean_distance"]
