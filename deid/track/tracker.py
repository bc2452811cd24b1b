"""From per-frame evidence to per-frame face regions, failing closed.

Evidence per frame (:class:`Observation`): the face detector's boxes, head boxes placed
from body keypoints where the face detector missed, and whether a person is present at
all. :func:`plan_window` turns a window of observations into :class:`FramePlan` rows:

1. face boxes are padded into head boxes; pose-placed boxes that overlap one are dropped;
2. boxes are linked into tracks frame to frame (IoU, with a centre-distance gate for
   fast motion), allowing gaps of up to ``max_gap`` frames;
3. gaps are filled by interpolation (slightly enlarged for motion uncertainty); tracks
   are held ``hold_frames`` before their first and after their last evidence, since a
   detector typically starts firing a few frames after a face appears; and where one
   track's evidence stops and another's resumes within ``max_gap`` frames, no further
   than a head moves, a bridge is interpolated between them too (:func:`_bridges`: a
   fast face missed for a few frames, two faces crossing while missed);
4. boxes are smoothed with a centred moving average, then re-grown to cover the
   evidence of that frame (smoothing must never uncover what the detector saw);
5. a frame where a person is present and no head region exists is marked
   ``FAIL_CLOSED``; the renderer then applies the configured policy (redact by default).

:class:`Planner` applies this in a sliding window with ``lookahead`` frames of context
on each side, so memory is bounded and results match a whole-video run for every frame
whose neighbourhood fits in the window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ..config import TrackConfig
from ..types import BoxSource, Detections, FaceRegion, FrameDecision, FramePlan
from . import boxes as B

_RANK = {BoxSource.DETECTED: 0, BoxSource.POSE: 1, BoxSource.INTERPOLATED: 2, BoxSource.HELD: 3}


@dataclass(frozen=True, eq=False)
class Observation:
    """Raw evidence for one frame."""

    index: int
    faces: Detections = field(default_factory=Detections.empty)
    head_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # pose-placed
    person_present: bool = False  # a person is in the frame (face, pose or segmentation)
    pose_ran: bool = False

    def __post_init__(self) -> None:
        hb = np.asarray(self.head_boxes, np.float32).reshape(-1, 4)
        object.__setattr__(self, "head_boxes", hb)
        if len(self.faces) or len(hb):
            object.__setattr__(self, "person_present", True)


@dataclass
class _Point:
    box: np.ndarray
    source: BoxSource
    score: float
    landmarks: np.ndarray | None = None
    face_box: np.ndarray | None = None
    evidence: np.ndarray | None = None  # box that smoothing must keep covering


@dataclass
class _Track:
    points: dict[int, _Point] = field(default_factory=dict)
    first: int = 0
    last_frame: int = 0  # points are added in frame order: the newest is the last

    def add(self, index: int, point: _Point) -> None:
        self.points[index] = point
        self.last_frame = index

    def last_box(self) -> np.ndarray:
        return self.points[self.last_frame].box


def _candidates(obs: Observation, cfg: TrackConfig) -> list[_Point]:
    pts: list[_Point] = []
    f = obs.faces
    for i in range(len(f)):
        hb = B.pad_face_box(f.boxes[i], cfg.pad_side, cfg.pad_top, cfg.pad_bottom)
        lm = None if f.landmarks is None else f.landmarks[i]
        pts.append(_Point(hb, BoxSource.DETECTED, float(f.scores[i]), lm, f.boxes[i], hb))
    faces = list(pts)
    for hb in obs.head_boxes:
        if any(B.same_head(hb, p.face_box, p.box) for p in faces):
            continue  # the face detector already covers this head
        # (a head beside a found face, or beside another pose-placed head, is kept)
        pts.append(_Point(hb.astype(np.float32), BoxSource.POSE, 0.5, None, None, hb.astype(np.float32)))
    return pts


def _associate(observations: list[Observation], cfg: TrackConfig) -> list[_Track]:
    tracks: list[_Track] = []
    for obs in observations:
        cands = _candidates(obs, cfg)
        if not cands:
            continue
        live = [t for t in tracks if obs.index - t.last_frame <= cfg.max_gap + 1]
        pairs = []
        if live:
            last = [t.last_box() for t in live]
            ious = B.box_iou(np.stack(last), np.stack([c.box for c in cands])).tolist()  # one call, same values
            for ti, lb in enumerate(last):
                for ci, c in enumerate(cands):
                    iou = ious[ti][ci]
                    dist = B.center_distance(lb, c.box)
                    if iou >= cfg.iou_threshold or dist <= 0.5:
                        pairs.append((iou - 0.1 * dist, ti, ci))
        pairs.sort(reverse=True)
        used_t, used_c = set(), set()
        for _, ti, ci in pairs:
            if ti in used_t or ci in used_c:
                continue
            used_t.add(ti)
            used_c.add(ci)
            live[ti].add(obs.index, cands[ci])
        for ci, c in enumerate(cands):
            if ci not in used_c:
                tracks.append(_Track({obs.index: c}, obs.index, obs.index))
    return tracks


def _reinforce_pose(track: _Track, cfg: TrackConfig) -> None:
    """A pose-placed box between two face detections of the same track (within max_gap)
    also gets the box interpolated between those detections: head boxes from body
    keypoints are rougher than padded face boxes, so the union covers both."""
    det = sorted(f for f, p in track.points.items() if p.source == BoxSource.DETECTED)
    if len(det) < 2:
        return
    for f, p in track.points.items():
        if p.source != BoxSource.POSE:
            continue
        k = int(np.searchsorted(det, f))
        if 0 < k < len(det):
            a, b = det[k - 1], det[k]
            if b - a - 1 <= cfg.max_gap:
                ib = B.interpolate(track.points[a].box, track.points[b].box, (f - a) / (b - a))
                p.box = B.union(p.box, ib)
                p.evidence = p.box


def _between(fa: int, pa: _Point, fb: int, pb: _Point) -> dict[int, _Point]:
    """Interpolated regions on the frames strictly between evidence ``pa`` (frame ``fa``)
    and ``pb`` (frame ``fb``), slightly enlarged for motion uncertainty."""
    return {k: _Point(B.expand(B.interpolate(pa.box, pb.box, (k - fa) / (fb - fa)), 0.05), BoxSource.INTERPOLATED,
                      min(pa.score, pb.score))
            for k in range(fa + 1, fb)}


def _fill(track: _Track, cfg: TrackConfig, lo: int, hi: int) -> dict[int, _Point]:
    """Interpolate gaps and add holds; frames limited to [lo, hi)."""
    _reinforce_pose(track, cfg)
    frames = sorted(track.points)
    out: dict[int, _Point] = dict(track.points)
    runs: list[list[int]] = [[frames[0]]]
    for a, b in zip(frames, frames[1:]):
        if b - a - 1 <= cfg.max_gap:
            out.update(_between(a, track.points[a], b, track.points[b]))
            runs[-1].append(b)
        else:
            runs.append([b])
    for run in runs:
        first, last = run[0], run[-1]
        v_first, v_last = _velocity(track, run[: _VELOCITY_SPAN + 1]), _velocity(track, run[-_VELOCITY_SPAN - 1:])
        for d in range(1, cfg.hold_frames + 1):
            grow = 0.05 + 0.02 * d
            if first - d >= lo and first - d not in out:
                out[first - d] = _Point(_held(track.points[first].box, -d * v_first, grow), BoxSource.HELD, 0.0)
            if last + d < hi and last + d not in out:
                out[last + d] = _Point(_held(track.points[last].box, d * v_last, grow), BoxSource.HELD, 0.0)
    return out


#: frames of evidence at a run's end that give the velocity its hold follows
_VELOCITY_SPAN = 5


def _velocity(track: _Track, frames: list[int]) -> np.ndarray:
    """The box centre's motion in pixels a frame over ``frames`` (a run's first or last
    evidence frames, ascending); zero for a single frame."""
    if len(frames) < 2 or frames[-1] == frames[0]:
        return np.zeros(2, np.float32)
    a, b = track.points[frames[0]].box, track.points[frames[-1]].box
    return (((b[:2] + b[2:]) - (a[:2] + a[2:])) / 2 / (frames[-1] - frames[0])).astype(np.float32)


def _held(box: np.ndarray, shift: np.ndarray, grow: float) -> np.ndarray:
    """A held region: the box where the face was last seen and the box moved on by
    ``shift`` (its velocity times the frames held), both grown by ``grow``. A face that
    keeps walking while the detector misses it was left in clear by a hold that only
    stood still (3 px a frame on a 40 px face: a third of it by the 8th held frame); one
    that stops is still covered. The region is the box whose ellipse holds both boxes'
    ellipses (their union's ellipse left the corners of a diagonal move out)."""
    still = B.expand(box, grow)
    if not np.any(shift):
        return still
    moved = still + np.array([shift[0], shift[1], shift[0], shift[1]], np.float32)
    return B.ellipses_cover([still, moved])


def _smooth(points: dict[int, _Point], window: int) -> None:
    if window <= 1 or len(points) < 2:
        return
    frames = sorted(points)
    half = window // 2
    raw = {f: points[f].box.copy() for f in frames}
    for f in frames:
        neigh = [raw[g] for g in range(f - half, f + half + 1) if g in raw]
        avg = np.mean(neigh, axis=0).astype(np.float32)
        keep = points[f].evidence if points[f].evidence is not None else raw[f]
        points[f].box = B.union(avg, keep)


def _confirmed(t: _Track, cfg: TrackConfig) -> bool:
    n_det = sum(1 for p in t.points.values() if p.source == BoxSource.DETECTED)
    n_pose = sum(1 for p in t.points.values() if p.source == BoxSource.POSE)
    return n_det >= cfg.min_hits or n_pose > 0


#: a bridge's far end may be this far (in head sizes) from where the face's motion when
#: last seen puts it, plus ``_BRIDGE_DRIFT`` a frame missed
_BRIDGE_SLACK = 0.5
_BRIDGE_DRIFT = 0.1


def _bridges(tracks: list[_Track], cfg: TrackConfig) -> list[tuple[_Track, dict[int, _Point]]]:
    """Interpolated regions from where one track's evidence stops (its end, or the start
    of a gap in it) to where another track's evidence resumes (its start, or the end of
    a gap) within ``max_gap`` frames, where a head could have moved that far (at most the
    centre-distance gate of :func:`_associate`, 0.5 box sizes, a frame) and near where
    the motion it had when last seen (or when seen again, going back) puts it.

    Linking compares a track's last box with the next evidence however many frames were
    missed, so a face moving a fraction of its size a frame breaks its track over a few
    missed frames (10 px a frame on a 32 px face missed for 4 frames: two tracks); the
    two tracks' holds stay where the face was last and first seen, and the face between
    them was left in clear. And two faces that cross while missed are linked to each
    other's track, so the interpolation runs between the wrong boxes and the true paths
    were left in clear. A bridge covers the straight path of the other hypothesis; it is
    added beside the holds and interpolations, never instead of them, so a wrong
    pairing only covers more."""
    stops: list[tuple[int, _Track, _Point, np.ndarray]] = []  # (frame, track, evidence, velocity there)
    starts: list[tuple[int, _Track, _Point, np.ndarray]] = []
    for t in tracks:
        frames = sorted(t.points)
        runs: list[list[int]] = []
        for f in frames:
            if runs and f == runs[-1][-1] + 1:
                runs[-1].append(f)
            else:
                runs.append([f])
        for run in runs:
            stops.append((run[-1], t, t.points[run[-1]], _velocity(t, run[-_VELOCITY_SPAN - 1:])))
            starts.append((run[0], t, t.points[run[0]], _velocity(t, run[: _VELOCITY_SPAN + 1])))
    out: list[tuple[_Track, dict[int, _Point]]] = []
    if not stops or not starts:
        return out
    s_frame = np.asarray([f for f, _, _, _ in starts])
    s_box = np.stack([p.box for _, _, p, _ in starts]).astype(np.float64)
    s_c = (s_box[:, :2] + s_box[:, 2:]) / 2
    s_size = (s_box[:, 2] - s_box[:, 0] + s_box[:, 3] - s_box[:, 1]) / 2
    s_v = np.stack([v for _, _, _, v in starts]).astype(np.float64)
    for fa, ta, pa, va in stops:
        n = s_frame - fa  # frames from the last evidence to the next
        a = np.asarray(pa.box, np.float64)
        a_c = (a[:2] + a[2:]) / 2
        size = np.maximum(0.5 * ((a[2] - a[0] + a[3] - a[1]) / 2 + s_size), 1e-6)
        dist = np.linalg.norm(s_c - a_c, axis=1) / size  # as B.center_distance
        # where the face would be had it kept the motion it had when last seen (or, going
        # back, when seen again): two still faces some way apart (a patient and a person
        # in the background, each found now and then) are not one face that jumped
        ahead = np.linalg.norm(s_c - (a_c + np.outer(n, va)), axis=1) / size
        back = np.linalg.norm((s_c - s_v * n[:, None]) - a_c, axis=1) / size
        off = np.minimum(ahead, back)
        ok = (n >= 2) & (n <= cfg.max_gap + 1) & (dist <= 0.5 * n) & (off <= _BRIDGE_SLACK + _BRIDGE_DRIFT * n)
        ok &= np.asarray([t is not ta for _, t, _, _ in starts])  # the track's own gaps: interpolated by _fill
        if not ok.any():
            continue
        # one bridge a stop: to the evidence that resumes first (the nearest to the motion of those)
        j = int(np.lexsort((np.where(ok, off, np.inf), np.where(ok, n, np.iinfo(np.int64).max)))[0])
        fb, _, pb, _ = starts[j]
        out.append((ta, _between(fa, pa, fb, pb)))
    return out


def plan_window(
    observations: Iterable[Observation],
    cfg: TrackConfig,
    width: int,
    height: int,
    emit: tuple[int, int] | None = None,
) -> list[FramePlan]:
    """Plans for the frames in ``emit`` = [start, stop) (default: all observed frames),
    using every observation given as context."""
    obs = sorted(observations, key=lambda o: o.index)
    if not obs:
        return []
    lo, hi = obs[0].index, obs[-1].index + 1
    e_lo, e_hi = emit if emit is not None else (lo, hi)
    tracks = [t for t in _associate(obs, cfg) if _confirmed(t, cfg)]
    per_frame: dict[int, list[FaceRegion]] = {}
    filled = _bridges(tracks, cfg)  # on the evidence as found (smoothing grows the boxes in place)
    for t in tracks:
        pts = _fill(t, cfg, lo, hi)
        _smooth(pts, cfg.smooth_window)
        filled.append((t, pts))
    for t, pts in filled:
        tid = int(t.first) * 1000 + int(abs(hash(tuple(np.round(t.points[t.first].box).astype(int)))) % 1000)
        for f, p in pts.items():
            if not (e_lo <= f < e_hi):
                continue
            box = B.clip(p.box, width, height)
            if B.area(box) < 4.0:
                continue  # entirely outside the frame
            # a head cut off by the frame edge: the shape (ellipse) and the blur / pixel
            # size follow the whole head, not the visible part (else the ellipse narrows
            # to nothing at the edge, leaving eyes or mouth there uncovered)
            full = None if np.allclose(box, p.box) else np.asarray(p.box, np.float32)
            per_frame.setdefault(f, []).append(
                FaceRegion(box=box, track_id=tid, source=p.source, score=p.score, landmarks=p.landmarks, face_box=p.face_box, full_box=full)
            )
    by_index = {o.index: o for o in obs}
    plans = []
    for f in range(e_lo, e_hi):
        o = by_index.get(f)
        faces = tuple(sorted(per_frame.get(f, []), key=lambda r: (_RANK[r.source], -r.score)))
        present = bool(o.person_present) if o is not None else False
        decision = FrameDecision.FAIL_CLOSED if (present and not faces) else FrameDecision.OK
        plans.append(FramePlan(index=f, faces=faces, decision=decision, person_present=present or bool(faces)))
    return plans


class Planner:
    """Sliding-window planner: ``add()`` observations in frame order, then take the plans
    that are final with ``ready()``; ``finish()`` returns the rest.

    A plan for frame f is final once frames up to f + lookahead have been observed."""

    def __init__(self, cfg: TrackConfig, width: int, height: int):
        self.cfg = cfg
        self.width, self.height = int(width), int(height)
        self.L = int(cfg.lookahead)
        self._obs: deque[Observation] = deque()
        self._next_emit = None  # first frame not yet emitted
        self._last = -1

    def add(self, observations: Iterable[Observation]) -> None:
        for o in observations:
            if o.index <= self._last:
                raise ValueError(f"observations must arrive in frame order (got {o.index} after {self._last})")
            self._last = o.index
            if self._next_emit is None:
                self._next_emit = o.index
            self._obs.append(o)

    def _emit(self, stop: int) -> list[FramePlan]:
        if self._next_emit is None or stop <= self._next_emit:
            return []
        start = self._next_emit
        ctx = [o for o in self._obs if start - self.L <= o.index < stop + self.L]
        plans = plan_window(ctx, self.cfg, self.width, self.height, emit=(start, stop))
        self._next_emit = stop
        while self._obs and self._obs[0].index < stop - self.L:
            self._obs.popleft()
        return plans

    def ready(self) -> list[FramePlan]:
        return self._emit(self._last + 1 - self.L)

    def finish(self) -> list[FramePlan]:
        return self._emit(self._last + 1)
