"""Pieces every identity backend shares: input checks, which boxes can be embedded,
and the two distance functions (Euclidean for dlib, cosine for ArcFace).

The contract (:class:`deid.protocols.IdentityEncoder`): ``embed(frames, boxes)`` returns
one ``(Ni, D) float32`` array per frame, in the order of the boxes given; a face that
cannot be embedded gives a row of NaN instead of being dropped, so row ``j`` always
belongs to box ``j`` and callers can line embeddings up with their own tables.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..types import check_frame

#: Faces smaller than this (pixels, either side, after clipping to the frame) are not
#: embedded: dlib's ResNet works on a 150 px chip and ArcFace on 112 px; a face a few
#: pixels wide upsampled that far is noise, and a confident-looking distance from it
#: would be misleading.
MIN_FACE_SIZE = 12.0


def check_inputs(frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray], who: str) -> list[np.ndarray]:
    """Validate ``frames`` / ``boxes`` and return the boxes as (Ni, 4) float32 arrays."""
    if len(frames) != len(boxes):
        raise ValueError(f"{who}.embed: got {len(frames)} frames but {len(boxes)} box arrays; pass one (Ni, 4) array per frame")
    out = []
    for i, (f, b) in enumerate(zip(frames, boxes)):
        check_frame(f, f"{who}.embed: frames[{i}]")
        arr = np.asarray(b if b is not None else np.zeros((0, 4)), dtype=np.float32)
        if arr.size == 0:
            arr = arr.reshape(0, 4)
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise ValueError(f"{who}.embed: boxes[{i}] must have shape (N, 4) xyxy, got {arr.shape}")
        out.append(arr)
    return out


def embeddable(box: np.ndarray, width: int, height: int, min_size: float = MIN_FACE_SIZE) -> bool:
    """True when ``box`` (xyxy) is finite and its part inside the frame is at least
    ``min_size`` pixels on both sides."""
    if not np.all(np.isfinite(box)):
        return False
    x1, y1 = max(float(box[0]), 0.0), max(float(box[1]), 0.0)
    x2, y2 = min(float(box[2]), float(width)), min(float(box[3]), float(height))
    return (x2 - x1) >= min_size and (y2 - y1) >= min_size


def as_matrix(a: np.ndarray, dim: int, what: str) -> np.ndarray:
    """(N, dim) float32 view of ``a`` (a single vector becomes one row)."""
    arr = np.asarray(a, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if arr.size else arr.reshape(0, dim)
    if arr.ndim != 2 or (arr.shape[1] != dim and arr.shape[0] != 0):
        raise ValueError(f"{what} must have shape (N, {dim}), got {arr.shape}")
    return arr.reshape(arr.shape[0], dim)


def euclidean_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, D), (M, D) -> (N, M) L2 distances in float32; NaN rows give NaN distances."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    # Direct differences (not the |a|^2 + |b|^2 - 2ab expansion): exact zeros for identical
    # rows, and N x M x 128 stays small for the sizes we compare (frames x references).
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)).astype(np.float32)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, D), (M, D) -> (N, M) ``1 - cos(a, b)`` in [0, 2]; NaN rows give NaN."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = (a / na) @ (b / nb).T
    return np.clip(1.0 - sim, 0.0, 2.0).astype(np.float32)


def nan_rows(n: int, dim: int) -> np.ndarray:
    return np.full((n, dim), np.nan, np.float32)


def rebuild(cls: type, kwargs: dict) -> object:
    """Unpickle helper: backends pickle as (class, constructor arguments) and load their
    models again on the other side (dlib and ONNX Runtime objects do not pickle), so an
    encoder can be shipped to a worker process."""
    return cls(**kwargs)
