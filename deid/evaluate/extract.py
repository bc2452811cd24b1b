"""The expensive half of an evaluation: run the models over a video (or a frame range).

Two stages, each callable on its own so a distributed runner can put them in actor
pools (models built once per worker) and shard long videos by frame range:

- :func:`extract_keypoints` — the pose estimator on every frame, in order (video-mode
  estimators track across frames; the estimator is ``reset()`` at the start of each
  call, so a range behaves like a video of its own);
- :func:`extract_faces` — on every ``every``-th frame (global frame numbers, so ranges
  stitch): the attacker's face detector, the identity embedding of every face it finds,
  and embeddings *at given places* (``at``: the original video's face boxes), so a
  processed frame can be compared with the original face that was there.

:func:`extract` does both in one decode pass (what ``deid evaluate`` runs). Results are
small arrays (a few KB a frame), returned as :class:`VideoKeypoints` /
:class:`VideoFaces` and stitched with their ``concat``. Frames are streamed in chunks,
never held for a whole video.

On the original video, faces are *located* by the attacker's detector plus a second
detector (``locator``; by default the pipeline's own, ``detect.backend``): dlib's HOG
misses faces that are small, turned or cut by the frame edge (on the pancake demo clip
it finds none in 310 frames, MediaPipe finds the face in half of them), and a face it
misses in the original would otherwise never be checked at the same place. With
``null_control`` the original is also embedded with every located face blanked (filled
with its own mean colour, as :mod:`deid.audit` does): the distance a blank scores
against a real face says whether the recogniser can tell that face from nothing at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..io.prefetch import prefetch

#: a located (locator) box overlapping an attacker box this much is the same face
SAME_FACE_IOU = 0.4
#: padding of a face box into the head region blanked for the null control
#: (the pipeline's defaults: deid.config.TrackConfig pad_side / pad_top / pad_bottom)
NULL_PAD = (0.30, 0.55, 0.25)


# ----------------------------------------------------------------------------- results


def _f32(a: Any, tail: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a if a is not None else (), np.float32)
    if arr.size == 0:
        return np.zeros((0, *tail), np.float32)
    return arr.reshape(-1, *tail)


@dataclass(frozen=True, eq=False)
class VideoKeypoints:
    """Poses of frames ``start .. start + len(keypoints) - 1``: one (P, K, 3) float32 array
    a frame (x, y, score; score 0 = not found)."""

    start: int
    keypoints: tuple[np.ndarray, ...]
    backend: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "keypoints", tuple(np.asarray(k, np.float32) for k in self.keypoints))

    def __len__(self) -> int:
        return len(self.keypoints)

    @property
    def stop(self) -> int:
        return self.start + len(self.keypoints)

    @property
    def frames(self) -> range:
        return range(self.start, self.stop)

    def head(self, n: int) -> "VideoKeypoints":
        """The first ``n`` frames (for evaluating only part of a video)."""
        return VideoKeypoints(self.start, self.keypoints[:n], self.backend)

    @classmethod
    def concat(cls, parts: Sequence["VideoKeypoints"]) -> "VideoKeypoints":
        """Stitch consecutive ranges (each part must start where the previous stopped)."""
        parts = sorted(parts, key=lambda p: p.start)
        if not parts:
            raise InvalidInputError("VideoKeypoints.concat: no parts given")
        for a, b in zip(parts, parts[1:]):
            if b.start != a.stop:
                raise InvalidInputError(
                    f"VideoKeypoints.concat: range starting at {b.start} does not follow the one ending at {a.stop}; "
                    "extract contiguous, non-overlapping frame ranges"
                )
        return cls(parts[0].start, tuple(k for p in parts for k in p.keypoints), parts[0].backend)


@dataclass(frozen=True, eq=False)
class VideoFaces:
    """Faces of the checked frames of one video (``frames[j]`` is a frame number):

    - ``found_boxes[j]`` (N, 4) / ``found_emb[j]`` (N, D): what the attacker's detector
      found in this video and their embeddings (NaN rows: could not be embedded);
    - ``ref_boxes[j]`` (M, 4): the *original* video's faces in that frame (located in the
      original; copied from it for a processed video) and ``ref_emb[j]`` (M, D): *this*
      video embedded at those boxes ("same place");
    - ``null_emb[j]`` (M, D): the original with its faces blanked, embedded at the same
      boxes (original only, with ``null_control``; else None).
    """

    frames: np.ndarray
    found_boxes: tuple[np.ndarray, ...]
    found_emb: tuple[np.ndarray, ...]
    ref_boxes: tuple[np.ndarray, ...]
    ref_emb: tuple[np.ndarray, ...]
    null_emb: tuple[np.ndarray, ...] | None = None
    dim: int = 0

    def __post_init__(self) -> None:
        d = int(self.dim)
        fr = np.asarray(self.frames, np.int64).reshape(-1)
        object.__setattr__(self, "frames", fr)
        for name in ("found_boxes", "ref_boxes"):
            object.__setattr__(self, name, tuple(_f32(b, (4,)) for b in getattr(self, name)))
        for name in ("found_emb", "ref_emb") + (("null_emb",) if self.null_emb is not None else ()):
            object.__setattr__(self, name, tuple(_f32(e, (d,)) for e in getattr(self, name)))
        n = len(fr)
        lens = {len(self.found_boxes), len(self.found_emb), len(self.ref_boxes), len(self.ref_emb)}
        if self.null_emb is not None:
            lens.add(len(self.null_emb))
        if lens != {n}:
            raise InvalidInputError(f"VideoFaces: {n} frames but per-frame lists of lengths {sorted(lens)}")
        for j in range(n):
            if len(self.found_boxes[j]) != len(self.found_emb[j]) or len(self.ref_boxes[j]) != len(self.ref_emb[j]):
                raise InvalidInputError(f"VideoFaces: frame {fr[j]}: one embedding row per box is required")

    def __len__(self) -> int:
        return len(self.frames)

    def index(self) -> dict[int, int]:
        """frame number -> position in the per-frame lists."""
        return {int(f): j for j, f in enumerate(self.frames)}

    def head(self, stop: int) -> "VideoFaces":
        """Only the checked frames before frame ``stop``."""
        k = int(np.searchsorted(self.frames, stop))
        null = None if self.null_emb is None else self.null_emb[:k]
        return VideoFaces(self.frames[:k], self.found_boxes[:k], self.found_emb[:k], self.ref_boxes[:k],
                          self.ref_emb[:k], null, self.dim)

    @classmethod
    def concat(cls, parts: Sequence["VideoFaces"]) -> "VideoFaces":
        parts = sorted(parts, key=lambda p: int(p.frames[0]) if len(p) else -1)
        parts = [p for p in parts if len(p)] or list(parts[:1])
        if not parts:
            raise InvalidInputError("VideoFaces.concat: no parts given")
        fr = np.concatenate([p.frames for p in parts])
        if len(fr) != len(np.unique(fr)) or np.any(np.diff(fr) <= 0):
            raise InvalidInputError("VideoFaces.concat: frame ranges overlap; extract non-overlapping ranges")
        has_null = all(p.null_emb is not None for p in parts)
        null = tuple(e for p in parts for e in p.null_emb) if has_null else None  # type: ignore[union-attr]
        return cls(
            fr,
            tuple(b for p in parts for b in p.found_boxes),
            tuple(e for p in parts for e in p.found_emb),
            tuple(b for p in parts for b in p.ref_boxes),
            tuple(e for p in parts for e in p.ref_emb),
            null,
            parts[0].dim,
        )

    def as_processed(self) -> "VideoFaces":
        """This (original) video's faces seen as a processed video of itself: the
        sanity row, where every same-place distance is 0."""
        return VideoFaces(self.frames, self.found_boxes, self.found_emb, self.ref_boxes, self.ref_emb, None, self.dim)


# ----------------------------------------------------------------------------- helpers


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from ..metrics.identity import box_iou as _iou

    return _iou(a, b)


def merge_boxes(primary: np.ndarray, extra: np.ndarray, iou: float = SAME_FACE_IOU) -> np.ndarray:
    """``primary`` boxes, then the ``extra`` boxes that overlap none of them (IoU < ``iou``)."""
    primary, extra = _f32(primary, (4,)), _f32(extra, (4,))
    if len(extra) == 0:
        return primary
    if len(primary):
        keep = box_iou(extra, primary).max(axis=1) < iou
        extra = extra[keep]
    return np.concatenate([primary, extra]).astype(np.float32)


def clip_to_frame(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    b = _f32(boxes, (4,)).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    return b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]


def blank_faces(frame: np.ndarray, boxes: np.ndarray, pad: tuple[float, float, float] = NULL_PAD) -> np.ndarray:
    """The frame with each face's head region filled with its own mean colour: a face
    with no structure left, only its tint and the context around it (the null control)."""
    out = frame.copy()
    h, w = frame.shape[:2]
    for b in _f32(boxes, (4,)):
        bw, bh = b[2] - b[0], b[3] - b[1]
        x1 = max(0, int(np.floor(b[0] - pad[0] * bw)))
        y1 = max(0, int(np.floor(b[1] - pad[1] * bh)))
        x2 = min(w, int(np.ceil(b[2] + pad[0] * bw)))
        y2 = min(h, int(np.ceil(b[3] + pad[2] * bh)))
        if x2 > x1 and y2 > y1:
            out[y1:y2, x1:x2] = frame[y1:y2, x1:x2].reshape(-1, 3).mean(axis=0).astype(np.uint8)
    return out


def _arrays(kps: Sequence[Any]) -> list[np.ndarray]:
    return [np.asarray(getattr(k, "data", k), np.float32) for k in kps]


def checked_frames(start: int, stop: int, every: int) -> list[int]:
    """Frame numbers in [start, stop) that are multiples of ``every`` (global numbering,
    so ranges of one video check the same frames as the whole video would)."""
    first = ((start + every - 1) // every) * every
    return list(range(first, stop, every))


# ----------------------------------------------------------------------------- extraction


def extract(
    path: str,
    *,
    estimator: Any = None,
    encoder: Any = None,
    detector: Any = None,
    locator: Any = None,
    at: VideoFaces | None = None,
    null_control: bool = False,
    every: int = 1,
    start: int = 0,
    stop: int | None = None,
    chunk_size: int = 32,
    decoder: str = "pyav",
    batch_mb: float | None = 64.0,
    info: Any = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[VideoKeypoints | None, VideoFaces | None]:
    """One decode pass over frames ``[start, stop)`` of ``path`` running the pose
    ``estimator`` (when given) on every frame and, when ``encoder`` and ``detector`` are
    given, the face stage on every ``every``-th frame (see module doc):

    - ``at`` None (the original): reference boxes = attacker boxes + ``locator`` boxes
      not overlapping them; ``null_control`` adds the blanked-face embeddings;
    - ``at`` given (a processed video): reference boxes are ``at``'s (the original's)
      for the same frame numbers, embedded in this video.

    ``progress(n)`` is called with the number of frames done after each chunk."""
    from ..io import VideoReader, probe

    if every < 1:
        raise InvalidInputError("extract: every must be >= 1")
    if (encoder is None) != (detector is None):
        raise InvalidInputError("extract: the face stage needs both an identity encoder and a face detector")
    info = info or probe(path)
    stop = info.frame_count if stop is None else min(int(stop), info.frame_count)
    start = max(0, int(start))
    do_faces = encoder is not None
    want = set(checked_frames(start, stop, every)) if do_faces else set()
    at_index = at.index() if at is not None else None
    dim = int(getattr(encoder, "dim", 0)) if do_faces else 0

    kps: list[np.ndarray] = []
    fr: list[int] = []
    found_b: list[np.ndarray] = []
    found_e: list[np.ndarray] = []
    ref_b: list[np.ndarray] = []
    ref_e: list[np.ndarray] = []
    null_e: list[np.ndarray] = []
    if estimator is not None:
        estimator.reset()
    expected = start
    reader = VideoReader(path, chunk_size=chunk_size, info=info, start=start, stop=stop, decoder=decoder, batch_mb=batch_mb)
    for batch in prefetch(reader, name="deid-eval-reader"):
        if batch.start != expected:
            raise InvalidInputError(
                f"{path}: decoder skipped from frame {expected} to {batch.start}; the evaluation needs every frame "
                "(re-encode the video, or check it with `deid probe`)"
            )
        expected = batch.stop
        if estimator is not None:
            kps.extend(_arrays(estimator.estimate(batch.frames)))
        if do_faces:
            sel = [(i, f) for i, f in zip(batch.indices(), batch.frames) if i in want]
            if sel:
                _faces_chunk(sel, encoder, detector, locator, at, at_index, null_control, fr, found_b, found_e,
                             ref_b, ref_e, null_e)
        if progress is not None:
            progress(len(batch))
    if expected < stop:
        raise InvalidInputError(
            f"{path}: only frames {start}..{expected - 1} of {start}..{stop - 1} could be decoded; "
            "evaluate a complete video (or set evaluate.max_frames)"
        )
    vk = VideoKeypoints(start, tuple(kps), str(getattr(estimator, "name", ""))) if estimator is not None else None
    vf = None
    if do_faces:
        vf = VideoFaces(np.asarray(fr, np.int64), tuple(found_b), tuple(found_e), tuple(ref_b), tuple(ref_e),
                        tuple(null_e) if (null_control and at is None) else None, dim)
    return vk, vf


def _faces_chunk(sel, encoder, detector, locator, at, at_index, null_control, fr, found_b, found_e, ref_b, ref_e, null_e):
    idx = [i for i, _ in sel]
    frames = [f for _, f in sel]
    h, w = frames[0].shape[:2]
    found = [clip_to_frame(d.boxes, w, h) for d in detector.detect(frames)]
    if at is not None:
        refs = []
        for i in idx:
            j = at_index.get(i)
            refs.append(at.ref_boxes[j] if j is not None else np.zeros((0, 4), np.float32))
        extra = refs
    else:
        if locator is not None:
            located = [clip_to_frame(d.boxes, w, h) for d in locator.detect(frames)]
            refs = [merge_boxes(a, b) for a, b in zip(found, located)]
        else:
            refs = found
        extra = [r[len(a):] for r, a in zip(refs, found)]  # found boxes come first in refs
    # one embed call for everything in these frames (the encoder batches its network pass)
    both = [np.concatenate([a, b]).astype(np.float32) for a, b in zip(found, extra)]
    emb = encoder.embed(frames, both)
    for k, i in enumerate(idx):
        n = len(found[k])
        e = _f32(emb[k], (encoder.dim,))
        fr.append(i)
        found_b.append(found[k])
        found_e.append(e[:n])
        ref_b.append(refs[k])
        ref_e.append(e[n:] if at is not None else e[: len(refs[k])])
    if null_control and at is None:
        blanks = [blank_faces(f, r) for f, r in zip(frames, refs)]
        for e in encoder.embed(blanks, refs):
            null_e.append(_f32(e, (encoder.dim,)))


def extract_keypoints(path: str, estimator: Any, *, start: int = 0, stop: int | None = None, chunk_size: int = 32,
                      decoder: str = "pyav", batch_mb: float | None = 64.0,
                      progress: Callable[[int], None] | None = None) -> VideoKeypoints:
    """Stage 1: poses of every frame in ``[start, stop)`` (see :func:`extract`)."""
    vk, _ = extract(path, estimator=estimator, start=start, stop=stop, chunk_size=chunk_size, decoder=decoder,
                    batch_mb=batch_mb, progress=progress)
    assert vk is not None
    return vk


def extract_faces(path: str, encoder: Any, detector: Any, *, locator: Any = None, at: VideoFaces | None = None,
                  null_control: bool = False, every: int = 1, start: int = 0, stop: int | None = None,
                  chunk_size: int = 32, decoder: str = "pyav", batch_mb: float | None = 64.0,
                  progress: Callable[[int], None] | None = None) -> VideoFaces:
    """Stage 2: faces of every ``every``-th frame in ``[start, stop)`` (see :func:`extract`)."""
    _, vf = extract(path, encoder=encoder, detector=detector, locator=locator, at=at, null_control=null_control,
                    every=every, start=start, stop=stop, chunk_size=chunk_size, decoder=decoder, batch_mb=batch_mb,
                    progress=progress)
    assert vf is not None
    return vf
