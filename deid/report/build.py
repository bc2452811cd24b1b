"""``build_report(metrics_dir, out_html)``: METRICS_DIR -> one offline HTML file + a JSON summary.

Two layouts, chosen by the number of videos:
- a *study* run (up to ``ReportOptions.per_video_limit`` videos) gets per-video OKS
  curves and frame strips for every video;
- an *archive* run gets distributions across videos and lists of the worst videos (most
  leaks, most fail-closed frames, lowest AP), with curves and strips only for the few
  worst ones — so a 10,000-video report stays a few MB and builds in bounded memory.

Sections degrade one by one: each missing table, output or measurement becomes a line
in the "Not in this report" box (and in the JSON summary's ``missing``), never an error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import InvalidInputError
from ..io.atomic import atomic_output
from . import html as H
from . import plots, tables
from . import summary_path
from .data import MetricsDir, order_methods
from .strips import ORIGINAL_COLOR, PROCESSED_COLOR, Strip, StripOptions, build_strip, default_detector

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = "deid.report.summary/1"
#: lists under the JSON summary's ``worst_videos`` (always written; empty when no video qualifies)
WORST_KEYS = ("leaks", "fail_closed", "lowest_ap")


def _write_utf8(path: Path, text: str) -> None:
    """Atomic write, always UTF-8 (the page has non-ASCII signs; the locale may be C)."""
    with atomic_output(path) as tmp:
        Path(tmp).write_bytes(text.encode("utf-8"))


@dataclass(frozen=True)
class ReportOptions:
    """Knobs of :func:`build_report` (defaults keep the demo report around 1 MB)."""

    strips: bool = True
    max_strip_videos: int = 4  # videos with frame strips (and OKS curves in the archive layout)
    per_video_limit: int = 6  # more videos than this -> archive layout
    worst_n: int = 10  # rows in each "worst videos" list
    hist_bins: int = 48
    hist_max: float = 1.2  # distances above this go in the last histogram bin
    strip: StripOptions = field(default_factory=StripOptions)
    summary_json: bool = True  # write <stem>_summary.json beside the HTML
    title: str = "deid evaluation report"


# ----------------------------------------------------------------------------- data passes


def _identity_counts(md: MetricsDir, edges: np.ndarray) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int], str]:
    """Histograms of face distances per method and the number of frames checked, in
    one streaming pass over the identity table (bounded memory on any archive). Falls
    back to the per-frame table's per-frame minimum distance. Returns (hists, frames, source)."""
    nb = len(edges) - 1
    hists: dict[str, dict[str, np.ndarray]] = defaultdict(lambda: {k: np.zeros(nb) for k in ("patient", "original", "target")})
    frames: dict[str, int] = defaultdict(int)
    hi = np.nextafter(edges[-1], -np.inf)

    def add(m: str, key: str, vals: np.ndarray) -> None:
        v = vals[np.isfinite(vals)]
        if v.size:
            hists[m][key] += np.histogram(np.clip(v, edges[0], hi), edges)[0]

    def floats(col) -> np.ndarray:
        return col.to_numpy(zero_copy_only=False).astype(float)  # nulls -> NaN

    source = ""
    if md.has("identity"):
        source = "identity"
        for b in md.iter_batches("identity", ["method", "face", "dist_patient", "dist_original", "dist_target"]):
            names = b.schema.names
            face = floats(b.column(names.index("face"))) if "face" in names else np.zeros(b.num_rows)
            arrs = {k: floats(b.column(names.index(f"dist_{k}"))) for k in ("patient", "original", "target")
                    if f"dist_{k}" in names}
            for m, sel in _method_masks(b.column(names.index("method"))).items():
                frames[m] += int((face[sel] <= 0).sum())  # one row with face 0 or -1 per checked frame
                for k, a in arrs.items():
                    add(m, k, a[sel])
    elif md.has("perframe"):
        dcol_names = ("min_dist_patient", "dist_patient", "min_dist")
        for b in md.iter_batches("perframe", ["method", *dcol_names]):
            names = b.schema.names
            dcol = next((c for c in dcol_names if c in names), None)
            if dcol is None:
                break
            source = "perframe"
            d = floats(b.column(names.index(dcol)))
            for m, sel in _method_masks(b.column(names.index("method"))).items():
                frames[m] += int(np.isfinite(d[sel]).sum())
                add(m, "patient", d[sel])
    return dict(hists), dict(frames), source


def _method_masks(col) -> dict[str, np.ndarray]:
    """Row masks per method of one record batch column (Arrow compute, no Python loop over rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return {str(m): pc.fill_null(pc.equal(col, m), False).to_numpy(zero_copy_only=False)
            for m in pc.unique(col).to_pylist() if m is not None}


def _featured_videos(md: MetricsDir, summary: pd.DataFrame, worst: Mapping[str, pd.DataFrame], archive: bool, n: int) -> list[str]:
    """Videos that get per-video curves and strips: all (lowest AP first) in the study
    layout; in the archive layout the worst by AP, then by leaks, up to ``n``."""
    ids = md.video_ids
    if not archive:
        s = summary[summary["method"] != "original"] if not summary.empty else summary
        if s.empty:
            return ids
        ap = pd.to_numeric(s["ap_overall"], errors="coerce").groupby(s["video"]).min()
        return sorted(ids, key=lambda v: (not np.isfinite(ap.get(v, np.nan)), ap.get(v, np.inf)))
    out: list[str] = []
    for key in ("lowest_ap", "leaks", "fail_closed"):
        df = worst.get(key)
        if df is not None:
            for v in df.index:
                if v not in out and len(out) < n:
                    out.append(str(v))
    return out


def _partly_evaluated(videos: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Videos evaluated on their first frames only (``evaluate.max_frames``), from each
    video's own entry (one metrics folder may hold videos evaluated with other settings)."""
    out = []
    for v in videos.values():
        try:
            n, total = int(v.get("frames_evaluated")), int(v.get("frame_count"))
        except (TypeError, ValueError):
            continue
        if 0 < n < total:
            out.append({"video": str(v.get("video")), "frames_evaluated": n, "frame_count": total})
    return out


def _partly_note(part: Sequence[Mapping[str, Any]], n_videos: int) -> str:
    ns = sorted({int(p["frames_evaluated"]) for p in part})
    first = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]} to {ns[-1]}"
    return (f"{len(part)} of {n_videos} video(s) were evaluated on their first {first} frames only (evaluate.max_frames; "
            "the Videos table's 'evaluated' column)")


