"""The cheap half of an evaluation: score one (video, method) from extracted arrays.

Pure functions (no model, no file): what :func:`score_method` needs is the original's
and the processed video's keypoints (:class:`~deid.evaluate.extract.VideoKeypoints`)
and faces (:class:`~deid.evaluate.extract.VideoFaces`), the references
(:class:`~deid.evaluate.references.References`) and the identity model's distance
function. It returns every table row for that pair (:class:`MethodScores`), ready for
:mod:`deid.evaluate.store`.

What is measured (metric code in :mod:`deid.metrics`):

- pose: COCO keypoint AP@[.5:.95] per region group of the processed poses against the
  original's (:func:`deid.metrics.oks.evaluate_pose`; the original's keypoints are the
  ground truth, so the numbers say how much of *that estimator's* view survives);
  per-frame OKS; per-keypoint normalised error and missing rate;
- identity, as the paper's attacker (Zhu et al., AIES 2020: dlib's HOG detector and
  128-d descriptor, same person below 0.6): faces the detector finds in the processed
  video, their distances to the patient, to the original face at the same place (by
  box IoU) and to the target (:func:`deid.metrics.identity.identity_rows`); frames with
  no face;
- same place (an attacker who knows where the face was): the processed frame embedded
  at the original's face boxes against the original face there. A recogniser's chip
  also sees hair, clothes and background, and on small or cut-off faces it cannot tell
  a face from a blank (:mod:`deid.audit` measured a grey box at 0.56 from a real face on
  the pancake clip; on a full frontal face a blank still scores only ~0.7). So a
  same-place match needs the processed face within the threshold *and* closer to the
  original face than the blank is, by ``null_margin`` (``audit.null_margin``): the
  output must carry face information a blank does not. (The leak audit applies the
  margin only to faces whose blank is within the threshold, the safer choice for a
  publication gate; measured on the pancake clip's mask output, distances at the same
  place sat at 0.56-0.60 against blanks at 0.60-0.66, so without the margin on every
  face, noise near the threshold counted as matches in 18 of 310 frames.) Faces whose
  original box is under ``min_face_px`` (``audit.min_face_px``, longer side) are not
  compared, as in the leak audit: dlib's distances between such tiny faces are noise
  (the pancake clip's ~25 px background head, well blurred, scored 0.26 from itself);
  they are counted as ``same_place_faces_too_small``.
- the re-identification attack (:func:`deid.metrics.reid.reid_attack`): every embedded
  face of the processed video is a probe of the patient against the gallery;
- clinical features of the main person, processed vs original
  (:mod:`deid.metrics.clinical`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import InvalidInputError
from .extract import VideoFaces, VideoKeypoints
from .references import PATIENT, References

OKS_GROUPS = ("overall", "body", "head", "face", "hands", "feet")
DistanceFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class MethodScores:
    """Rows of every table for one (video, method); see :mod:`deid.metrics.schemas`."""

    video: str
    method: str
    summary: dict[str, Any]
    perframe: dict[str, Any]  # columns
    per_keypoint: list[dict[str, Any]] = field(default_factory=list)
    clinical: list[dict[str, Any]] = field(default_factory=list)
    identity: list[dict[str, Any]] = field(default_factory=list)
    keypoints: Any = None  # pyarrow Table (kind "keypoints") or None


# ----------------------------------------------------------------------------- pieces


def same_place(
    orig: VideoFaces, proc: VideoFaces, distance: DistanceFn, threshold: float, null_margin: float,
    min_face_px: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, list[float], int]:
    """Per checked frame: min same-place distance (NaN when no face could be compared),
    whether any face still matches (see module doc), and whether any was compared; plus
    the number of faces compared, their distances, and the faces left out as smaller
    than ``min_face_px``."""
    n = len(orig)
    dmin = np.full(n, np.nan)
    match = np.zeros(n, bool)
    compared = np.zeros(n, bool)
    all_d: list[float] = []
    too_small = 0
    for j in range(n):
        a, b = orig.ref_emb[j], proc.ref_emb[j]
        if len(a) == 0:
            continue
        ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
        if min_face_px > 0 and len(orig.ref_boxes[j]) == len(a):
            bx = orig.ref_boxes[j]
            big = np.maximum(bx[:, 2] - bx[:, 0], bx[:, 3] - bx[:, 1]) >= min_face_px
            too_small += int((ok & ~big).sum())
            ok &= big
        if not ok.any():
            continue
        d = np.diag(np.asarray(distance(a[ok], b[ok]), np.float64))
        if orig.null_emb is not None:
            nul = orig.null_emb[j][ok]
            nok = np.isfinite(nul).all(axis=1)
            dn = np.full(len(d), np.inf)  # no blank embedding: treat the face as verifiable
            if nok.any():
                dn[nok] = np.diag(np.asarray(distance(a[ok][nok], nul[nok]), np.float64))
        else:
            dn = np.full(len(d), np.inf)
        hit = (d < threshold) & (d < dn - null_margin)
        dmin[j] = float(d.min())
        match[j] = bool(hit.any())
        compared[j] = True
        all_d += d.tolist()
    return dmin, match, compared, len(all_d), all_d, too_small


def probe_embeddings(faces: VideoFaces) -> np.ndarray:
    """Every found face's embedding (NaN rows kept: reid_attack counts them as unusable)."""
    rows = [e for e in faces.found_emb if len(e)]
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, faces.dim), np.float32)


