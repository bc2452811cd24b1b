"""How much pose survives de-identification: COCO keypoint AP of the processed video's
poses against the original video's poses, overall and per body-region group.

The scoring is COCO's own (pycocotools ``COCOeval`` with ``iouType="keypoints"``), not a
re-derivation: we only translate per-frame keypoint arrays into COCO ground truth and
detections, set ``params.kpt_oks_sigmas`` from the keypoint schema, and read the results,
with one change in the last step: detections of equal score count as one threshold of the
precision/recall curve (:func:`_precision_ties_as_one`; identical to COCO's without ties).
For reference, COCOeval's object keypoint similarity of a detection d to a ground-truth
person g is

    OKS = sum_i exp(-d_i^2 / (2 s^2 k_i^2)) / #visible,   over i visible in g,
    s^2 = area(g),  k_i = 2 sigma_i,

and AP@[.5:.95] averages the 101-point interpolated precision over OKS thresholds
0.50, 0.55, ..., 0.95 (COCO keypoint evaluation, cocodataset.org/#keypoints-eval).

Translation choices (the only places where this module decides anything):

- Ground truth = the original video's poses. A keypoint is labelled visible (v=2) when
  its score is >= ``vis_threshold`` and unlabelled (v=0) otherwise; a person with no
  visible keypoint in a region group is ignored for that group (COCOeval ignores GT with
  ``num_keypoints == 0``), so e.g. a person whose hands are out of view does not count
  against the hands AP.
- Area ``s^2``: COCO uses the person's segmentation area, which we do not have. We use
  the area of the bounding box of the person's visible ground-truth keypoints (all
  regions), floored at ``min_area``. This scale is shared by every region group, as
  COCO-WholeBody's evaluation uses the whole-person area for its body/foot/face/hand
  scores (Jin et al., ECCV 2020). Which is larger depends on the view: for a standing
  person in full view the box is larger than the segment, but for a talking head (the
  keypoints span eyes, ears and shoulders; hair, neck and chest lie outside them) it is
  smaller (measured on the demo's talking head: 16,556 px^2 against 43,622 px^2 for
  MediaPipe's selfie segment), so there our OKS is stricter than COCO's for the same
  error. A person whose visible points lie on one line has a box of area ~0: the
  ``min_area`` floor (1 px^2) then makes any error fatal for that person.
- Detections = the processed video's poses. Points with score 0 are "not found" and are
  placed far outside the image, so they contribute exp(-inf) = 0 to OKS (a keypoint the
  estimator lost after de-identification is an error, not a free pass). A detection's
  score, which orders the detections for the precision/recall curve, is the mean score
  of the person's visible points (score >= ``vis_threshold``) over all regions, the same
  in every group as in COCO-WholeBody (one score a person). A per-group score would tie:
  MediaPipe gives every face-mesh and hand point 1.0, and COCOeval breaks ties by frame
  order, so the face AP of the same frames moved 14x when they were reordered. A
  detection with no visible point in a group is dropped from that group, mirroring the
  ground-truth rule, so evaluating a video against itself gives AP 1.0 in every group.
- Ignored ground truth's ``bbox`` (used by COCOeval only to absorb detections near
  people who are not labelled) is the box of all the person's found points.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError

#: where "not found" detection points are put (far outside any image: OKS term 0).
MISSING_XY = -1.0e6
#: default groups reported (names of ``deid.pose.schema.GROUPS``).
DEFAULT_GROUPS = ("overall", "body", "head", "face", "hands", "feet")


@dataclass(frozen=True, eq=False)
class PoseEvaluation:
    """Result of :func:`evaluate_pose`. Dicts are keyed by group name.

    - ``ap`` / ``ap50`` / ``ap75``: COCO AP@[.5:.95], AP@.5, AP@.75; NaN when the group has
      no ground truth anywhere in the clip.
    - ``num_gt``: ground-truth persons that count in the group (summed over frames).
    - ``frame_oks``: (F,) per frame, the mean over counted GT persons of their best OKS
      against any detection (0 when the processed frame has no person); NaN for frames
      without counted GT.
    - ``person_oks``: per frame, (P_gt,) best OKS per GT person (NaN where not counted).
    - ``keypoint_error``: (K,) mean over matched pairs of ``|d_i| / sqrt(area)``, the
      distance in units of the person's scale, using the overall best-OKS detection;
      NaN for keypoints never visible in both.
    - ``keypoint_missing``: (K,) fraction of visible GT points with no found point in
      the matched detection (or no detection at all); NaN for never-visible keypoints.
    """

    ap: dict[str, float]
    ap50: dict[str, float]
    ap75: dict[str, float]
    num_gt: dict[str, int]
    frame_oks: dict[str, np.ndarray]
    person_oks: dict[str, list[np.ndarray]]
    keypoint_error: np.ndarray
    keypoint_missing: np.ndarray
    vis_threshold: float = 0.3
    groups: tuple[str, ...] = field(default=DEFAULT_GROUPS)


# ----------------------------------------------------------------------------- inputs


def _as_frames(seq: Sequence[np.ndarray], what: str, k: int | None) -> list[np.ndarray]:
    out = []
    for i, a in enumerate(seq):
        a = getattr(a, "data", a)  # deid.types.Keypoints or a bare array
        arr = np.asarray(a, dtype=np.float64)
        if arr.size == 0:
            arr = arr.reshape(0, k or 0, 3)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise InvalidInputError(f"{what}[{i}]: keypoints must have shape (P, K, 3) x, y, score; got {arr.shape}")
        if k is not None and arr.shape[0] and arr.shape[1] != k:
            raise InvalidInputError(
                f"{what}[{i}]: {arr.shape[1]} keypoints per person, expected {k} (sigmas given for {k}); "
                "map poses onto one schema before evaluating"
            )
        out.append(arr)
    return out


def _schema_defaults(sigmas, groups):
    if sigmas is not None and groups is not None and not isinstance(groups, (list, tuple)):
        return np.asarray(sigmas, np.float64), dict(groups)
    from ..pose import schema  # the one table of sigmas and regions

    sig = schema.sigmas() if sigmas is None else np.asarray(sigmas, np.float64)
    if groups is None:
        groups = DEFAULT_GROUPS
    if isinstance(groups, (list, tuple)):
        groups = {g: schema.indices(g) for g in groups}
    return sig, dict(groups)


# ----------------------------------------------------------------------------- COCO glue


def _visible(p: np.ndarray, thr: float) -> np.ndarray:
    return np.isfinite(p[:, 0]) & np.isfinite(p[:, 1]) & (p[:, 2] >= thr)


def _found(p: np.ndarray) -> np.ndarray:
    return np.isfinite(p[:, 0]) & np.isfinite(p[:, 1]) & (p[:, 2] > 0)


def _box(xy: np.ndarray) -> list[float]:
    if len(xy) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def person_area(person: np.ndarray, vis_threshold: float, min_area: float = 1.0) -> float:
    """Scale s^2 of one GT person: area of the box of its visible keypoints (see module doc)."""
    vis = _visible(person, vis_threshold)
    _, _, w, h = _box(person[vis, :2])
    return max(w * h, float(min_area))


def _gt_anns(frames, idx, thr, min_area):
    anns, ann_id = [], 0
    for f, persons in enumerate(frames):
        for p, person in enumerate(persons):
            ann_id += 1
            sub = person[idx]
            vis = _visible(sub, thr)
            kp = np.zeros((len(idx), 3))
            kp[vis, :2] = sub[vis, :2]
            kp[vis, 2] = 2
            found_all = person[_found(person), :2]
            anns.append(
                {
                    "id": ann_id,
                    "image_id": f + 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "keypoints": kp.reshape(-1).tolist(),
                    "num_keypoints": int(vis.sum()),
                    "area": person_area(person, thr, min_area),
                    "bbox": _box(found_all),
                    "_frame": f,
                    "_person": p,
                }
            )
    return anns


def _dt_anns(frames, idx, thr):
    anns, ann_id = [], 0
    for f, persons in enumerate(frames):
        for p, person in enumerate(persons):
            sub = person[idx]
            vis = _visible(sub, thr)
            if not vis.any():
                continue
            found = _found(sub)
            whole = _visible(person, thr)  # the person's score, the same in every group (see module doc)
            kp = np.full((len(idx), 3), MISSING_XY)
            kp[found, :2] = sub[found, :2]
            kp[:, 2] = 1.0
            bbox = _box(sub[vis, :2])
            ann_id += 1
            anns.append(
                {
                    "id": ann_id,
                    "image_id": f + 1,
                    "category_id": 1,
                    "keypoints": kp.reshape(-1).tolist(),
                    "score": float(person[whole, 2].mean()),
                    "area": bbox[2] * bbox[3],
                    "bbox": bbox,
                    "_frame": f,
                    "_person": p,
                }
            )
    return anns


def _coco(images, anns):
    from pycocotools.coco import COCO

    c = COCO()
    c.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        c.createIndex()
    return c


def _ap(precision: np.ndarray, t: int | None = None) -> float:
    """COCOeval.summarize's AP for area 'all' and the largest maxDets, without printing."""
    p = precision[:, :, :, 0, -1] if t is None else precision[t : t + 1, :, :, 0, -1]
    p = p[p > -1]
    return float(p.mean()) if p.size else float("nan")