# ----------------------------------------------------------------------------- sections


_AP_COLS: list[H.Column] = [
    ("method", "Method", "s", ""),
    ("videos", "Videos", "int", "videos with a summary row for this method"),
    ("ap_overall", "AP overall", "f3", "COCO keypoint AP@[.5:.95] over all 133 wholebody keypoints, vs the original's poses"),
    ("ap_body", "body", "f3", "COCO-17 (head + body keypoints)"),
    ("ap_head", "head", "f3", "nose, eyes, ears"),
    ("ap_face", "face", "f3", "68 face landmarks"),
    ("ap_hands", "hands", "f3", "2 x 21 hand keypoints"),
]


def _regions_on_fewer_videos(summary: pd.DataFrame) -> list[str]:
    """Per region whose AP comes from fewer videos than a method has: "face: 1 of 2 videos
    (swap: 1 of 1)". The AP table's Videos column counts a method's videos, not those with
    ground truth in each region."""
    out = []
    for g in tables.AP_GROUPS:
        col = f"ap_{g}"
        if col not in summary:
            continue
        bits = []
        for m in order_methods([m for m in summary["method"].unique() if m != "original"]):
            d = summary[summary["method"] == m]
            n, k = int(d["video"].nunique()), int(d.loc[pd.to_numeric(d[col], errors="coerce").notna(), "video"].nunique())
            if 0 < k < n:
                bits.append((m, k, n))
        if bits:
            same = len({(k, n) for _, k, n in bits}) == 1
            out.append(f"{g}: {bits[0][1]} of {bits[0][2]} videos" if same else
                       f"{g}: " + ", ".join(f"{m} {k} of {n}" for m, k, n in bits))
    return out


def _pose_section(md, summary, pose_tab, per_video_oks, dists, archive, missing) -> str:
    parts: list[str] = []
    if pose_tab.empty:
        missing.append("Pose: no summary rows, so no AP table (run `deid evaluate` on the processed videos).")
        return H.section("pose", "Pose kept (OKS AP)", H.note("No pose figures in this run."))
    cols = list(_AP_COLS)
    if "ap_feet" in pose_tab and np.isfinite(pose_tab["ap_feet"]).any():
        cols.append(("ap_feet", "feet", "f3", "6 foot keypoints"))
    cols += [("ap50_overall", "AP50", "f3", "AP at OKS 0.5, all keypoints"), ("ap75_overall", "AP75", "f3", "AP at OKS 0.75"),
             ("oks_mean", "mean OKS", "f3", "mean per-frame OKS (best-matched person)")]
    rows = [{"method": m, **r} for m, r in pose_tab.to_dict("index").items()]
    pb = md.run.get("pose_backend") or {}
    models = tables.pose_models(summary) or pb.get("name") or "unknown"
    if "pose_backend" in summary and summary["pose_backend"].dropna().nunique() > 1:
        cols.insert(1, ("pose_models", "pose model", "s", "the estimators whose scores this row averages"))
        parts.append(H.note(
            f"These videos were scored with different pose models ({models}): each row averages numbers that are not "
            "comparable with each other (an estimator's AP measures how much of its own view of the person survives). "
            "Compare methods within one model: each video's summary rows name theirs."))
        models = "per row, below"
    parts.append(H.note(
        "Keypoints found on each processed video are scored against those found on the original "
        f"(COCO OKS; pose model: {models}). 1.0 = the motion survived de-identification unchanged. "
        "Mean over videos; '–' = no ground truth for that region (e.g. hands never visible). "
        "The 'original' row scores the original against itself (a sanity check: 1.0). "
        "In the chart, whiskers span the middle half of the videos."))
    parts.append(H.table(rows, cols, row_class=lambda r: "sanity" if r["method"] == "original" else ""))
    thin = _regions_on_fewer_videos(summary)
    if thin:
        parts.append(H.note("Not every region rests on every video (a region a video never shows has no ground truth "
                            "there): " + "; ".join(thin) + "."))
    ap_png = plots.ap_by_region(pose_tab, summary)
    if ap_png:
        parts.append(H.img(ap_png, "bar chart: AP by region and method"))
    kp_png = plots.keypoint_error(md.per_keypoint)
    if kp_png:
        parts.append("<h3>Per-keypoint error</h3>")
        parts.append(H.note("Distance between the keypoint found on the original and on the processed frame, in units of "
                            "the person's size (sqrt of the box area), averaged over frames and videos; below, the share "
                            "of visible original keypoints that the processed frame lost."))
        parts.append(H.img(kp_png, "per-keypoint error by method"))
    elif md.per_keypoint is not None:
        missing.append("Per-keypoint error: per_keypoint.parquet has no usable error columns.")
    if archive:
        d_png = plots.distributions(dists)
        if d_png:
            parts.append("<h3>Across videos</h3>")
            parts.append(H.note(f"Distribution over the {summary['video'].nunique():,} videos of each method's overall "
                                "AP, share of checked frames still matching the patient, and share of frames redacted "
                                "fail-closed (boxes: middle half of the videos; dots: outliers)."))
            parts.append(H.img(d_png, "distributions across videos"))
    curves = []
    for v, png in per_video_oks:
        curves.append(f"<h3>{H.esc(v)}: OKS over time</h3>" + H.img(png, f"per-frame OKS of {v}"))
    if curves:
        parts.append("".join(curves))
    return H.section("pose", "Pose kept (OKS AP)", "".join(parts))


_ID_COLS: list[H.Column] = [
    ("method", "Method", "s", ""),
    ("frames_checked", "frames checked", "int", "processed frames searched for faces (every evaluate.identity_every-th)"),
    ("frames_match_patient", "still match patient", "int", "frames with a face closer than the threshold to the patient"),
    ("pct_match_patient", "%", "pct", "of frames checked"),
    ("frames_match_same_place", "match original (same place)", "int",
     "an attacker who knows where the face was: the processed frame, embedded at the original's face box, still "
     "matches the original face there (weak faces must also beat a blank)"),
    ("frames_match_original", "found face matches original", "int",
     "a face found in the processed frame matches the original face at the same place"),
    ("frames_no_face", "no face found", "int", "frames where the attacker's detector found no face in the processed video"),
    ("mean_dist_patient", "dist. to patient", "f3", "mean face distance to the patient (same person below the threshold)"),
    ("min_dist_patient", "min", "f3", "the closest any face came to the patient"),
    ("mean_dist_same_place", "dist. same place", "f3", "mean distance, processed vs original, at the original's face boxes"),
    ("mean_dist_target", "dist. to donor", "f3", "mean distance to the swap donor (low = the swap shows the donor)"),
    ("attack_rank1", "re-id rank-1", "f3",
     "re-identification attack: fraction of probes whose nearest identity in the gallery (the swap's donor left out) "
     "is the patient"),
    ("attack_chance_rank1", "chance", "f3", "rank-1 of a probe that carries no identity: 1 / identities"),
    ("attack_map", "re-id mAP", "f3", "mean reciprocal rank of the patient among the gallery's identities"),
    ("attack_chance_map", "chance mAP", "f3", ""),
    ("attack_identities", "identities", "int", "identities in the attack's gallery (fewest over the videos): few says little"),
]

