"""The paper-style table ``deid evaluate`` prints: one row per method, pose AP per
region group, then identity. Plain text, fixed width, with a header naming the pose
estimator and identity model behind the numbers (Zhu et al. report body / face /
hands AP next to identity verification; numbers from other models are not the same
quantity)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

METHOD_ORDER = ("original", "swap", "mask", "blur", "pixelate")


def order_methods(methods: Sequence[str]) -> list[str]:
    ms = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in ms] + sorted(m for m in ms if m not in METHOD_ORDER)


def _num(v: Any, fmt: str = "{:.3f}", empty: str = "-") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return empty
    return empty if not math.isfinite(f) else fmt.format(f)


def _int(v: Any) -> int | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if not math.isfinite(f) else int(f)


def _ratio(a: Any, b: Any) -> str:
    x, y = _int(a), _int(b)
    return "-" if x is None or y is None else f"{x}/{y}"


def format_table(rows: Sequence[Mapping[str, Any]], *, video: str = "", info: Mapping[str, Any] | None = None,
                 pose: Mapping[str, Any] | None = None, identity: Mapping[str, Any] | None = None,
                 references: Mapping[str, Any] | None = None) -> str:
    """Render summary rows of one video (dicts with the summary table's columns)."""
    info, pose, identity, references = info or {}, pose or {}, identity or {}, references or {}
    by_method = {str(r["method"]): r for r in rows}
    thr = identity.get("threshold", next((r.get("identity_threshold") for r in rows), 0.6))
    lines = []
    head = f"deid evaluate: {video}" if video else "deid evaluate"
    if info:
        head += (f" - {info.get('frames_evaluated', info.get('frame_count', '?'))} frames, "
                 f"{info.get('width', '?')}x{info.get('height', '?')} @ {_num(info.get('fps'), '{:.2f}')} fps")
    lines.append(head)
    if pose:
        lines.append(f"pose:     {pose.get('name', '?')} - {pose.get('model', '')} [{pose.get('version', '')}]; "
                     "ground truth = its own keypoints on the original video")
    if identity:
        lines.append(f"identity: {identity.get('name', '?')} - {identity.get('model', '')} [{identity.get('version', '')}], "
                     f"same person if d < {_num(thr, '{:.2f}')}; attacker's detector: {identity.get('detector', '?')}; "
                     f"original's faces also located by: {identity.get('locator', 'none')}")
    if references:
        gal = references.get("gallery_identities") or []
        lines.append(f"patient:  {references.get('patient_source', '?')} ({references.get('patient_refs', 0)} embeddings); "
                     f"attack gallery: {len(gal)} identities ({', '.join(gal) if gal else 'none'})"
                     + (f"; target: {references.get('target_refs', 0)} embeddings" if references.get("target_refs") else ""))
    cols = [("method", 9), ("AP", 6), ("body", 6), ("head", 6), ("face", 6), ("hands", 6), ("|", 1),
            ("faces found", 12), ("match pat.", 11), ("same place", 11), ("d(patient)", 10), ("d(target)", 9),
            ("rank-1/chance", 13)]
    lines.append("")
    lines.append(" " * 10 + "OKS AP@[.5:.95]" + " " * 25 + f"identity (frames; d = {identity.get('name', 'identity')} distance)")
    lines.append(" ".join(name.ljust(w) for name, w in cols))
    lines.append(" ".join(("-" * w) for _, w in cols))
    for m in order_methods(list(by_method)):
        r = by_method[m]
        checked = r.get("identity_frames")
        faces_frames = None
        if _int(checked) is not None and _int(r.get("frames_no_face")) is not None:
            faces_frames = _int(checked) - _int(r.get("frames_no_face"))
        cells = [
            m, _num(r.get("ap_overall")), _num(r.get("ap_body")), _num(r.get("ap_head")), _num(r.get("ap_face")),
            _num(r.get("ap_hands")), "|",
            _ratio(faces_frames, checked), _ratio(r.get("frames_match_patient"), checked),
            _ratio(r.get("frames_match_same_place"), checked),
            _num(r.get("mean_dist_patient")), _num(r.get("mean_dist_target")),
            f"{_num(r.get('attack_rank1'), '{:.2f}')}/{_num(r.get('attack_chance_rank1'), '{:.2f}')}",
        ]
        lines.append(" ".join(c.ljust(w) for c, (_, w) in zip(cells, cols)))
    lines.append("")
    lines.append("AP: COCO keypoint AP of the method's poses against the original's (1.0 = unchanged); body = COCO-17. "
                 "faces found: frames where the attacker's detector found a face; match pat.: frames with a face within "
                 "the threshold of the patient; same place: frames where the output, embedded at the original's face "
                 "boxes, still matches the face that was there; rank-1: re-identification attack vs chance.")
    for n in references.get("notes") or []:
        lines.append(f"note: {n}")
    return "\n".join(lines)