def per_keypoint_rows(video: str, method: str, err: np.ndarray, miss: np.ndarray) -> list[dict[str, Any]]:
    from ..pose import schema

    named = len(err) == schema.NUM_KEYPOINTS
    rows = []
    for k in range(len(err)):
        info = schema.SCHEMA[k] if named else None
        rows.append({"video": video, "method": method, "keypoint": k, "name": info.name if info else None,
                     "region": info.region if info else None, "mean_error": float(err[k]),
                     "missing_rate": float(miss[k])})
    return rows


def clinical_rows(video: str, method: str, orig_kp: VideoKeypoints, proc_kp: VideoKeypoints,
                  fps: float, min_score: float) -> tuple[list[dict[str, Any]], dict[str, float] | None]:
    """Clinical features of the main person (wholebody133 only), processed vs original."""
    from ..metrics import clinical

    k = next((a.shape[1] for a in orig_kp.keypoints if a.ndim == 3 and a.shape[0]), clinical.K_WHOLEBODY)
    if k != clinical.K_WHOLEBODY or len(orig_kp) < 2:
        return [], None
    fo = clinical.clinical_features(clinical.primary_person(orig_kp.keypoints), fps, min_score=min_score)
    fp = clinical.clinical_features(clinical.primary_person(proc_kp.keypoints), fps, min_score=min_score)
    errs = clinical.feature_errors(fo, fp)
    rows = [
        {"video": video, "method": method, "feature": name, "value": fp[name], "original_value": fo[name],
         "relative_error": errs[name],
         "error_kind": "absolute" if name in clinical.ABSOLUTE_ERROR_FEATURES else "relative"}
        for name in clinical.FEATURE_NAMES
    ]
    return rows, errs


def _with_chance(attack: Any, labels: tuple[str, ...]) -> Any:
    from dataclasses import replace

    from ..metrics.reid import chance_levels

    ch1, chap = chance_levels(attack.identities or len(set(labels)))  # one template an identity (deid.metrics.reid)
    return replace(attack, chance_rank1=ch1, chance_map=chap)


# ----------------------------------------------------------------------------- main