_LEAK_COLS = ("frames_match_patient", "frames_match_same_place", "frames_match_original")


def _identity_section(md, id_tab, hist_png, threshold, source, missing, hist_methods=None) -> str:
    parts: list[str] = []
    ib = md.run.get("identity_backend") or {}
    parts.append(H.note(
        f"Faces in the processed videos are embedded with {ib.get('name') or 'the identity model'} and compared with the "
        f"patient's reference, the original face at the same place and (swap) the donor; distance < {threshold:g} = same "
        "person. A de-identified video should have 0 frames still matching. The re-identification attack ranks a "
        "gallery of identities for each processed face; rank-1 near chance means the face gives the person away no "
        "better than a guess."))
    if id_tab.empty:
        missing.append("Identity: no summary rows, so no identity table.")
    else:
        rows = [{"method": m, **r} for m, r in id_tab.to_dict("index").items()]

        def cell(key, v, r):
            if key in _LEAK_COLS and r["method"] != "original":
                return "bad" if not H.is_missing(v) and v > 0 else ("ok" if not H.is_missing(v) else "")
            return ""

        cols = [c for c in _ID_COLS if c[0] == "method" or c[0] in ("frames_checked",) or
                np.isfinite(pd.to_numeric(id_tab.get(c[0], pd.Series(dtype=float)), errors="coerce")).any()]
        parts.append(H.table(rows, cols, row_class=lambda r: "sanity" if r["method"] == "original" else "", cell_class=cell))
        sources = _sources(id_tab)
        has_patient = np.isfinite(pd.to_numeric(id_tab.get("mean_dist_patient", pd.Series(dtype=float)), errors="coerce")).any()
        if not has_patient:
            missing.append("Identity: no reference of the patient was evaluated, so distances to the patient and frames "
                           "still matching the patient are unknown; the histograms show the distance to the original face "
                           "at the same place instead. Give `deid evaluate --reference PHOTO...` to measure them.")
        elif "photos" not in sources:
            missing.append("Identity: no reference photo of the patient was given; the patient's identity was taken from "
                           "the original video's own faces (`deid evaluate --reference PHOTO...` adds independent photos).")
        sw = id_tab.loc["swap"] if "swap" in id_tab.index else None
        if sw is not None and H.is_missing(sw.get("mean_dist_target")):
            missing.append("Identity: the swap has no donor distances (no donor embeddings in the evaluation).")
        if not np.isfinite(pd.to_numeric(id_tab.get("attack_rank1", pd.Series(dtype=float)), errors="coerce")).any():
            missing.append("Identity: no re-identification attack results (it needs a gallery of several identities).")
    if hist_png:
        src = "identity table (every embedded face)" if source == "identity" else "per-frame table (closest face per frame)"
        parts.append(H.img(hist_png, "identity distance histograms with threshold"))
        parts.append(H.note(f"Source: {src}. Distances above the right edge are counted in the last bin."))
        empty = [m for m in id_tab.index if m != "original" and m not in (hist_methods or [])] if not id_tab.empty else []
        if empty:
            parts.append(H.note(f"No panel for {', '.join(empty)}: the attacker found no face it could embed in any "
                                "checked frame of these outputs (nothing to measure a distance to)."))
    else:
        missing.append("Identity: no face distances to plot (no identity/ or perframe/ table with distances).")
    return H.section("identity", "Identity (re-identification)", "".join(parts))


def _clinical_section(clin: pd.DataFrame, missing) -> str:
    if clin.empty:
        missing.append("Clinical features: no measurable feature errors (clinical.parquet and the summary's fe_* "
                       "columns are empty, or the videos show no tapping / gait / face motion long enough to measure).")
        return H.section("clinical", "Clinical features", H.note("No clinical feature could be measured in this run."))
    from ..metrics.clinical import ABSOLUTE_ERROR_FEATURES

    measured = clin.attrs.get("measured")
    original = clin.attrs.get("original")
    lost = clin.attrs.get("lost")
    methods = list(clin.index)
    rows = []
    for f in clin.columns:
        r: dict[str, Any] = {"feature": f.replace("_", " ")}
        if original is not None:
            r["original"] = original.get(f, np.nan)
        for m in methods:
            v = clin.loc[m, f]
            r[m] = v if f in ABSOLUTE_ERROR_FEATURES or H.is_missing(v) else 100.0 * v
            n_lost = int(lost.loc[m, f]) if lost is not None else 0
            if n_lost:  # measurable on the original, not on this output
                n_ok = int(measured.loc[m, f]) if measured is not None else 0
                r[m] = (f"lost ({n_lost} of {n_lost + n_ok} videos)" if H.is_missing(r[m])
                        else f"{H.fmt(r[m], 'f1')}; lost in {n_lost} of {n_lost + n_ok} videos")
            r[f"{m}_n"] = measured.loc[m, f] if measured is not None else np.nan
        rows.append(r)
    cols: list[H.Column] = [("feature", "Feature", "s", "")]
    if original is not None:
        cols.append(("original", "original value", "g", "median value measured on the original videos"))
    for m in methods:
        cols.append((m, f"{m} error", "f1", "median relative error in % (decrement: absolute difference)"))
    body = H.note("How far each clinical motion feature (MDS-UPDRS-style: finger tapping, hand opening, mouth "
                  "opening, blinks, gait cadence) measured on the processed video is from the same feature on the "
                  "original: median relative error in % over videos (decrement features: absolute difference). "
                  "0 = unchanged; \u201clost\u201d = measured on the original but no longer measurable on the output "
                  "(the method erased what the feature needs).") + H.table(rows, cols)
    return H.section("clinical", "Clinical features", body)


#: why there are no frame strips when nothing more specific is known
NO_STRIP_READ = "Frame strips: no processed video could be read (paths in run.json)."


