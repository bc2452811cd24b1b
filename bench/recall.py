"""Face recall, deid vs deface, on the same frames (issue 9, item 5).

A faster tool that misses faces is not better, so the speed table comes with this one.
For every frame of each clip three box sets are compared:

- **deface**: CenterFace, as deface runs it (its default threshold), on the frames deid
  decoded (same pixels, upright);
- **deid detector**: the raw face detector of the pipeline (``detect.backend``), no
  tracking — like for like with deface's per-frame detection;
- **deid output**: the pipeline's final regions (tracking, interpolation, holds,
  pose-placed heads, padding to the whole head) and fail-closed frames (redacted whole),
  i.e. what deid actually hides.

Two boxes are the same face when IoU >= 0.3. A face deface found counts as hidden by
deid's output when the frame was redacted, or a region has IoU >= 0.3 with it, or at
least half of the face box lies inside deid's anonymized area (the ellipse inscribed
in a region, or the region's box for box-shaped methods) — deid's regions are padded
head boxes, larger than a face box, so IoU alone would undercount them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SAME_FACE_IOU = 0.3
COVERED = 0.5


def as_boxes(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """``[[x1, y1, x2, y2, (score)], ...]`` -> (N, 4) float32 xyxy."""
    if len(rows) == 0:
        return np.zeros((0, 4), np.float32)
    a = np.asarray([r[:4] for r in rows], dtype=np.float32)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"boxes must be rows of x1, y1, x2, y2; got shape {a.shape}")
    return a


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M) (deid's own)."""
    from deid.geometry import box_iou

    return box_iou(a, b)


def matched(ref: np.ndarray, other: np.ndarray, thr: float = SAME_FACE_IOU) -> np.ndarray:
    """For each box of ``ref``: is there a box of ``other`` with IoU >= ``thr``?"""
    m = iou_matrix(ref, other)
    return m.max(axis=1) >= thr if m.size else np.zeros(len(np.asarray(ref).reshape(-1, 4)), bool)


def covered_fraction(box: Sequence[float], regions: np.ndarray, shape: str = "ellipse", n: int = 16) -> float:
    """Fraction of ``box`` lying inside the union of ``regions``' anonymized areas (the
    inscribed ellipse of each region for ``shape="ellipse"``, else the region box),
    estimated on an ``n`` x ``n`` grid of points over the box."""
    regions = np.asarray(regions, np.float64).reshape(-1, 4)
    if len(regions) == 0:
        return 0.0
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    xs = x1 + (np.arange(n) + 0.5) / n * (x2 - x1)
    ys = y1 + (np.arange(n) + 0.5) / n * (y2 - y1)
    px, py = np.meshgrid(xs, ys)
    inside = np.zeros(px.shape, bool)
    for rx1, ry1, rx2, ry2 in regions:
        if shape == "ellipse":
            cx, cy = (rx1 + rx2) / 2, (ry1 + ry2) / 2
            ax, ay = max((rx2 - rx1) / 2, 1e-6), max((ry2 - ry1) / 2, 1e-6)
            inside |= ((px - cx) / ax) ** 2 + ((py - cy) / ay) ** 2 <= 1.0
        else:
            inside |= (px >= rx1) & (px <= rx2) & (py >= ry1) & (py <= ry2)
    return float(inside.mean())


def hidden_by(faces: np.ndarray, regions: np.ndarray, redacted: bool, shape: str = "ellipse") -> np.ndarray:
    """For each face box: does deid's output hide it (see the module doc)?"""
    faces = np.asarray(faces, np.float32).reshape(-1, 4)
    if redacted:
        return np.ones(len(faces), bool)
    by_iou = matched(faces, regions)
    return np.array([bool(by_iou[i]) or covered_fraction(f, regions, shape) >= COVERED for i, f in enumerate(faces)], bool)