def score_method(
    video: str,
    method: str,
    original_kp: VideoKeypoints,
    processed_kp: VideoKeypoints,
    original_faces: VideoFaces | None,
    processed_faces: VideoFaces | None,
    refs: References,
    *,
    fps: float,
    distance: str | DistanceFn = "euclidean",
    threshold: float = 0.6,
    null_margin: float = 0.1,
    min_face_px: float = 0.0,
    vis_threshold: float = 0.3,
    pose_backend: str = "",
    identity_backend: str = "",
    deid_version: str = "",
    keep_keypoints: bool = True,
) -> MethodScores:
    """Score ``processed`` against ``original`` (see module doc). The original against
    itself (``processed_kp = original_kp``, ``processed_faces =
    original_faces.as_processed()``) is the sanity row: AP 1.0 in every group."""
    from ..metrics import evaluate_pose, reid_attack, summarize_identity, summary_row
    from ..metrics.identity import identity_rows, resolve_distance
    from ..metrics.schemas import keypoints_table

    dist = resolve_distance(distance)
    if len(original_kp) != len(processed_kp) or original_kp.start != processed_kp.start:
        raise InvalidInputError(
            f"{video}/{method}: original poses cover frames {original_kp.start}..{original_kp.stop - 1} but processed "
            f"{processed_kp.start}..{processed_kp.stop - 1}; evaluate the same frames of both videos"
        )
    n = len(original_kp)
    if n == 0:
        raise InvalidInputError(f"{video}/{method}: no frames to evaluate")
    frame_ids = np.arange(original_kp.start, original_kp.stop)

    # --- pose
    ev = evaluate_pose(original_kp.keypoints, processed_kp.keypoints, vis_threshold=vis_threshold)
    perframe: dict[str, Any] = {
        "video": [video] * n,
        "method": [method] * n,
        "frame": frame_ids.astype(np.int32),
        **{f"oks_{g}": np.asarray(ev.frame_oks.get(g, np.full(n, np.nan)), np.float32) for g in OKS_GROUPS},
        "persons": np.array([a.shape[0] for a in processed_kp.keypoints], np.int16),
        "gt_persons": np.array([a.shape[0] for a in original_kp.keypoints], np.int16),
    }
    pk_rows = per_keypoint_rows(video, method, ev.keypoint_error, ev.keypoint_missing)
    cl_rows, fe = clinical_rows(video, method, original_kp, processed_kp, fps, vis_threshold)

    # --- identity
    id_rows: list[dict[str, Any]] = []
    ident = None
    attack = None
    extra: dict[str, Any] = {
        "patient_refs": 0 if refs.patient is None else int(len(refs.patient)),
        "patient_source": refs.patient_source,
        "target_refs": 0 if refs.target is None else int(len(refs.target)),
    }
    faces_found = np.full(n, -1, np.int32)
    min_pat = np.full(n, np.nan, np.float32)
    m_pat = np.full(n, None, object)
    d_same = np.full(n, np.nan, np.float32)
    m_same = np.full(n, None, object)
    if original_faces is not None and processed_faces is not None:
        if not np.array_equal(original_faces.frames, processed_faces.frames):
            raise InvalidInputError(
                f"{video}/{method}: faces were checked on different frames in the original and the processed video; "
                "extract both with the same evaluate.identity_every and frame range"
            )
        fr = original_faces.frames
        id_rows = identity_rows(
            processed_faces.found_boxes, processed_faces.found_emb, original_faces.ref_boxes, original_faces.ref_emb,
            refs.patient, refs.target, distance=dist, threshold=threshold, frames=fr, video=video, method=method,
        )
        ident = summarize_identity(id_rows)
        dmin, match, compared, n_same, all_d, n_small = same_place(original_faces, processed_faces, dist, threshold, null_margin,
                                                                  min_face_px)
        extra.update({
            "identity_frames": int(len(fr)),
            "same_place_faces": int(n_same),
            "same_place_faces_too_small": int(n_small),
            "frames_match_same_place": int(match.sum()),
            "mean_dist_same_place": float(np.mean(all_d)) if all_d else float("nan"),
        })
        pos = {int(f): i for i, f in enumerate(frame_ids)}
        for j, f in enumerate(fr):
            i = pos.get(int(f))
            if i is None:
                continue
            faces_found[i] = len(processed_faces.found_boxes[j])
            d_same[i] = dmin[j]
            m_same[i] = bool(match[j]) if compared[j] else None
        for r in id_rows:
            i = pos.get(int(r["frame"]))
            if i is None or not r["found"]:
                if i is not None and m_pat[i] is None:
                    m_pat[i] = False
                continue
            dp = r["dist_patient"]
            if np.isfinite(dp) and not (dp >= min_pat[i]):
                min_pat[i] = dp
            m_pat[i] = bool(m_pat[i]) or bool(r["match_patient"])
        if refs.gallery is not None and len(refs.gallery):
            attack = reid_attack(refs.gallery, list(refs.gallery_labels), probe_embeddings(processed_faces), PATIENT,
                                 distance=dist)
            extra["attack_identities"] = attack.identities
            if attack.probes_used == 0:  # no usable probe: still say what chance is for this gallery
                attack = _with_chance(attack, refs.gallery_labels)
    perframe.update({
        "faces_found": np.where(faces_found >= 0, faces_found, np.nan),
        "min_dist_patient": min_pat,
        "match_patient": list(m_pat),
        "dist_same_place": d_same,
        "match_same_place": list(m_same),
    })
    row = summary_row(
        video, method, pose=ev, identity=ident, attack=attack, feature_errors=fe, pose_backend=pose_backend,
        identity_backend=identity_backend, identity_threshold=float(threshold), frames=n, deid_version=deid_version,
    )
    row.update(extra)
    kp_table = None
    if keep_keypoints:
        kp_table = keypoints_table(video, method, list(processed_kp.keypoints), frame_ids.tolist(), pose_backend)
    return MethodScores(video, method, row, perframe, pk_rows, cl_rows, id_rows, kp_table)