def _strips_section(strips: Sequence[Strip], enabled: bool, missing, opts_face: bool = False,
                    no_strip: str = NO_STRIP_READ) -> str:
    """The Frames section. ``no_strip``: the "Not in this report" line that says why, when
    ``strips`` is empty (its text after "Frame strips: " is also the section's note)."""
    o, p = ORIGINAL_COLOR, PROCESSED_COLOR
    legend = (f'<p class="legend note">Processed frames only (the original frames are never shown).'
              f'<span style="background:rgb{o}"></span>pose found on the original frame'
              f'<span style="background:rgb{p}"></span>pose found on this processed frame</p>')
    if not opts_face:
        legend += H.note("Body, head points (nose, eyes, ears), feet and hands are drawn; the 68 face landmarks are "
                         "not, because their outline would sketch the patient's face over the anonymized one (face "
                         "keypoint errors are in the AP table and the per-keypoint plot).")
    if not enabled:
        missing.append("Frame strips: turned off for this report.")
        return H.section("frames", "Frames", H.note("Frame strips were turned off."))
    if not strips:
        missing.append(no_strip)
        why = no_strip.removeprefix("Frame strips: ")
        return H.section("frames", "Frames", legend + H.note(why[:1].upper() + why[1:]))
    parts = [legend]
    n_red = sum(s.faces_redacted for s in strips)
    n_drop = sum(s.dropped for s in strips)
    check = ("Before a thumbnail is embedded it is searched for faces (MediaPipe); a face outside the regions the "
             "pipeline anonymized is redacted, and a thumbnail where one survives is dropped.")
    if n_red or n_drop:
        check += f" In this report: {n_red} face(s) redacted, {n_drop} thumbnail(s) dropped (outlined / listed below)."
    else:
        check += " In this report every face found was inside an anonymized region."
    parts.append(H.note(check))
    for s in strips:
        parts.append(f"<h3>{H.esc(s.video)}</h3>")
        if s.frames and s.methods:
            head = "<tr><th>frame</th>" + "".join(f"<th>{H.esc(m)}</th>" for m in s.methods) + "</tr>"
            body = []
            for f in s.frames:
                t = f / s.fps if s.fps else None
                lab = f"{f}" + (f"<br>{t:.1f} s" if t is not None else "") + f"<br>{H.esc(s.why.get(f, ''))}"
                tds = [f"<td>{lab}</td>"]
                for m in s.methods:
                    c = s.cells.get((f, m))
                    if c is None or c.jpeg is None:
                        tds.append(f"<td>(not shown: {H.esc(c.note if c else 'missing')})</td>")
                        continue
                    cap = f"OKS {c.oks:.2f}" if c.oks is not None and np.isfinite(c.oks) else ""
                    if c.faces_redacted:
                        cap += f" · {c.faces_redacted} face(s) redacted by the report"
                    tds.append(f"<td>{H.img(c.jpeg, f'{m} frame {f} with skeletons', 'thumb', 'image/jpeg', c.width, c.height)}"
                               f"{H.esc(cap)}</td>")
                body.append("<tr>" + "".join(tds) + "</tr>")
            parts.append(f'<div class="scroll"><table class="strip">{head}{"".join(body)}</table></div>')
        for n in s.notes:
            parts.append(H.note(n))
    return H.section("frames", "Frames (processed only)", "".join(parts))


_STATUS_COLS: list[H.Column] = [
    ("video", "Video", "s", ""), ("method", "Method", "s", ""), ("state", "State", "s", "done | failed | partial | ..."),
    ("frames_read", "frames", "int", "frames read from the input"),
    ("frames_written", "written", "int", "frames in the output"),
    ("fail_closed_frames", "fail-closed", "int", "frames redacted because a person was present but no face region could be placed"),
    ("faces_detected", "faces detected", "int", "face regions from the detector"),
    ("regions_interpolated", "interpolated", "int", "regions filled across detector misses"),
    ("regions_held", "held", "int", "regions held before/after a track"),
    ("regions_pose", "from pose", "int", "heads placed from body keypoints (fallback)"),
    ("swap_fallbacks", "swap → mask", "int", "faces masked instead of swapped (identity gate or failed swap)"),
    ("leaks", "audit leaks", "int", "faces the pipeline's leak audit found still matching (0 expected; – = unknown, or no "
     "audit: audit.leak_check was off)"),
    ("error_kind", "error kind", "s", ""), ("error", "error", "s", ""),
]


def _status_section(st: pd.DataFrame, worst: Mapping[str, pd.DataFrame], archive: bool, missing) -> str:
    parts: list[str] = []
    if st.empty:
        missing.append("Status: no status table and no audit records, so per-video status is unknown.")
        return H.section("status", "Per-video status and audit", H.note("No status information."))
    parts.append(H.note("From the pipeline's audit records: what happened to each video and how many frames needed a "
                        "fallback. Fail-closed frames were redacted entirely (a person was present but no head region "
                        "could be placed)."))

    def cell(key, v, r):
        if key in ("leaks", "fail_closed_frames") and not H.is_missing(v) and v and float(v) > 0:
            return "bad"
        if key == "state" and v not in ("done", None):
            return "bad"
        return ""

    if archive:
        ov = tables.status_overview(st)
        rows = [{"method": m, **r} for m, r in ov.to_dict("index").items()]
        state_cols = [c for c in ov.columns if c.startswith("state_")]
        cols: list[H.Column] = [("method", "Method", "s", ""), ("outputs", "outputs", "int", "")]
        cols += [(c, c[6:], "int", f"outputs in state {c[6:]}") for c in state_cols]
        cols += [c for c in _STATUS_COLS if c[0] in ("fail_closed_frames", "regions_interpolated", "regions_held",
                                                      "regions_pose", "swap_fallbacks", "leaks")]
        cols.append(("errors", "errors", "int", "outputs with an error"))
        parts.append(H.table(rows, cols))
        ek = tables.error_kinds(st)
        if len(ek):
            parts.append("<h3>Errors by kind</h3>" + H.table([{"kind": k, "n": int(n)} for k, n in ek.items()],
                                                             [("kind", "kind", "s", ""), ("n", "outputs", "int", "")]))
        parts.append(_worst_html(worst))
        failed = st[st["error"].fillna("") != ""].head(20)
        if not failed.empty:
            parts.append("<h3>First errors</h3>" + H.table(failed.to_dict("records"), [c for c in _STATUS_COLS if c[0] in
                                                            ("video", "method", "state", "error_kind", "error")]))
    else:
        def shown(c: H.Column) -> bool:
            if c[0] in ("video", "method", "state"):
                return True
            col = st.get(c[0], pd.Series(dtype=object))
            if c[2] == "s":
                return bool((col.fillna("").astype(str) != "").any())
            return bool(pd.to_numeric(col, errors="coerce").notna().any())

        cols = [c for c in _STATUS_COLS if shown(c)]
        parts.append(H.table(st.to_dict("records"), cols, cell_class=cell))
    return H.section("status", "Per-video status and audit", "".join(parts))


