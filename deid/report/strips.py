"""Frame strips: processed frames side by side (one column per method), each with the
pose found on the *original* frame and the pose found on *that processed* frame drawn
in two colours, so a reader sees where keypoints moved.

Privacy rules (the report is meant to be shared; it must never re-identify anyone):

1. Only processed frames are read (paths from run.json). Original frames are never
   decoded here; the original's *keypoints* come from the keypoints table.
2. Fail closed before embedding: every thumbnail is searched for faces (MediaPipe face
   detection, on the full processed frame and again on the thumbnail). A face counts as
   anonymized only when the pipeline's own regions for that frame
   (``<stem>.<method>.frames.parquet``, the padded head boxes it blurred / masked /
   swapped) cover at least :data:`MIN_COVER` of it. Any other face is redacted in the
   thumbnail (filled with its surroundings' mean colour, outlined); if a face is still
   found after that, the thumbnail is dropped. Without a frames table, no face counts
   as covered. Swapped faces are shown: they are anonymized by design and the
   pipeline's identity gate checked them.
3. Frames the pipeline redacted fail-closed are not chosen (there is nothing to see).

The face detector is injectable (``detector=``) so tests can drive the same logic
with the synthetic-clip colour detector from :mod:`deid.testing`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from ..types import check_frame

log = logging.getLogger(__name__)

#: RGB colour of the skeleton found on the original frame (Okabe-Ito orange)
ORIGINAL_COLOR = (230, 159, 0)
#: RGB colour of the skeleton found on the processed frame (Okabe-Ito sky blue)
PROCESSED_COLOR = (86, 180, 233)
#: outline of a face the report itself had to redact (Okabe-Ito vermillion)
REDACTED_COLOR = (213, 94, 0)
#: fraction of a detected face box that the pipeline's regions must cover
MIN_COVER = 0.6
#: MediaPipe score for the report's face check: lower than the pipeline's (recall first)
FACE_CHECK_MIN_SCORE = 0.3


@dataclass(frozen=True)
class StripOptions:
    frames_even: int = 4  # evenly spaced frames per video
    frames_worst: int = 2  # plus the frames with the lowest OKS
    thumb_width: int = 320  # thumbnails fit in this box (pixels)
    thumb_height: int = 240
    jpeg_quality: int = 80
    min_cover: float = MIN_COVER
    # The 68 face landmarks are not drawn by default: their outline (eye spacing, brow,
    # lip and jaw shape) is a sketch of the patient's face on top of the anonymized one.
    # Face keypoint errors are in the per-keypoint plot and the face AP column instead.
    draw_face_landmarks: bool = False


@dataclass(frozen=True)
class Thumbnail:
    method: str
    frame: int
    jpeg: bytes | None  # None: dropped (see ``note``)
    width: int = 0
    height: int = 0
    oks: float | None = None
    faces_redacted: int = 0
    note: str = ""


@dataclass(frozen=True)
class Strip:
    video: str
    methods: tuple[str, ...]
    frames: tuple[int, ...]
    why: Mapping[int, str]  # frame -> "evenly spaced" | "lowest OKS"
    cells: Mapping[tuple[int, str], Thumbnail]
    fps: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def faces_redacted(self) -> int:
        return sum(t.faces_redacted for t in self.cells.values())

    @property
    def dropped(self) -> int:
        return sum(1 for t in self.cells.values() if t.jpeg is None)

    @property
    def shown(self) -> int:
        return sum(1 for t in self.cells.values() if t.jpeg is not None)


# ----------------------------------------------------------------------------- face check (pure)


def box_coverage(faces: np.ndarray, regions: np.ndarray | None, grid: int = 24) -> np.ndarray:
    """For each face box (N, 4), the fraction of its area inside the union of the region
    boxes (M, 4), estimated on a ``grid`` x ``grid`` lattice of points in the face box
    (exact enough for a yes/no at 0.6 and independent of pixel size)."""
    faces = np.asarray(faces, np.float32).reshape(-1, 4)
    out = np.zeros(len(faces), np.float64)
    if regions is None:
        return out
    regions = np.asarray(regions, np.float32).reshape(-1, 4)
    if len(regions) == 0 or len(faces) == 0:
        return out
    t = (np.arange(grid) + 0.5) / grid
    for i, (x1, y1, x2, y2) in enumerate(faces):
        xs = x1 + (x2 - x1) * t
        ys = y1 + (y2 - y1) * t
        px, py = np.meshgrid(xs, ys)
        inside = np.zeros(px.shape, bool)
        for rx1, ry1, rx2, ry2 in regions:
            inside |= (px >= rx1) & (px <= rx2) & (py >= ry1) & (py <= ry2)
        out[i] = inside.mean()
    return out


def _inside_any(points: np.ndarray, regions: np.ndarray) -> np.ndarray:
    x, y = points[:, 0:1], points[:, 1:2]
    r = regions.reshape(1, -1, 4)
    return ((x >= r[..., 0]) & (x <= r[..., 2]) & (y >= r[..., 1]) & (y <= r[..., 3])).any(axis=1)


def uncovered_faces(faces: np.ndarray, regions: np.ndarray | None, min_cover: float = MIN_COVER,
                    landmarks: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the faces the pipeline's regions do not cover (None = no regions known).

    A face counts as anonymized when the regions cover ``min_cover`` of its box, or when
    every landmark the detector gave (eyes, nose: the identifying core) lies inside a
    region. The second rule matters for the solid mask: MediaPipe sometimes fires on the
    black ellipse itself with a box that hangs below the head region."""
    faces = np.asarray(faces, np.float32).reshape(-1, 4)
    ok = box_coverage(faces, regions) >= float(min_cover)
    if landmarks is not None and regions is not None and len(faces):
        reg = np.asarray(regions, np.float32).reshape(-1, 4)
        lms = np.asarray(landmarks, np.float32).reshape(len(faces), -1, 2)
        if len(reg):
            for i in range(len(faces)):
                pts = lms[i][np.isfinite(lms[i]).all(axis=1)]
                if len(pts) >= 2 and _inside_any(pts, reg).all():
                    ok[i] = True
    return ~ok