@dataclass(frozen=True)
class ClipRecall:
    """Frame counts of one clip's comparison."""

    clip: str
    frames: int
    faces_deface: int  # deface detections, all frames
    faces_deid_detector: int
    frames_deface_only: int  # deface found a face the deid detector did not (same frame)
    frames_deid_only: int  # the deid detector found a face deface did not
    frames_deface_face_visible_in_deid: int  # a face deface found is NOT hidden by deid's output
    frames_deid_region_not_in_deface: int  # deid hid a region where deface blurred nothing
    frames_redacted: int  # deid fail-closed frames (whole frame redacted)
    examples: dict[str, list[int]]  # first few frame indices of each disagreement kind
    visible_groups: list[dict[str, Any]]  # the deface faces deid leaves visible, grouped by place (see group_boxes)
    visible: list[list[float]] = field(default_factory=list)  # each of them: [frame, x1, y1, x2, y2, score]

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def compare_clip(
    clip: str,
    deface: Sequence[Sequence[Sequence[float]]],
    detector: Sequence[Sequence[Sequence[float]]],
    regions: Sequence[dict[str, Any]],
    shape: str = "ellipse",
    deface_mask_scale: float = 1.3,
    keep_examples: int = 5,
) -> ClipRecall:
    """Compare the three box sets of one clip frame by frame (see the module doc).
    ``regions``: per frame ``{"index", "decision", "boxes"}`` from the pipeline's plans.
    ``deface_mask_scale``: deface blurs its box grown by this factor (its default 1.3)
    — used only to decide whether deface blurred something where deid placed a region."""
    n = len(deface)
    if len(detector) != n or len(regions) != n:
        raise ValueError(f"{clip}: frame counts differ: deface {n}, deid detector {len(detector)}, deid regions {len(regions)}")
    ex: dict[str, list[int]] = {"deface_only": [], "deid_only": [], "visible_in_deid": [], "deid_region_not_in_deface": []}
    c = dict(fd=0, fr=0, d_only=0, r_only=0, vis=0, extra=0, red=0)
    visible: list[tuple[int, list[float]]] = []
    for i in range(n):
        d = as_boxes(deface[i])
        r = as_boxes(detector[i])
        plan = regions[i]
        if int(plan["index"]) != i:
            raise ValueError(f"{clip}: region rows out of order at {i} (index {plan['index']})")
        g = as_boxes(plan["boxes"])
        redacted = plan["decision"] == "fail_closed"
        c["fd"] += len(d)
        c["fr"] += len(r)
        c["red"] += int(redacted)
        kinds = []
        if len(d) and not matched(d, r).all():
            c["d_only"] += 1
            kinds.append("deface_only")
        if len(r) and not matched(r, d).all():
            c["r_only"] += 1
            kinds.append("deid_only")
        hid = hidden_by(d, g, redacted, shape) if len(d) else np.ones(0, bool)
        if len(d) and not hid.all():
            c["vis"] += 1
            kinds.append("visible_in_deid")
            visible += [(i, list(deface[i][k])) for k in np.flatnonzero(~hid)]
        if len(g) and not redacted:
            blurred = _scale(d, deface_mask_scale)
            extra = [not (matched(gi[None], d)[0] or any(covered_fraction(di, gi[None], shape) >= COVERED for di in d)
                          or covered_fraction(gi, blurred, "ellipse") >= COVERED) for gi in g]
            if any(extra):
                c["extra"] += 1
                kinds.append("deid_region_not_in_deface")
        for k in kinds:
            if len(ex[k]) < keep_examples:
                ex[k].append(i)
    return ClipRecall(clip, n, c["fd"], c["fr"], c["d_only"], c["r_only"], c["vis"], c["extra"], c["red"], ex, group_boxes(visible),
                      [[float(i), *[float(v) for v in b]] for i, b in visible])


def group_boxes(items: Sequence[tuple[int, Sequence[float]]], max_groups: int = 5) -> list[dict[str, Any]]:
    """Group ``(frame, [x1, y1, x2, y2, score])`` detections by place: a box joins the
    group whose mean box it overlaps (IoU >= 0.1) or whose centre lies within one box
    size, else starts a new one. Largest groups first — so a report can say "155 frames,
    always the same spot" (one real head, or one persistent false positive) instead of
    a bare count."""
    groups: list[dict[str, Any]] = []
    for i, b in items:
        bb = np.asarray(b[:4], np.float64)
        best = None
        for g in groups:
            mean = g["sum"] / g["n"]
            size = max(mean[2] - mean[0], mean[3] - mean[1], 1.0)
            near = np.hypot(*((bb[:2] + bb[2:]) / 2 - (mean[:2] + mean[2:]) / 2)) <= size
            if iou_matrix(bb[None], mean[None])[0, 0] >= 0.1 or near:
                best = g
                break
        if best is None:
            best = {"sum": np.zeros(4), "n": 0, "frames": [], "scores": []}
            groups.append(best)
        best["sum"] += bb
        best["n"] += 1
        best["frames"].append(int(i))
        best["scores"].append(float(b[4]) if len(b) > 4 else float("nan"))
    out = []
    for g in sorted(groups, key=lambda g: -g["n"])[:max_groups]:
        m = g["sum"] / g["n"]
        out.append({"frames": len(set(g["frames"])), "first_frame": min(g["frames"]), "last_frame": max(g["frames"]),
                    "mean_box": [round(float(v)) for v in m], "size_px": f"{m[2] - m[0]:.0f}x{m[3] - m[1]:.0f}",
                    "score_min": round(min(g["scores"]), 3), "score_max": round(max(g["scores"]), 3)})
    return out