def _worst_html(worst: Mapping[str, pd.DataFrame]) -> str:
    out = []
    spec = {
        "leaks": ("Most leaks", [("video", "Video", "s", ""), ("leak_frames", "frames matching patient/original", "int", ""),
                                 ("audit_leaks", "audit leaks", "int", "")]),
        "fail_closed": ("Most fail-closed frames", [("video", "Video", "s", ""), ("fail_closed_frames", "fail-closed", "int", ""),
                                                    ("frames", "frames", "int", "")]),
        "lowest_ap": ("Lowest AP", [("video", "Video", "s", ""), ("method", "method", "s", ""), ("ap_overall", "AP overall", "f3", "")]),
    }
    for key, (title, cols) in spec.items():
        df = worst.get(key)
        if df is None or df.empty:
            out.append(f"<h3>{H.esc(title)}</h3>" + H.note("none"))
            continue
        rows = df.reset_index().to_dict("records")
        out.append(f"<h3>{H.esc(title)}</h3>" + H.table(rows, cols))
    return "".join(out)


def _config_section(md: MetricsDir, face_check: str) -> str:
    import yaml

    run = md.run
    pb, ib = run.get("pose_backend") or {}, run.get("identity_backend") or {}
    rows = [
        {"what": "deid (evaluation)", "value": run.get("deid_version")},
        {"what": "deid (report)", "value": __version__},
        {"what": "run created (UTC)", "value": run.get("created_utc")},
        {"what": "metrics schema", "value": run.get("schema_version")},
        {"what": "pose model", "value": " · ".join(str(x) for x in (pb.get("name"), pb.get("model"), pb.get("version")) if x)},
        {"what": "identity model", "value": " · ".join(str(x) for x in (ib.get("name"), ib.get("model")) if x)
         + (f" · threshold {ib.get('threshold')}" if ib.get("threshold") is not None else "")},
        {"what": "report face check", "value": face_check},
    ]
    part = _partly_evaluated(md.videos)
    if part:
        rows.append({"what": "frames evaluated", "value": _partly_note(part, len(md.videos))})
    body = H.table(rows, [("what", "", "s", ""), ("value", "", "s", "")])
    vids = list(md.videos.values())
    if vids and len(vids) <= 50:
        vrows = [{"video": v.get("video"), "size": f"{v.get('width')}x{v.get('height')}", "fps": v.get("fps"),
                  "frames": v.get("frame_count"), "evaluated": v.get("frames_evaluated"),
                  "methods": ", ".join(order_methods(list((v.get("processed") or {}).keys())))}
                 for v in vids]
        body += "<h3>Videos</h3>" + H.table(vrows, [("video", "Video", "s", ""), ("size", "size", "s", ""),
                                                     ("fps", "fps", "f2", ""), ("frames", "frames", "int", ""),
                                                     ("evaluated", "evaluated", "int", "frames evaluated (evaluate.max_frames)"),
                                                     ("methods", "methods", "s", "")])
        if part:
            body += H.note(f"Frame counts are those of the whole videos; {_partly_note(part, len(md.videos))}.")
    cfg = run.get("config")
    if cfg:
        body += ("<details><summary>Effective configuration (YAML)</summary><pre>"
                 + H.esc(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)) + "</pre></details>")
    return H.section("config", "Configuration and models", body)


# ----------------------------------------------------------------------------- JSON summary


def _clean(o: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.bool_):
        return bool(o)
    if o is pd.NA or o is pd.NaT:
        return None
    return o


def _summary_json(md, pose_tab, id_tab, clin, st, worst, strips, archive, missing, verdict, out_html) -> dict[str, Any]:
    ov = tables.status_overview(st) if not st.empty else pd.DataFrame()
    res = {
        "schema": SUMMARY_SCHEMA,
        "report": out_html.name,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "deid_version": __version__,
        "metrics_dir": str(md.root),
        "run": {**{k: md.run.get(k) for k in ("created_utc", "deid_version", "schema_version", "pose_backend",
                                              "identity_backend")}, "partly_evaluated": _partly_evaluated(md.videos)},
        "layout": "archive" if archive else "study",
        "videos": len(md.video_ids),
        "methods": md.methods,
        "verdict": verdict,
        "pose": {m: {k: r.get(k) for k in ("videos", *[f"ap_{g}" for g in tables.AP_GROUPS], "ap50_overall", "ap75_overall", "oks_mean")}
                 for m, r in (pose_tab.to_dict("index").items() if not pose_tab.empty else [])},
        "identity": {m: dict(r) for m, r in (id_tab.to_dict("index").items() if not id_tab.empty else [])},
        "identity_threshold": md.threshold,
        "clinical_median_error": {m: {f: clin.loc[m, f] for f in clin.columns} for m in clin.index} if not clin.empty else {},
        "status": {m: dict(r) for m, r in ov.to_dict("index").items()} if not ov.empty else {},
        "errors": int((st["error"].fillna("") != "").sum()) if not st.empty else 0,
        "fail_closed_frames": (float(pd.to_numeric(st.get("fail_closed_frames"), errors="coerce").sum(min_count=1))
                               if not st.empty and "fail_closed_frames" in st else None),  # NaN (null) when no output says
        "worst_videos": {k: worst[k].reset_index().to_dict("records") if k in worst else []
                         for k in (*WORST_KEYS, *(k for k in worst if k not in WORST_KEYS))},
        "frame_strips": {"videos": len(strips), "thumbnails": sum(s.shown for s in strips),
                         "faces_redacted": sum(s.faces_redacted for s in strips),
                         "thumbnails_dropped": sum(s.dropped for s in strips)},
        "missing": list(missing),
    }
    return _clean(res)


# ----------------------------------------------------------------------------- entry point


def _sources(id_tab: pd.DataFrame) -> set[str]:
    """Where the patient's identity came from ("photos", "original_video", "none"), over every video."""
    col = id_tab.get("patient_source", pd.Series(dtype=str)) if not id_tab.empty else pd.Series(dtype=str)
    return {x.strip() for v in col.fillna("") for x in str(v).split(",") if x.strip()}