def redact_boxes(img: np.ndarray, boxes: np.ndarray, pad: float = 0.25, keep: np.ndarray | None = None) -> np.ndarray:
    """Flatten each (padded) box to the mean colour of a ring around it and outline what
    was flattened. ``keep`` boxes (the pipeline's anonymized regions, in the same pixels)
    are left as they are: only the part of a face nobody anonymized is hidden. A flat
    fill carries no identity; the outline tells the reader the report did it."""
    check_frame(img, "thumbnail")
    out = img.copy()
    h, w = out.shape[:2]
    keep_mask = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in np.asarray(keep if keep is not None else np.zeros((0, 4)), np.float32).reshape(-1, 4):
        keep_mask[max(0, int(np.ceil(y1))):max(0, int(np.floor(y2))), max(0, int(np.ceil(x1))):max(0, int(np.floor(x2)))] = True
    for x1, y1, x2, y2 in np.asarray(boxes, np.float32).reshape(-1, 4):
        bw, bh = x2 - x1, y2 - y1
        a = int(max(0, np.floor(x1 - pad * bw)))
        b = int(max(0, np.floor(y1 - pad * bh)))
        c = int(min(w, np.ceil(x2 + pad * bw)))
        d = int(min(h, np.ceil(y2 + pad * bh)))
        if c <= a or d <= b:
            continue
        fill = np.zeros((h, w), bool)
        fill[b:d, a:c] = True
        fill &= ~keep_mask
        if not fill.any():
            continue
        ra, rb = max(0, a - 4), max(0, b - 4)
        rc, rd = min(w, c + 4), min(h, d + 4)
        ring = out[rb:rd, ra:rc].reshape(-1, 3)
        color = ring.mean(axis=0) if ring.size else np.array([128, 128, 128])
        out[fill] = color.astype(np.uint8)
        contours, _ = cv2.findContours(fill.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, REDACTED_COLOR, 1)
    return out


def fit_size(width: int, height: int, max_w: int, max_h: int) -> tuple[int, int, float]:
    s = min(1.0, max_w / float(width), max_h / float(height))
    return max(1, int(round(width * s))), max(1, int(round(height * s))), s


def _boxes_of(det: Any) -> np.ndarray:
    b = getattr(det, "boxes", det)
    return np.asarray(b, np.float32).reshape(-1, 4)


