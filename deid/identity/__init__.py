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


__all__ = ["build_identity_encoder", "cosine_distance", "euclidean_distance"]
