"""Face sets: aligned crops of one person, with the transforms that made them.

A face set is what training reads: for the patient it is extracted from their own
video(s) and lives only in the session's private directory; for a donor it is
extracted once from the donor's consented material and cached in the donor's folder.

Extraction, per sampled frame: detect faces -> 68 landmarks in each face box ->
similarity fit to the template (:mod:`deid.swap.align`) -> quality filter:

- **size**: eye distance below ``min_eye_distance`` frame pixels (a crop made from too
  few pixels teaches the decoder interpolation blur);
- **pose**: strong yaw (nose far off the jaw's midline; profiles align badly to a
  frontal template and are a small minority of a talking-head clip);
- **fit**: landmarks that a similarity cannot map onto the template (a misfit);
- **blur**: variance of the Laplacian below ``blur_ratio`` x the set's median (motion
  blur; relative, because the absolute value depends on resolution and content);
- **other people**: when some frames hold several faces, faces are clustered by
  identity and only the largest cluster (the person the video is about) is kept.

Reference embeddings of the patient (for the identity gate and for telling the patient
from staff at conversion) are taken from the same pass, from evenly spaced faces.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from ..errors import InvalidInputError
from ..geometry import box_iou
from ..io import VIDEO_EXTENSIONS
from .align import Landmarker, align, hull_mask, transform_points, warp

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True, eq=False)
class FaceSet:
    """N aligned faces of one person at one crop size."""

    crops: np.ndarray  # (N, S, S, 3) uint8 RGB
    landmarks: np.ndarray  # (N, 68, 2) float32, crop pixels
    matrices: np.ndarray  # (N, 2, 3) float32, frame -> crop
    frame_index: np.ndarray  # (N,) int64
    source_index: np.ndarray  # (N,) int64 into ``sources``
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        c = np.asarray(self.crops)
        if c.dtype != np.uint8 or c.ndim != 4 or c.shape[3] != 3 or c.shape[1] != c.shape[2]:
            raise ValueError(f"FaceSet crops must be uint8 (N, S, S, 3), got {c.dtype} {c.shape}")
        n = c.shape[0]
        lm = np.asarray(self.landmarks, np.float32).reshape(n, 68, 2)
        m = np.asarray(self.matrices, np.float32).reshape(n, 2, 3)
        fi = np.asarray(self.frame_index, np.int64).reshape(n)
        si = np.asarray(self.source_index, np.int64).reshape(n)
        for k, v in (("crops", c), ("landmarks", lm), ("matrices", m), ("frame_index", fi), ("source_index", si)):
            object.__setattr__(self, k, v)
        object.__setattr__(self, "sources", tuple(str(x) for x in self.sources))
        object.__setattr__(self, "_masks", None)  # cache for masks(), not a field

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    @property
    def size(self) -> int:
        return int(self.crops.shape[1])

    def masks(self) -> np.ndarray:
        """(N, S, S) float32 face masks from the landmarks (computed once)."""
        if self._masks is None:  # type: ignore[has-type]
            ms = np.stack([hull_mask(p, self.size) for p in self.landmarks]) if len(self) else np.zeros((0, self.size, self.size), np.float32)
            object.__setattr__(self, "_masks", ms.astype(np.float32))
        return self._masks  # type: ignore[return-value]

    def subset(self, keep: np.ndarray) -> "FaceSet":
        keep = np.asarray(keep)
        return FaceSet(self.crops[keep], self.landmarks[keep], self.matrices[keep], self.frame_index[keep], self.source_index[keep], self.sources)

    def save(self, path: str | os.PathLike) -> Path:
        """Write as an uncompressed ``.npz`` (no pickles; see :meth:`load`)."""
        p = Path(path)
        tmp = p.with_name(p.name + ".part.npz")
        np.savez(
            tmp,
            crops=self.crops,
            landmarks=self.landmarks,
            matrices=self.matrices,
            frame_index=self.frame_index,
            source_index=self.source_index,
            sources=np.asarray(self.sources, dtype=np.str_),
        )
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FaceSet":
        p = Path(path)
        if not p.is_file():
            raise InvalidInputError(f"face set {p} not found; extract it again (deid swap train / deid donor add)")
        try:
            with np.load(p, allow_pickle=False) as z:
                return cls(z["crops"], z["landmarks"], z["matrices"], z["frame_index"], z["source_index"], tuple(z["sources"].tolist()))
        except (KeyError, ValueError, OSError) as e:
            raise InvalidInputError(f"face set {p} is unreadable ({e}); delete it and extract again") from None

    @classmethod
    def empty(cls, size: int) -> "FaceSet":
        return cls(np.zeros((0, size, size, 3), np.uint8), np.zeros((0, 68, 2)), np.zeros((0, 2, 3)), np.zeros(0), np.zeros(0))


@dataclass(frozen=True)
class QualityFilter:
    min_eye_distance: float = 12.0  # frame pixels
    max_yaw: float = 0.5  # |l - r| / (l + r) of nose-to-jaw distances; 0 frontal, 1 full profile
    blur_ratio: float = 0.3  # drop faces whose Laplacian variance is below this x the median


def yaw_ratio(pts68: np.ndarray) -> float:
    """Signed yaw proxy from 68 landmarks: (l - r) / (l + r) where l, r are the horizontal
    distances from the nose tip to the jaw's two ends (0 frontal, +-1 profile)."""
    p = np.asarray(pts68, np.float32)
    left = float(np.linalg.norm(p[30] - p[0]))
    right = float(np.linalg.norm(p[16] - p[30]))
    return (left - right) / max(left + right, 1e-6)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop (higher = sharper)."""
    g = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(g, cv2.CV_32F).var())


@dataclass
class ExtractStats:
    frames_seen: int = 0
    faces_found: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: {"landmarks": 0, "size": 0, "pose": 0, "blur": 0, "other_person": 0})

    def to_dict(self) -> dict[str, Any]:
        return {"frames_seen": self.frames_seen, "faces_found": self.faces_found, "kept": self.kept, **{f"rejected_{k}": v for k, v in self.rejected.items()}}


@dataclass
class Extracted:
    faceset: FaceSet
    references: np.ndarray  # (R, D) float32 identity embeddings (R may be 0)
    stats: ExtractStats


def list_media(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded to their images and videos (sorted)."""
    out: list[Path] = []
    for s in map(Path, sources):
        if s.is_dir():
            out.extend(sorted(q for q in s.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS))
        elif s.is_file():
            out.append(s)
        else:
            raise InvalidInputError(f"{s}: no such file or folder (face set source)")
    if not out:
        raise InvalidInputError(f"no images or videos found in {', '.join(map(str, sources))}")
    return out