def _scale(boxes: np.ndarray, s: float) -> np.ndarray:
    """Boxes grown about their centre by ``s`` (deface's ``--mask-scale``)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(b) == 0:
        return b
    c = (b[:, :2] + b[:, 2:]) / 2
    h = (b[:, 2:] - b[:, :2]) / 2 * s
    return np.concatenate([c - h, c + h], axis=1)


def save_examples(frames_npy: Path, rec: ClipRecall, deface: Sequence[Any], detector: Sequence[Any], regions: Sequence[Any],
                  out_dir: Path, limit: int = 3) -> list[str]:
    """Write a few disagreement frames with all three box sets drawn (deface red,
    deid detector green, deid output blue) for a person to look at."""
    import cv2

    frames = np.load(frames_npy, mmap_mode="r")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    todo = [(kind, i) for kind, idx in rec.examples.items() for i in idx[:limit]]
    todo += [(f"visible_group{k + 1}", g["first_frame"]) for k, g in enumerate(rec.visible_groups)]
    for kind, i in todo:
        img = cv2.cvtColor(np.ascontiguousarray(frames[i]), cv2.COLOR_RGB2BGR)
        for rows, col in ((regions[i]["boxes"], (255, 0, 0)), (detector[i], (0, 200, 0)), (deface[i], (0, 0, 255))):
            for b in rows:
                cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), col, 2)
        p = out_dir / f"{rec.clip}_{kind}_{i:05d}.png"
        cv2.imwrite(str(p), img)
        written.append(str(p))
    return written


def load_json(p: Path) -> Any:
    return json.loads(Path(p).read_text())


# ----------------------------------------------------------------------------- review
# A mechanical count cannot tell a face from a wall: CenterFace at deface's threshold also
# fires on background. bench/recall_review.json records detections a person looked at and
# judged (clip, frame, box, verdict, what it shows); a counted frame is excused only when
# every deface box left visible in it matches a reviewed "not a face" entry of the same
# clip and frame (IoU >= REVIEW_IOU). Anything new stays counted until someone looks.
REVIEW_FILE = Path(__file__).resolve().parent / "recall_review.json"
REVIEW_IOU = 0.5


def load_review(path: Path = REVIEW_FILE) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        return []
    entries = load_json(path)["entries"]
    for e in entries:
        if e.get("verdict") not in ("not a face", "face"):
            raise ValueError(f"{path}: verdict must be 'not a face' or 'face', got {e.get('verdict')!r}")
        as_boxes([e["box"]])
    return entries


def apply_review(clip: str, visible: Sequence[Sequence[float]], entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Split the frames where a deface box stays visible into frames whose every such box
    a person reviewed as not a face, and the rest (unreviewed, or reviewed as a face)."""
    by_frame: dict[int, list[np.ndarray]] = {}
    for v in visible:
        by_frame.setdefault(int(v[0]), []).append(np.asarray(v[1:5], np.float32))
    excused, counted = [], []
    for f, boxes in sorted(by_frame.items()):
        notface = as_boxes([e["box"] for e in entries if e["clip"] == clip and int(e["frame"]) == f and e["verdict"] == "not a face"])
        ok = len(notface) > 0 and all(iou_matrix(b[None], notface).max() >= REVIEW_IOU for b in boxes)
        (excused if ok else counted).append(f)
    return {"frames_reviewed_not_face": excused, "frames_unreviewed_or_face": counted}


def review_image(src: Path, clip: str, entries: Sequence[dict[str, Any]], out: Path, context: int = 60, tile: int = 240) -> Path:
    """The reviewed detections of ``clip`` side by side (box drawn, ``context`` pixels
    around it), so a reader can check the verdicts (docs/recall_review.png)."""
    import cv2

    from deid.io import read_frames

    es = [e for e in entries if e["clip"] == clip]
    frames = read_frames(src, sorted({int(e["frame"]) for e in es}))
    by = dict(zip(sorted({int(e["frame"]) for e in es}), frames))
    tiles = []
    for e in es:
        f = by[int(e["frame"])].copy()
        x1, y1, x2, y2 = (int(round(v)) for v in e["box"])
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        r = max(context, (x2 - x1) // 2 + 10, (y2 - y1) // 2 + 10)
        cv2.rectangle(f, (x1, y1), (x2, y2), (255, 0, 0), 1)
        X1, Y1, X2, Y2 = max(0, cx - r), max(0, cy - r), min(f.shape[1], cx + r), min(f.shape[0], cy + r)
        t = cv2.resize(f[Y1:Y2, X1:X2], (tile, tile), interpolation=cv2.INTER_CUBIC)
        cv2.putText(t, f"frame {e['frame']}: {e['verdict']}", (4, 14), 0, 0.42, (255, 255, 0), 1)
        tiles.append(t)
    cols = 4
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    img = np.vstack([np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)])
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return out


if __name__ == "__main__":
    # python -m bench.recall  -> redraw docs/recall_review.png from bench/recall_review.json
    from .common import DEMO_CLIP, REPO

    print(review_image(DEMO_CLIP, "pancake_demo", load_review(), REPO / "docs" / "recall_review.png"))