def _with_evaluation_errors(st: pd.DataFrame, videos: Mapping[str, Mapping[str, Any]], missing: list[str]) -> pd.DataFrame:
    """Outputs the evaluation refused (``run.json`` videos[].errors: a dropped frame, an
    unreadable file) have no summary row; their render status may say done. They get
    the error in the status table (so the verdict counts it) and a line in "Not in this
    report", instead of vanishing from every table."""
    errs = [(str(v), str(m), str(msg)) for v, e in videos.items() for m, msg in (e.get("errors") or {}).items() if msg]
    if not errs:
        return st
    st = st.copy() if not st.empty else pd.DataFrame(columns=["video", "method", "state", "error_kind", "error"])
    for v, m, msg in errs:
        hit = (st["video"] == v) & (st["method"] == m)
        text = f"not evaluated: {msg}"
        if hit.any():
            keep = st.loc[hit, "error"].fillna("").astype(str)
            st.loc[hit, "error"] = [f"{k}; {text}" if k else text for k in keep]
            st.loc[hit & (st["error_kind"].fillna("") == ""), "error_kind"] = "evaluation"
        else:
            st = pd.concat([st, pd.DataFrame([{"video": v, "method": m, "state": "unknown", "error_kind": "evaluation",
                                               "error": text}])], ignore_index=True)
    shown = "; ".join(f"{v} / {m}: {msg}" for v, m, msg in errs[:5]) + (f"; and {len(errs) - 5} more" if len(errs) > 5 else "")
    missing.append(f"Evaluation: {len(errs)} output(s) could not be compared with their original and are in no pose or "
                   f"identity table ({shown}); the status section lists them.")
    return st


#: how far above chance the attack's rank-1 may be before the verdict warns
REID_MARGIN = 0.25


def _first_five(names: Sequence[str]) -> str:
    """``a, b, c, d, e and 3 more``: the verdict names at most five of a list."""
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _unmeasured_videos(summary: pd.DataFrame | None) -> list[str]:
    """Videos of which no original face was found or compared: the "original" row's
    ``faces`` (the attacker's detector) and ``same_place_faces`` (the located faces) are
    both 0, so none of that video's processed frames was compared with anything."""
    if summary is None or summary.empty or "faces" not in summary or "method" not in summary:
        return []
    o = summary[summary["method"] == "original"]
    faces = pd.to_numeric(o["faces"], errors="coerce")
    same = pd.to_numeric(o["same_place_faces"], errors="coerce").fillna(0) if "same_place_faces" in o else 0
    return sorted(o.loc[(faces == 0) & (same == 0), "video"].astype(str).unique())


def _verdict(id_tab: pd.DataFrame, st: pd.DataFrame, summary: pd.DataFrame | None = None) -> dict[str, Any]:
    """One line for the top of the report and for CI: did anything still match?

    Level "bad" when anything matched or the leak audit flagged a face; "warn" when
    nothing was compared (no processed frame checked, or no face found in any original
    video: the "original" row's ``faces`` is 0), when some videos had no original face
    found or compared (``summary``'s per-video rows: the totals would hide them), or an
    output reported an error; else "ok"."""
    non = id_tab[id_tab.index != "original"] if not id_tab.empty else id_tab

    def total(df: pd.DataFrame, col: str) -> float:
        if df.empty or col not in df:
            return 0.0
        return float(np.nansum(pd.to_numeric(df[col], errors="coerce")))

    mp, ms, mo = total(non, "frames_match_patient"), total(non, "frames_match_same_place"), total(non, "frames_match_original")
    checked = total(non, "frames_checked")
    orig_faces = None  # faces found in the original videos (None: unknown)
    if "original" in id_tab.index and "faces" in id_tab:
        f = pd.to_numeric(pd.Series([id_tab.loc["original", "faces"]]), errors="coerce").iloc[0]
        orig_faces = float(f) if np.isfinite(f) else None
    audit = total(st, "leaks")
    skipped = _audit_skipped(st)
    unknown = _audit_unknown(st)
    errors = int((st["error"].fillna("") != "").sum()) if not st.empty else 0
    if mp + ms + mo + audit > 0:
        level = "bad"
        bits = [f"{int(n)} {what}" for n, what in ((mp, "frame(s) still match the patient"),
                                                   (ms, "frame(s) match the original face at the same place"),
                                                   (mo, "frame(s) show a face matching the original"),
                                                   (audit, "face(s) flagged by the pipeline's leak audit")) if n]
        text = "Identity leak: " + "; ".join(bits) + ". Review them before sharing."
    elif checked <= 0:
        level = "warn"
        text = "Identity was not measured: no processed frame was checked for faces."
    elif orig_faces == 0 and "photos" in _sources(id_tab):
        level = "warn"  # measured against the photos only: the attacker's detector found no face to compare at the same place
        text = (f"No face was found in the original video(s): the processed frames were compared with the patient's "
                f"reference photo(s) only, none matched ({int(checked):,} frames checked across {len(non)} method(s)); "
                "a face the detector cannot find in the original is weak evidence either way, so review a few frames.")
    elif orig_faces == 0:
        level = "warn"
        text = (f"Identity was not measured: no face was found in the original video(s), so nothing was compared "
                f"({int(checked):,} processed frames checked across {len(non)} method(s)).")
    else:
        level = "ok"
        text = (f"No processed frame matched the patient or the original face ({int(checked):,} frames checked across "
                f"{len(non)} method(s)).")
    unmeasured = _unmeasured_videos(summary) if orig_faces != 0 else []  # all of them: said above
    if unmeasured:
        level = "bad" if level == "bad" else "warn"
        n_videos = int(summary["video"].nunique())
        text += (f" Identity was not measured on {len(unmeasured)} of {n_videos} video(s): no face was found in their "
                 "original, so none of their processed frames was compared with anything ("
                 + _first_five(unmeasured) + "); review them.")
    # the re-identification attack (patient among distractors): a method whose faces it
    # still ranks as the patient far above chance keeps identity, whatever the threshold says
    reid = []
    for m, row in non.iterrows() if not non.empty and "attack_rank1" in non else []:
        r1 = pd.to_numeric(pd.Series([row.get("attack_rank1")]), errors="coerce").iloc[0]
        ch = pd.to_numeric(pd.Series([row.get("attack_chance_rank1")]), errors="coerce").iloc[0]
        if np.isfinite(r1) and np.isfinite(ch) and r1 > ch + REID_MARGIN:
            k = pd.to_numeric(pd.Series([row.get("attack_identities")]), errors="coerce").iloc[0]
            reid.append((str(m), float(r1), float(ch), int(k) if np.isfinite(k) else None))
    if reid:
        level = "bad" if level == "bad" else "warn"
        src = _sources(id_tab)
        how = ("the patient's references are frames of the original video itself (same light and camera: easier "
               "than a real attacker's photos); " if "photos" not in src else "")
        text += (" The re-identification attack still picks the patient out of its gallery: "
                 + "; ".join(f"{m} rank-1 {r1:.2f} against a chance of {ch:.2f}" + (f" among {k} identities" if k else "")
                             for m, r1, ch, k in reid)
                 + ". Those faces keep something of the patient that tells them from the gallery's other identities "
                 "(for a swap: trained too briefly, or the face outline and skin tone it keeps); " + how
                 + "a small gallery says little about a real population, but review before sharing.")
    if skipped:
        level = "bad" if level == "bad" else "warn"
        text += (f" The pipeline's leak audit did not run on {len(skipped)} output(s) (audit.leak_check was off), so "
                 "nothing re-identified them before they were written: " + _first_five(skipped) + ".")
    if unknown:
        level = "bad" if level == "bad" else "warn"
        text += (f" The leak audit's result of {len(unknown)} output(s) is unknown (no audit record found, and the status "
                 "table has none), so it is not counted as 0: " + _first_five(unknown) + "; run `deid verify` on their folder.")
    if errors:
        level = "bad" if level == "bad" else "warn"
        bad = st[st["error"].fillna("") != ""]
        none = int((bad["method"].fillna("") == "").sum())  # a video that failed before any output: one row, no method
        bits = ([f"{errors - none} output(s) reported an error"] if errors - none else []) + \
               ([f"{none} video(s) produced no output"] if none else [])
        text += f" {' and '.join(bits)} (see the status section)."
    return {"level": level, "text": text, "frames_checked": checked, "frames_match_patient": mp,
            "frames_match_same_place": ms, "frames_match_original": mo, "audit_leaks": audit,
            "audit_skipped": len(skipped), "audit_unknown": len(unknown), "errors": errors, "videos_not_measured": unmeasured,
            "original_faces": orig_faces,
            "reidentified": [{"method": m, "attack_rank1": r1, "chance": ch, "identities": k} for m, r1, ch, k in reid]}