def _precision_ties_as_one(ev) -> np.ndarray:
    """COCOeval.accumulate's interpolated precision (T, R, 1, 1, 1) for our one
    category, area range and maxDets, with one change: detections of equal score form one
    threshold (the precision/recall curve gets a point only where the score changes, as
    scikit-learn's average_precision does). COCOeval steps through a tie in frame order,
    so AP would depend on which frames came first; without ties both are the same."""
    p = ev.params
    n_t, n_r = len(p.iouThrs), len(p.recThrs)
    out = -np.ones((n_t, n_r, 1, 1, 1))
    evals = [e for e in ev.evalImgs if e is not None]
    if not evals:
        return out
    md = p.maxDets[-1]
    scores = np.concatenate([e["dtScores"][:md] for e in evals])
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    matched = np.concatenate([e["dtMatches"][:, :md] for e in evals], axis=1)[:, order].astype(bool)
    ignored = np.concatenate([e["dtIgnore"][:, :md] for e in evals], axis=1)[:, order].astype(bool)
    n_gt = int(np.count_nonzero(np.concatenate([e["gtIgnore"] for e in evals]) == 0))
    if n_gt == 0:
        return out
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if len(s) else np.zeros(0, int)
    for t in range(n_t):
        tp = np.cumsum(matched[t] & ~ignored[t])[ends].astype(float)
        fp = np.cumsum(~matched[t] & ~ignored[t])[ends].astype(float)
        rc = tp / n_gt
        pr = tp / (tp + fp + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr  # COCO's interpolation
        q = np.zeros(n_r)
        at = np.searchsorted(rc, p.recThrs, side="left")
        ok = at < len(pr)
        q[ok] = pr[at[ok]]
        out[t, :, 0, 0, 0] = q
    return out


def coco_keypoint_eval(
    gt_frames: Sequence[np.ndarray],
    dt_frames: Sequence[np.ndarray],
    sigmas: np.ndarray,
    idx: Sequence[int],
    vis_threshold: float = 0.3,
    min_area: float = 1.0,
):
    """Run COCOeval on one keypoint subset. Returns ``(ap, ap50, ap75, best, gt_anns)``
    where ``best[gt_ann_id] = (oks, dt_ann)`` is a counted GT person's best OKS over the
    frame's detections and that detection (``(0.0, None)`` without detections)."""
    from pycocotools.cocoeval import COCOeval

    idx = list(idx)
    sig = np.asarray(sigmas, np.float64)[idx]
    n_frames = len(gt_frames)
    images = [{"id": f + 1} for f in range(n_frames)]
    gt_anns = _gt_anns(gt_frames, idx, vis_threshold, min_area)
    dt_anns = _dt_anns(dt_frames, idx, vis_threshold)
    counted = [a for a in gt_anns if a["num_keypoints"] > 0]
    if not counted:
        return float("nan"), float("nan"), float("nan"), {}, gt_anns
    gt, dt = _coco(images, gt_anns), _coco(images, dt_anns)
    ev = COCOeval(gt, dt, iouType="keypoints")
    ev.params.kpt_oks_sigmas = sig
    ev.params.imgIds = [im["id"] for im in images]
    most = max([len(p) for p in dt_frames] + [1])
    ev.params.maxDets = [max(20, most)]
    ev.params.areaRng = [[0.0, float("inf")]]
    ev.params.areaRngLbl = ["all"]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    prec = _precision_ties_as_one(ev)
    thr = ev.params.iouThrs
    t50 = int(np.argmin(np.abs(thr - 0.5)))
    t75 = int(np.argmin(np.abs(thr - 0.75)))
    best: dict[int, tuple[float, dict | None]] = {}
    for im in images:
        gts = ev._gts[im["id"], 1]
        # rows of ev.ious follow computeOks's order: detections by descending score
        # (stable sort), cut at maxDets
        dts = ev._dts[im["id"], 1]
        dts = [dts[i] for i in np.argsort([-d["score"] for d in dts], kind="mergesort")][: ev.params.maxDets[-1]]
        ious = np.asarray(ev.ious.get((im["id"], 1), []))
        for j, g in enumerate(gts):
            if g["num_keypoints"] == 0:
                continue
            if ious.size:
                i = int(np.argmax(ious[:, j]))
                best[g["id"]] = (float(ious[i, j]), dts[i])
            else:
                best[g["id"]] = (0.0, None)
    return _ap(prec), _ap(prec, t50), _ap(prec, t75), best, gt_anns


# ----------------------------------------------------------------------------- public


def evaluate_pose(
    original: Sequence[np.ndarray],
    processed: Sequence[np.ndarray],
    *,
    sigmas: Sequence[float] | np.ndarray | None = None,
    groups: Mapping[str, Sequence[int]] | Sequence[str] | None = None,
    vis_threshold: float = 0.3,
    min_area: float = 1.0,
) -> PoseEvaluation:
    """COCO keypoint AP of ``processed`` poses against ``original`` poses (see module doc).

    ``original`` / ``processed``: one (P, K, 3) array (or :class:`deid.types.Keypoints`)
    per frame, same frame count. ``sigmas`` (K,) and ``groups`` (name -> keypoint
    indices, or a list of group names) default to :mod:`deid.pose.schema` (wholebody133).
    """
    if len(original) != len(processed):
        raise InvalidInputError(
            f"evaluate_pose: original has {len(original)} frames but processed has {len(processed)}; "
            "evaluate the same frames of both videos (a method must keep the frame count)"
        )
    sig, grp = _schema_defaults(sigmas, groups)
    k = len(sig)
    gt = _as_frames(original, "original", k)
    dt = _as_frames(processed, "processed", k)
    for name, ix in grp.items():
        if len(ix) == 0 or min(ix) < 0 or max(ix) >= k:
            raise InvalidInputError(f"evaluate_pose: group {name!r} has indices outside 0..{k - 1}")

    ap, ap50, ap75, num_gt, frame_oks, person_oks = {}, {}, {}, {}, {}, {}
    full = tuple(range(k))
    overall = None
    for name, ix in grp.items():
        a, a50, a75, best, anns = coco_keypoint_eval(gt, dt, sig, ix, vis_threshold, min_area)
        ap[name], ap50[name], ap75[name] = a, a50, a75
        num_gt[name] = len(best)
        per_person = [np.full(len(p), np.nan) for p in gt]
        for ann in anns:
            if ann["id"] in best:
                per_person[ann["_frame"]][ann["_person"]] = best[ann["id"]][0]
        person_oks[name] = per_person
        frame_oks[name] = np.array(
            [np.nanmean(p) if np.isfinite(p).any() else np.nan for p in per_person], np.float64
        )
        if tuple(ix) == full:
            overall = (best, anns)
    if overall is None:
        overall = coco_keypoint_eval(gt, dt, sig, full, vis_threshold, min_area)[3:]
    err, miss = _keypoint_errors(gt, dt, *overall, k, vis_threshold)
    return PoseEvaluation(
        ap=ap,
        ap50=ap50,
        ap75=ap75,
        num_gt=num_gt,
        frame_oks=frame_oks,
        person_oks=person_oks,
        keypoint_error=err,
        keypoint_missing=miss,
        vis_threshold=float(vis_threshold),
        groups=tuple(grp),
    )


def _keypoint_errors(gt, dt, best, gt_anns, k, thr):
    """Per-keypoint mean normalised error and missing rate of each counted GT person
    against its best-OKS detection (the match COCOeval's all-keypoint OKS picked)."""
    err_sum, err_n = np.zeros(k), np.zeros(k)
    miss_n, vis_n = np.zeros(k), np.zeros(k)
    for ann in gt_anns:
        if ann["id"] not in best:
            continue
        g = gt[ann["_frame"]][ann["_person"]]
        vis = _visible(g, thr)
        vis_n += vis
        det = best[ann["id"]][1]
        if det is None:
            miss_n += vis
            continue
        d = dt[det["_frame"]][det["_person"]]
        found = _found(d)
        both = vis & found
        miss_n += vis & ~found
        e = np.sqrt(((d[:, :2] - g[:, :2]) ** 2).sum(axis=1)) / np.sqrt(ann["area"])
        err_sum[both] += e[both]
        err_n += both
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(err_n > 0, err_sum / np.maximum(err_n, 1), np.nan)
        miss = np.where(vis_n > 0, miss_n / np.maximum(vis_n, 1), np.nan)
    return err, miss


def summarize_pose(ev: PoseEvaluation, prefix: str = "ap_") -> dict[str, float]:
    """Flat ``{ap_overall: .., ap_body: .., ...}`` for the summary table."""
    return {f"{prefix}{g}": float(ev.ap[g]) for g in ev.groups}