def _detections(det: Any, scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    boxes = _boxes_of(det) / scale
    lm = getattr(det, "landmarks", None)
    if lm is None or len(boxes) == 0:
        return boxes, None
    return boxes, np.asarray(lm, np.float32).reshape(len(boxes), -1, 2) / scale


def _concat(parts: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.concatenate([b.reshape(-1, 4) for b, _ in parts]) if parts else np.zeros((0, 4), np.float32)
    k = max([lm.shape[1] for _, lm in parts if lm is not None] or [5])
    lms = [lm if lm is not None and lm.shape[1] == k else np.full((len(b), k, 2), np.nan, np.float32) for b, lm in parts]
    return boxes, (np.concatenate(lms) if lms else np.zeros((0, k, 2), np.float32))


def safe_thumbnail(
    frame: np.ndarray,
    regions: np.ndarray | None,
    detector: Any,
    max_w: int = 320,
    max_h: int = 240,
    min_cover: float = MIN_COVER,
) -> tuple[np.ndarray | None, int, str]:
    """Downscale a processed frame and enforce rule 2 of the module doc. Returns
    (thumbnail or None when dropped, faces redacted, note)."""
    check_frame(frame, "processed frame")
    h, w = frame.shape[:2]
    tw, th, s = fit_size(w, h, max_w, max_h)
    thumb = cv2.resize(frame, (tw, th), interpolation=cv2.INTER_AREA) if s < 1.0 else frame.copy()
    try:
        full, small = detector.detect([np.ascontiguousarray(frame), np.ascontiguousarray(thumb)])
        faces, lms = _concat([_detections(full, 1.0), _detections(small, s)])
    except Exception as e:  # a face check that cannot run must not let the thumbnail through
        return None, 0, f"face check failed ({type(e).__name__}: {e}); thumbnail dropped"
    bad = uncovered_faces(faces, regions, min_cover, lms)
    n_red = 0
    if bad.any():
        keep = None if regions is None else np.asarray(regions, np.float32).reshape(-1, 4) * s
        pad = 0.25
        thumb = redact_boxes(thumb, faces[bad] * s, pad, keep=keep)
        n_red = _distinct(faces[bad])  # the same face found on both images counts once
        fb = faces[bad]
        bw, bh = (fb[:, 2] - fb[:, 0])[:, None], (fb[:, 3] - fb[:, 1])[:, None]
        flattened = fb + np.hstack([-pad * bw, -pad * bh, pad * bw, pad * bh])
        known = flattened if regions is None else np.concatenate([np.asarray(regions, np.float32).reshape(-1, 4), flattened])
        try:
            again, again_lm = _detections(detector.detect([thumb])[0], s)
        except Exception as e:
            return None, n_red, f"face check failed after redaction ({type(e).__name__}: {e}); thumbnail dropped"
        if uncovered_faces(again, known, min_cover, again_lm).any():
            return None, n_red, "a face outside the anonymized regions survived redaction; thumbnail dropped"
    note = f"{n_red} face(s) outside the anonymized regions redacted by the report" if n_red else ""
    return thumb, n_red, note


def _distinct(boxes: np.ndarray, iou: float = 0.3) -> int:
    from ..detect.base import box_iou

    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    keep: list[int] = []
    m = box_iou(boxes, boxes)
    for i in range(len(boxes)):
        if all(m[i, j] < iou for j in keep):
            keep.append(i)
    return len(keep)


def draw_poses(thumb: np.ndarray, scale: float, original: np.ndarray | None, processed: np.ndarray | None,
               face_landmarks: bool = False) -> np.ndarray:
    """Original's skeleton (orange) under the processed frame's skeleton (blue), both
    scaled into thumbnail pixels: body with the coarse head points (nose, eyes, ears),
    feet and hands; the 68-point face outline only with ``face_landmarks`` (see
    :class:`StripOptions`). Keypoints that are not wholebody133 are not drawn."""
    from ..pose.draw import draw_skeleton
    from ..pose.schema import NUM_KEYPOINTS, SKELETON

    parts = [p for p in SKELETON if face_landmarks or p != "face"]
    out = thumb
    for kp, color in ((original, ORIGINAL_COLOR), (processed, PROCESSED_COLOR)):
        if kp is None or kp.size == 0 or kp.shape[1] != NUM_KEYPOINTS:
            continue
        k = np.asarray(kp, np.float32).copy()
        k[..., :2] *= scale
        out = draw_skeleton(out, k, color=color, thickness=1, parts=parts)
    return out


def encode_jpeg(img: np.ndarray, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - cv2 always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


# ----------------------------------------------------------------------------- frame choice (pure)


def choose_frames(
    frame_count: int,
    n_even: int,
    n_worst: int,
    frame_score: Mapping[int, float] | None = None,
    excluded: set[int] | frozenset[int] = frozenset(),
) -> tuple[list[int], dict[int, str]]:
    """``n_even`` frames at the centres of equal segments (moved to the nearest frame not
    ``excluded``), plus the ``n_worst`` frames with the lowest score (OKS) that are not
    excluded and not within a few frames of one already chosen."""
    if frame_count <= 0:
        return [], {}
    allowed = [i for i in range(frame_count) if i not in excluded]
    if not allowed:
        return [], {}
    arr = np.asarray(allowed)
    why: dict[int, str] = {}
    for k in range(max(0, n_even)):
        target = (k + 0.5) * frame_count / max(1, n_even)
        i = int(arr[np.argmin(np.abs(arr - target))])
        why.setdefault(i, "evenly spaced")
    if frame_score and n_worst > 0:
        gap = max(1, frame_count // 50)
        cand = sorted((v, f) for f, v in frame_score.items() if np.isfinite(v) and f not in excluded and 0 <= f < frame_count)
        added = 0
        for v, f in cand:
            if added >= n_worst:
                break
            if all(abs(f - g) > gap for g in why):
                why[int(f)] = f"lowest OKS ({v:.2f})"
                added += 1
    return sorted(why), why


# ----------------------------------------------------------------------------- video access


def frames_table_path(processed: Path) -> Path:
    """``<stem>.<method>.mp4`` -> ``<stem>.<method>.frames.parquet`` (the pipeline's naming)."""
    return processed.with_name(processed.name.rsplit(".", 1)[0] + ".frames.parquet")


@dataclass
class FramesTable:
    """The pipeline's per-frame decisions and region boxes for one output."""

    decision: dict[int, str] = field(default_factory=dict)
    boxes: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> "FramesTable | None":
        import pyarrow.parquet as pq

        if not path.is_file():
            return None
        t = pq.read_table(path, columns=["frame", "decision", "boxes"]).to_pydict()
        ft = cls()
        for f, d, b in zip(t["frame"], t["decision"], t["boxes"]):
            ft.decision[int(f)] = str(d)
            ft.boxes[int(f)] = np.asarray(b or [], np.float32).reshape(-1, 4)
        return ft

    def regions(self, frame: int) -> np.ndarray:
        return self.boxes.get(int(frame), np.zeros((0, 4), np.float32))

    def fail_closed(self) -> set[int]:
        return {f for f, d in self.decision.items() if d == "fail_closed"}


def read_some_frames(path: Path, indices: Sequence[int], seek_above: int = 1500) -> dict[int, np.ndarray]:
    """Frames ``indices`` of a video: one sequential pass for short videos, a seek per
    frame for long ones (so a strip of a one-hour video does not decode the hour)."""
    from ..io import VideoReader, iter_frames, probe

    want = sorted(set(int(i) for i in indices))
    if not want:
        return {}
    info = probe(path)
    out: dict[int, np.ndarray] = {}
    if info.frame_count <= seek_above:
        wanted = set(want)
        for i, f in iter_frames(path, stop=want[-1] + 1, info=info, on_corrupt="keep_partial"):
            if i in wanted:
                out[i] = f
        return out
    for i in want:
        for batch in VideoReader(path, start=i, stop=i + 1, chunk_size=1, info=info, on_corrupt="keep_partial"):
            if batch.frames:
                out[i] = batch.frames[0]
    return out


# ----------------------------------------------------------------------------- one video


def build_strip(
    video: str,
    entry: Mapping[str, Any],
    methods: Sequence[str],
    resolve: Any,
    keypoints: Any,
    perframe: Any,
    detector: Any,
    opts: StripOptions = StripOptions(),
    fail_closed_policy: str = "redact",
    expected: Sequence[str] = (),
) -> Strip | None:
    """The strip of one video. ``entry`` is its run.json record; ``resolve`` maps a
    run.json path to a Path; ``keypoints(video, methods, frames)`` returns
    ``{(method, frame): (P, K, 3)}``; ``perframe`` is the video's per-frame table or None.

    ``methods`` are the run's methods (report order); a video shows those its entry
    lists. A missing path is noted only for a method the entry names without a path or
    that the video is ``expected`` to have (e.g. it was evaluated with it), not for
    methods this video was never processed with."""
    import pandas as pd

    from ..io import probe
    from .plots import oks_column

    notes: list[str] = []
    listed = entry.get("processed") or {}
    processed = {m: resolve(listed[m]) for m in methods if listed.get(m)}  # report order, not run.json order
    for m in methods:
        if m not in processed and (m in listed or m in expected):
            notes.append(f"{m}: run.json lists no processed video for {video}")
    present = {}
    for m, p in processed.items():
        if p is None or not Path(p).is_file():
            notes.append(f"{m}: processed video {p} is missing; no thumbnails for it")
        else:
            present[m] = Path(p)
    if not present:
        return Strip(video, (), (), {}, {}, notes=tuple(notes)) if notes else None
    tables = {m: FramesTable.read(frames_table_path(p)) for m, p in present.items()}
    for m, t in tables.items():
        if t is None:
            notes.append(f"{m}: no frames table beside {present[m].name}; every face found in its thumbnails is redacted")
    frame_count = int(entry.get("frame_count") or 0)
    fps = float(entry.get("fps") or 0.0)
    infos = {}
    for m, p in list(present.items()):
        try:
            infos[m] = probe(p)
        except Exception as e:
            notes.append(f"{m}: cannot open {p.name} ({e})")
            present.pop(m)
    if not present:
        return Strip(video, (), (), {}, {}, notes=tuple(notes))
    if frame_count <= 0:
        frame_count = max(i.frame_count for i in infos.values())
    if fps <= 0:
        fps = next(iter(infos.values())).fps

    # per input frame -> processed frame index (identical unless fail-closed frames were dropped)
    index_maps: dict[str, dict[int, int] | None] = {}
    for m in list(present):
        n = infos[m].frame_count
        if n == frame_count:
            index_maps[m] = None
            continue
        t = tables.get(m)
        kept = sorted(f for f, d in (t.decision.items() if t else []) if d != "fail_closed")
        if t is not None and fail_closed_policy == "drop" and len(kept) == n:
            index_maps[m] = {f: j for j, f in enumerate(kept)}
        else:
            notes.append(f"{m}: processed video has {n} frames, the original {frame_count}; cannot align frames, no thumbnails")
            present.pop(m)
    if not present:
        return Strip(video, (), (), {}, {}, fps=fps, notes=tuple(notes))

    excluded: set[int] = set()
    for t in tables.values():
        if t is not None:
            excluded |= t.fail_closed()
    score: dict[int, float] = {}
    oks_by = {}
    if perframe is not None and not perframe.empty:
        col = oks_column(perframe)
        if col is not None:
            pf = perframe[perframe["method"].isin(list(present))]
            vals = pd.to_numeric(pf[col], errors="coerce")
            pf = pf.assign(oks_v=vals)
            oks_by = {(str(r.method), int(r.frame)): float(r.oks_v) for r in pf[["method", "frame", "oks_v"]].itertuples()}
            mean = pf.groupby("frame")["oks_v"].mean()
            score = {int(f): float(v) for f, v in mean.items() if np.isfinite(v)}
    frames, why = choose_frames(frame_count, opts.frames_even, opts.frames_worst, score, excluded)
    if excluded:
        notes.append(f"{len(excluded)} fail-closed frame(s) of this video are never shown (redacted by the pipeline)")
    kps = keypoints(video, ["original", *present], frames) if frames else {}
    if frames and not kps:
        notes.append("no keypoints for these frames: thumbnails show no skeletons")

    cells: dict[tuple[int, str], Thumbnail] = {}
    for m, p in present.items():
        imap = index_maps[m]
        want = {f: (imap.get(f) if imap is not None else f) for f in frames}
        try:
            got = read_some_frames(p, [j for j in want.values() if j is not None])
        except Exception as e:
            notes.append(f"{m}: cannot read frames of {p.name} ({e})")
            got = {}
        t = tables.get(m)
        for f in frames:
            j = want[f]
            img = got.get(j) if j is not None else None
            if img is None:
                cells[(f, m)] = Thumbnail(m, f, None, note="frame not decodable in the processed video")
                continue
            regions = t.regions(f) if t is not None else None
            thumb, n_red, note = safe_thumbnail(img, regions, detector, opts.thumb_width, opts.thumb_height, opts.min_cover)
            if thumb is None:
                cells[(f, m)] = Thumbnail(m, f, None, faces_redacted=n_red, note=note)
                continue
            s = thumb.shape[1] / img.shape[1]
            thumb = draw_poses(thumb, s, kps.get(("original", f)), kps.get((m, f)), opts.draw_face_landmarks)
            cells[(f, m)] = Thumbnail(
                m, f, encode_jpeg(thumb, opts.jpeg_quality), thumb.shape[1], thumb.shape[0],
                oks=oks_by.get((m, f)), faces_redacted=n_red, note=note,
            )
    return Strip(video, tuple(present), tuple(frames), why, cells, fps=fps, notes=tuple(notes))


def default_detector():
    """MediaPipe face detection for the report's face check, recall first: a lower score
    than the pipeline's and both BlazeFace models (short and full range) on every image."""
    from ..detect import build_detector

    return build_detector(name="mediapipe", min_score=FACE_CHECK_MIN_SCORE, full_range_every=1)