def _audit_unknown(st: pd.DataFrame) -> list[str]:
    """Outputs published (done, partial) whose leak-audit result nothing here gives: no
    audit record reached (moved, or the report built away from the outputs) and no count
    in the status table, which is what a skipped audit leaves there too ("video / method")."""
    if st.empty or "leaks" not in st or "state" not in st:
        return []
    skipped = st["audit_skipped"].fillna(False).astype(bool) if "audit_skipped" in st else pd.Series(False, index=st.index)
    sk = st[st["state"].isin(["done", "partial"]) & (st["method"].fillna("") != "")
            & pd.to_numeric(st["leaks"], errors="coerce").isna() & ~skipped]
    return [f"{v} / {m}" for v, m in zip(sk["video"], sk["method"])]


def _audit_skipped(st: pd.DataFrame) -> list[str]:
    """Outputs whose audit record says the leak audit did not run ("video / method")."""
    if st.empty or "audit_skipped" not in st:
        return []
    sk = st[st["audit_skipped"].fillna(False).astype(bool)]
    return [f"{v} / {m}" for v, m in zip(sk["video"], sk["method"])]


def build_report(metrics_dir: str | os.PathLike, out_html: str | os.PathLike, *,
                 options: ReportOptions | None = None, detector: Any = None) -> Path:
    """Write the HTML report of ``metrics_dir`` to ``out_html`` (and, by default, the JSON
    summary beside it: ``report.html`` -> ``report_summary.json``). Returns the HTML path.

    ``detector``: the face detector for the thumbnail face check (default MediaPipe); if
    it cannot be built, no thumbnail is embedded (fail closed) and the report says so."""
    opts = options or ReportOptions()
    t0 = time.perf_counter()
    out = Path(out_html)
    if out.suffix.lower() == ".json":
        raise InvalidInputError(f"{out}: the report is HTML; its JSON summary is written beside it (give --out report.html)")
    if out.is_dir():
        raise InvalidInputError(f"{out}: is a directory; give the HTML file to write, e.g. {out / 'report.html'}")
    md = MetricsDir(metrics_dir)
    _ = md.run
    summary = md.summary
    missing: list[str] = []

    pose_tab = tables.pose_table(summary)
    edges = np.linspace(0.0, opts.hist_max, opts.hist_bins + 1)
    hists, frames_checked, id_source = _identity_counts(md, edges)
    id_tab = tables.identity_table(summary, frames_checked or None)
    clin = tables.clinical_table(md.clinical, summary)
    video_methods = [(v, m) for v, e in md.videos.items() for m in (e.get("processed") or {})]
    audits = {(v, m): md.audit(v, m) for v, m in video_methods}
    st = tables.status_table(md.status, audits, video_methods)
    st = _with_evaluation_errors(st, md.videos, missing)
    skipped = _audit_skipped(st)
    if skipped:
        missing.append(f"Leak audit: {len(skipped)} output(s) were written without the pipeline's leak audit "
                       "(audit.leak_check was off), so their 'audit leaks' are unknown, not 0; `deid verify` reports "
                       "them as errors (not ready to share).")
    archive = len(md.video_ids) > opts.per_video_limit
    worst = tables.worst_videos(summary, st, opts.worst_n)
    featured = _featured_videos(md, summary, worst, archive, opts.max_strip_videos)
    threshold = md.threshold

    methods = [m for m in md.methods if m != "original"]
    part = _partly_evaluated(md.videos)
    if part:
        missing.append(f"Frames: {_partly_note(part, len(md.videos))}; the rest of those videos is in no figure of this "
                       "report (the Videos table's frame counts are the whole videos').")
    if md.run.get("mixed_backends"):
        missing.append("Comparability: videos of this run were evaluated with different pose or identity models; "
                       "their numbers are not comparable (see each video's summary rows).")
    if "swap" not in methods:
        missing.append("Face swap: this run has no swap output (methods: " + (", ".join(methods) or "none") + "), so the "
                       "paper's method is not compared; add it with `deid anonymize -m swap --donor NAME` and re-evaluate.")
    if not md.has("perframe"):
        missing.append("Per-frame OKS: no perframe/ table, so no OKS-over-time curves and no worst-frame choice.")
    if not md.has("keypoints"):
        missing.append("Keypoints: no keypoints/ table, so the frame strips show no skeletons.")

    per_video_oks = []
    curve_videos = featured if archive else md.video_ids
    for v in curve_videos[: (opts.max_strip_videos if archive else opts.per_video_limit)]:
        pf = md.perframe(v) if md.has("perframe") else None
        fps = float((md.videos.get(v) or {}).get("fps") or 0)
        png = plots.oks_over_time(pf, fps, threshold) if pf is not None else None
        if png:
            per_video_oks.append((v, png))

    # frame strips (processed frames only, face-checked)
    strips: list[Strip] = []
    face_check = "MediaPipe face detection (BlazeFace short + full range on every thumbnail), score ≥ 0.3"
    no_strip = NO_STRIP_READ
    if opts.strips and opts.max_strip_videos <= 0:
        no_strip = "Frame strips: none were asked for (--strip-videos 0)."
    elif opts.strips and not featured:
        no_strip = ("Frame strips: none drawn. The archive layout draws them only for the worst videos (lowest AP, "
                    "most leaks, most fail-closed frames), and no video has a measurable AP, a leak or a fail-closed "
                    "frame." if archive else "Frame strips: the run has no video.")
    if opts.strips and featured and opts.max_strip_videos > 0:
        det = detector
        if det is None:
            try:
                det = default_detector()
            except Exception as e:  # fail closed: no face check, no thumbnails
                det = None
                no_strip = (f"Frame strips: the face check could not start ({type(e).__name__}: {e}); no thumbnail is "
                            "shown without it.")
                missing.append(no_strip)
        else:
            face_check = f"{getattr(det, 'name', type(det).__name__)} face detector (injected)"
        if det is not None:
            policy = str(((md.run.get("config") or {}).get("track") or {}).get("fail_closed", "redact"))
            # outputs each video is expected to have: those it was evaluated with (summary rows)
            evaluated = (summary[summary["method"] != "original"].groupby("video")["method"].agg(set).to_dict()
                         if not summary.empty else {})
            listed_none = 0
            for v in featured[: opts.max_strip_videos]:
                entry = md.videos.get(v)
                if not entry:
                    missing.append(f"Frame strips: {v} is not in run.json, so its processed videos are unknown.")
                    continue
                pf = md.perframe(v) if md.has("perframe") else None
                s = build_strip(v, entry, methods, md.resolve, md.keypoints, pf, det, opts.strip, policy,
                                expected=sorted(evaluated.get(v, ())))
                if s is not None:
                    strips.append(s)
                else:
                    listed_none += 1
            if not strips and listed_none:
                no_strip = "Frame strips: run.json lists no processed video for the video(s) chosen."
        if len(featured) > opts.max_strip_videos:
            missing.append(f"Frame strips: shown for {min(len(featured), opts.max_strip_videos)} of {len(md.video_ids)} "
                           "videos (the lowest AP first) to keep the report small.")
    hist_png = plots.identity_histograms(hists, edges, threshold) if hists else None
    dists = tables.per_video_distributions(summary, st) if archive else {}

    # sections
    sec_pose = _pose_section(md, summary, pose_tab, per_video_oks, dists, archive, missing)
    drawn = [m for m, h in hists.items() if any(np.sum(v) > 0 for v in h.values())]
    sec_id = _identity_section(md, id_tab, hist_png, threshold, id_source, missing, drawn)
    sec_clin = _clinical_section(clin, missing)
    sec_frames = _strips_section(strips, opts.strips, missing, opts.strip.draw_face_landmarks, no_strip)
    sec_status = _status_section(st, worst, archive, missing)
    sec_cfg = _config_section(md, face_check)
    all_missing = list(dict.fromkeys(md.notes + missing))
    verdict = _verdict(id_tab, st, summary)

    best = ""
    if not pose_tab.empty:
        non = pose_tab[pose_tab.index != "original"]
        if not non.empty and np.isfinite(non["ap_overall"]).any():
            ap = pd.to_numeric(non["ap_overall"], errors="coerce")
            top = ap[ap == ap.max()].index.tolist()  # a tie (every method at 0) names them all
            best = f"{ap.max():.3f} ({', '.join(map(str, top))})"
    overview = H.cards([
        ("videos", f"{len(md.video_ids):,}"),
        ("methods", ", ".join(methods) or "–"),
        ("best AP overall", best or "–"),
        ("frames still matching patient", H.fmt(verdict["frames_match_patient"], "int")),
        ("fail-closed frames", H.fmt(pd.to_numeric(st.get("fail_closed_frames", pd.Series(dtype=float)), errors="coerce").sum() if not st.empty else None, "int")),
        ("outputs with errors", str(verdict["errors"])),
    ])
    overview = (f'<div class="verdict {verdict["level"]}">{H.esc(verdict["text"])}</div>' + overview
                + H.note("Layout: " + ("archive (distributions and worst videos; per-video detail only for the worst)"
                                      if archive else "study (every video in detail)"))
                + H.missing_box(all_missing))
    body = H.section("overview", "Overview", overview) + sec_pose + sec_id + sec_clin + sec_frames + sec_status + sec_cfg
    nav = [("overview", "Overview"), ("pose", "Pose"), ("identity", "Identity"), ("clinical", "Clinical"),
           ("frames", "Frames"), ("status", "Status"), ("config", "Config")]
    created = md.run.get("created_utc") or ""
    subtitle = (f"{len(md.video_ids):,} video(s) · methods: {', '.join(methods) or 'none'} · evaluated {created} · "
                f"metrics: {md.root.name}")
    footer = (f"Written by deid {H.esc(__version__)} on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from "
              f"{H.esc(md.root.name)}. Self-contained: no external resources. Summary for scripts: "
              f"{H.esc(summary_path(out).name)}.")
    doc = H.page(opts.title, subtitle, nav, body, footer)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_utf8(out, doc)
    if opts.summary_json:
        js = _summary_json(md, pose_tab, id_tab, clin, st, worst, strips, archive, all_missing, verdict, out)
        _write_utf8(summary_path(out), json.dumps(js, indent=1, allow_nan=False, default=str) + "\n")
    log.info("report %s: %.1f KB in %.1f s", out, out.stat().st_size / 1024, time.perf_counter() - t0)
    return out