def iter_media_frames(path: Path, max_frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) from an image or evenly spaced frames of a video (at most
    ``max_frames``; streamed, never the whole video in memory)."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise InvalidInputError(f"{path}: not a readable image")
        yield 0, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return
    from ..io import VideoReader, probe

    info = probe(path)
    stride = max(1, math.ceil(info.frame_count / max(1, max_frames)))
    for batch in VideoReader(path, info=info, chunk_size=32):
        for i, f in zip(batch.indices(), batch.frames):
            if i % stride == 0:
                yield i, f


@dataclass
class _Cand:
    src: int
    index: int
    crop: np.ndarray
    lm_crop: np.ndarray
    matrix: np.ndarray
    box: np.ndarray
    n_in_frame: int
    emb: np.ndarray | None = None


def extract_faceset(
    sources: Sequence[str | os.PathLike],
    size: int,
    *,
    detector: Any,
    landmarker: Landmarker,
    identity: Any = None,
    max_frames: int = 400,
    quality: QualityFilter = QualityFilter(),
    n_references: int = 24,
    progress: Callable[[int], None] | None = None,
) -> Extracted:
    """Aligned ``size`` px faces of the main person in ``sources`` (videos, images or
    folders of them), their reference embeddings (when ``identity`` is given) and
    counts of what was dropped and why."""
    paths = list_media(sources)
    stats = ExtractStats()
    embed_every = max(1, max_frames // max(1, 2 * n_references))
    cands: list[_Cand] = []
    for si, path in enumerate(paths):
        per_file = max(1, max_frames // len(paths))
        for idx, frame in iter_media_frames(path, per_file):
            stats.frames_seen += 1
            det = detector.detect([frame])[0]
            if progress:
                progress(1)
            if not len(det):
                continue
            stats.faces_found += len(det)
            pts_all = landmarker(frame, list(det.boxes))
            found = []
            for b, pts in zip(det.boxes, pts_all):
                a = align(pts, size)
                if not a.ok:
                    stats.rejected["size" if "small" in a.why else "landmarks"] += 1
                    continue
                five_iod = float(np.linalg.norm(pts[36:42].mean(0) - pts[42:48].mean(0)))
                if five_iod < quality.min_eye_distance:
                    stats.rejected["size"] += 1
                    continue
                if abs(yaw_ratio(pts)) > quality.max_yaw:
                    stats.rejected["pose"] += 1
                    continue
                found.append((b, a))
            for b, a in found:
                cands.append(_Cand(si, idx, warp(frame, a.matrix, size), a.crop_landmarks, a.matrix, np.asarray(b, np.float32), len(det)))
            # embed now, while the frame is in memory: every face of a multi-face frame
            # (to tell people apart), else every k-th frame (about 2 x n_references)
            if identity is not None and found and (len(det) > 1 or (stats.frames_seen - 1) % embed_every == 0):
                embs = identity.embed([frame], [np.stack([b for b, _ in found])])[0]
                for c, e in zip(cands[-len(found):], embs):
                    c.emb = e if np.all(np.isfinite(e)) else None
    cands = _keep_main_person(cands, identity, stats)
    cands = _drop_blurred(cands, quality.blur_ratio, stats)
    stats.kept = len(cands)
    if not cands:
        fs = FaceSet.empty(size)
    else:
        fs = FaceSet(
            np.stack([c.crop for c in cands]),
            np.stack([c.lm_crop for c in cands]),
            np.stack([c.matrix for c in cands]),
            np.array([c.index for c in cands]),
            np.array([c.src for c in cands]),
            tuple(str(p) for p in paths),
        )
    refs = _references(cands, n_references, getattr(identity, "dim", 0))
    return Extracted(fs, refs, stats)


def _keep_main_person(cands: list[_Cand], identity: Any, stats: ExtractStats) -> list[_Cand]:
    """When some frames show several faces, keep the largest identity cluster (greedy,
    at the encoder's threshold); without an encoder keep the biggest face per frame."""
    if not any(c.n_in_frame > 1 for c in cands):
        return cands
    if identity is None or not any(c.emb is not None for c in cands):
        best: dict[tuple[int, int], _Cand] = {}
        for c in cands:
            k = (c.src, c.index)
            area = float((c.box[2] - c.box[0]) * (c.box[3] - c.box[1]))
            if k not in best or area > float((best[k].box[2] - best[k].box[0]) * (best[k].box[3] - best[k].box[1])):
                best[k] = c
        kept = list(best.values())
        stats.rejected["other_person"] += len(cands) - len(kept)
        return kept
    embedded = [c for c in cands if c.emb is not None]
    centers: list[np.ndarray] = []
    members: list[list[_Cand]] = []
    for c in embedded:
        if centers:
            d = identity.distance(c.emb[None], np.stack(centers))[0]
            j = int(np.argmin(d))
            if d[j] < identity.threshold:
                members[j].append(c)
                centers[j] = np.mean([m.emb for m in members[j]], axis=0)
                continue
        centers.append(c.emb.copy())
        members.append([c])
    main = max(members, key=len)
    keep_ids = {id(c) for c in main}
    # A face the encoder could not embed (too small, odd pose) is still the patient's when
    # it sits where a main-cluster face sits in a nearby frame of the same source.
    for c in cands:
        if c.emb is None and _near_main(c, main):
            keep_ids.add(id(c))
    kept = [c for c in cands if id(c) in keep_ids]
    stats.rejected["other_person"] += len(cands) - len(kept)
    return kept


def _near_main(c: _Cand, main: list[_Cand], frames: int = 15, min_iou: float = 0.3) -> bool:
    near = [m.box for m in main if m.src == c.src and abs(m.index - c.index) <= frames]
    return bool(near) and float(box_iou(c.box[None], np.stack(near)).max()) >= min_iou


def _drop_blurred(cands: list[_Cand], ratio: float, stats: ExtractStats) -> list[_Cand]:
    if len(cands) < 4 or ratio <= 0:
        return cands
    sharp = np.array([sharpness(c.crop) for c in cands])
    keep = sharp >= ratio * float(np.median(sharp))
    stats.rejected["blur"] += int((~keep).sum())
    return [c for c, k in zip(cands, keep) if k]


def _references(cands: list[_Cand], n: int, dim: int) -> np.ndarray:
    embs = [c.emb for c in cands if c.emb is not None]
    if not embs:
        return np.zeros((0, dim), np.float32)
    pick = np.linspace(0, len(embs) - 1, min(n, len(embs))).round().astype(int)
    return np.stack([embs[i] for i in np.unique(pick)]).astype(np.float32)


def landmarks_in_frame(fs: FaceSet, i: int) -> np.ndarray:
    """The 68 landmarks of face ``i`` back in its source frame's pixels."""
    from .align import invert

    return transform_points(invert(fs.matrices[i]), fs.landmarks[i])


def concat(sets: Iterable[FaceSet]) -> FaceSet:
    sets = [s for s in sets if len(s)]
    if not sets:
        raise ValueError("concat needs at least one non-empty face set")
    srcs: list[str] = []
    parts = []
    for s in sets:
        off = len(srcs)
        srcs.extend(s.sources)
        parts.append((s, off))
    return FaceSet(
        np.concatenate([s.crops for s, _ in parts]),
        np.concatenate([s.landmarks for s, _ in parts]),
        np.concatenate([s.matrices for s, _ in parts]),
        np.concatenate([s.frame_index for s, _ in parts]),
        np.concatenate([s.source_index + off for s, off in parts]),
        tuple(srcs),
    )
