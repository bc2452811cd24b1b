"""The report's tables: pure functions from the METRICS_DIR tables (pandas) to small
per-method / per-video tables. No I/O, no HTML — easy to test and reused by the JSON summary.

Aggregation across videos, and why:
- AP: the *mean of per-video AP* (each video counts once, as in a per-patient study);
  the archive layout adds the distribution across videos. COCO AP over the pooled
  archive would let one long video dominate.
- identity: frame and face *counts are summed*; mean distances are weighted by the
  number of faces each video contributed; the minimum distance to the patient is the
  minimum (the closest call is what matters for privacy); the re-identification
  attack's rank-1 and chance level are averaged over videos.
- clinical features: the *median* relative error (a feature that cannot be measured in
  one video, or whose original value is ~0, gives huge relative errors; the median is
  not dragged by them), with the number of videos where it was measurable.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .data import order_methods

AP_GROUPS = ("overall", "body", "head", "face", "hands", "feet")
#: groups of the paper's table (Zhu et al. 2020 report body / face / hands AP)
PAPER_GROUPS = ("overall", "body", "head", "face", "hands")


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def _nanmean(s: pd.Series) -> float:
    v = s.to_numpy(float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def _nansum(s: pd.Series) -> float:
    v = s.to_numpy(float)
    v = v[np.isfinite(v)]
    return float(v.sum()) if len(v) else float("nan")


def _weighted(values: pd.Series, weights: pd.Series) -> float:
    v, w = values.to_numpy(float), weights.to_numpy(float)
    ok = np.isfinite(v)
    if not ok.any():
        return float("nan")
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    if w[ok].sum() <= 0:
        return float(v[ok].mean())
    return float((v[ok] * w[ok]).sum() / w[ok].sum())


def methods_of(summary: pd.DataFrame, extra: Sequence[str] = ()) -> list[str]:
    ms = list(summary["method"].unique()) if "method" in summary and not summary.empty else []
    return order_methods(ms + list(extra))


# ----------------------------------------------------------------------------- pose


def pose_models(summary: pd.DataFrame) -> str:
    """The pose estimators behind these summary rows, with how many videos each scored
    ("mediapipe_holistic" alone, or "mediapipe_holistic: 3 videos, rtmpose: 1 video")."""
    if "pose_backend" not in summary or summary.empty:
        return ""
    per = summary.dropna(subset=["pose_backend"]).groupby("pose_backend")["video"].nunique()
    if len(per) <= 1:
        return ", ".join(str(x) for x in per.index)
    return ", ".join(f"{b}: {n} video{'s' if n != 1 else ''}" for b, n in per.items())


def pose_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per method: videos, mean AP@[.5:.95] per group, AP50 / AP75 overall, mean per-frame OKS."""
    rows = []
    for m in methods_of(summary):
        d = summary[summary["method"] == m]
        row: dict[str, Any] = {"method": m, "videos": int(d["video"].nunique())}
        for g in AP_GROUPS:
            row[f"ap_{g}"] = _nanmean(_num(d, f"ap_{g}"))
        for c in ("ap50_overall", "ap75_overall", "oks_mean"):
            row[c] = _nanmean(_num(d, c))
        row["pose_models"] = pose_models(d)
        rows.append(row)
    return pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()


# ----------------------------------------------------------------------------- identity

IDENTITY_FRAME_COLUMNS = ("identity_frames", "frames_checked")


def _identity_frames(df: pd.DataFrame) -> pd.Series:
    """Per row: frames whose faces were checked (the first of IDENTITY_FRAME_COLUMNS
    present), else the frames evaluated."""
    out = pd.Series(np.nan, index=df.index, dtype=float)
    for c in (*IDENTITY_FRAME_COLUMNS, "frames"):
        out = out.fillna(_num(df, c))
    return out


def identity_table(summary: pd.DataFrame, frames_checked: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Per method: frames checked, frames still matching the patient / the original face
    at the same place, frames without a face, distances, and the re-id attack vs chance.

    ``frames_checked`` (method -> frames whose faces were embedded, from the identity
    table) wins over the summary's ``frames`` (frames evaluated), which over-counts
    when ``evaluate.identity_every`` > 1."""
    rows = []
    for m in methods_of(summary):
        d = summary[summary["method"] == m]
        checked = float("nan")
        for c in IDENTITY_FRAME_COLUMNS:
            if c in d and _num(d, c).notna().any():
                checked = _nansum(_num(d, c))
                break
        if frames_checked and m in frames_checked:
            checked = float(frames_checked[m])
        if not np.isfinite(checked):
            checked = _nansum(_num(d, "frames"))
        faces = _num(d, "faces")
        mp = _nansum(_num(d, "frames_match_patient"))
        attacked = _num(d, "attack_rank1").notna()
        row = {
            "method": m,
            "videos": int(d["video"].nunique()),
            "frames_checked": checked,
            "frames_match_patient": mp,
            "pct_match_patient": 100.0 * mp / checked if np.isfinite(mp) and checked > 0 else float("nan"),
            "frames_match_original": _nansum(_num(d, "frames_match_original")),
            "frames_match_same_place": _nansum(_num(d, "frames_match_same_place")),
            "same_place_faces": _nansum(_num(d, "same_place_faces")),
            "frames_leak": _nansum(_num(d, "frames_leak")),
            "frames_match_target": _nansum(_num(d, "frames_match_target")),
            "frames_no_face": _nansum(_num(d, "frames_no_face")),
            "faces": _nansum(faces),
            "mean_dist_patient": _weighted(_num(d, "mean_dist_patient"), faces),
            "min_dist_patient": float(np.nanmin(_num(d, "min_dist_patient"))) if _num(d, "min_dist_patient").notna().any() else float("nan"),
            "mean_dist_original": _weighted(_num(d, "mean_dist_original"), faces),
            "mean_dist_target": _weighted(_num(d, "mean_dist_target"), faces),
            "mean_dist_same_place": _weighted(_num(d, "mean_dist_same_place"), _num(d, "same_place_faces")),
            "patient_source": ", ".join(sorted({str(x) for x in d["patient_source"].dropna()})) if "patient_source" in d else "",
            "attack_rank1": _nanmean(_num(d, "attack_rank1")),
            # chance over the same videos as the score (a video with no usable probe has a
            # chance but no score)
            "attack_chance_rank1": _nanmean(_num(d, "attack_chance_rank1").where(attacked)),
            "attack_map": _nanmean(_num(d, "attack_map")),
            "attack_chance_map": _nanmean(_num(d, "attack_chance_map").where(attacked)),
            "attack_identities": float(_num(d, "attack_identities").where(attacked).min()) if attacked.any() else float("nan"),
        }
        rows.append(row)
    return pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()


# ----------------------------------------------------------------------------- clinical


def clinical_table(clinical: pd.DataFrame | None, summary: pd.DataFrame) -> pd.DataFrame:
    """Method x feature: median relative error across videos (``clinical.parquet``, else
    the summary's ``fe_*`` columns). Columns are features; a ``videos`` companion table
    is in ``attrs["measured"]`` (videos where the feature was measurable)."""
    long = None
    if clinical is not None and not clinical.empty and {"method", "feature", "relative_error"} <= set(clinical.columns):
        long = clinical[["video", "method", "feature", "relative_error"]].copy()
    elif not summary.empty:
        fe = [c for c in summary.columns if c.startswith("fe_")]
        if fe:
            long = summary.melt(id_vars=["video", "method"], value_vars=fe, var_name="feature", value_name="relative_error")
            long["feature"] = long["feature"].str[3:]
    if long is None or long.empty:
        return pd.DataFrame()
    long = long[long["method"] != "original"]
    long["relative_error"] = pd.to_numeric(long["relative_error"], errors="coerce").astype(float)
    # A feature the original shows but the processed video no longer does (a mask that
    # erases the mouth, a pose lost with the face) is the worst result, not a gap: count it.
    lost_rows = pd.DataFrame()
    if clinical is not None and "original_value" in getattr(clinical, "columns", []) and "value" in clinical.columns:
        c = clinical[clinical["method"] != "original"]
        ov = pd.to_numeric(c["original_value"], errors="coerce").astype(float)
        pv = pd.to_numeric(c["value"], errors="coerce").astype(float)
        lost_rows = c[np.isfinite(ov) & ~np.isfinite(pv)]
    long = long[long["relative_error"].notna()]  # NaN = not measurable; +inf (original was 0) stays
    if long.empty and lost_rows.empty:
        return pd.DataFrame()
    methods = order_methods(sorted(set(long["method"]) | set(lost_rows["method"] if not lost_rows.empty else [])))
    features = sorted(set(long["feature"]) | set(lost_rows["feature"] if not lost_rows.empty else []))
    if long.empty:
        med = pd.DataFrame(np.nan, index=pd.Index(methods, name="method"), columns=features)
        cnt = pd.DataFrame(0, index=med.index, columns=features)
    else:
        med = long.pivot_table(index="method", columns="feature", values="relative_error", aggfunc="median")
        cnt = long.pivot_table(index="method", columns="feature", values="relative_error", aggfunc="count")
        med = med.reindex(index=methods, columns=features)
        cnt = cnt.reindex(index=methods, columns=features).fillna(0).astype(int)
    lost = pd.DataFrame(0, index=med.index, columns=features)
    if not lost_rows.empty:
        lost = lost_rows.groupby(["method", "feature"]).size().unstack(fill_value=0).reindex(
            index=med.index, columns=features, fill_value=0).astype(int)
    med.attrs["measured"] = cnt
    med.attrs["lost"] = lost
    if clinical is not None and "original_value" in getattr(clinical, "columns", []):
        ov = pd.to_numeric(clinical["original_value"], errors="coerce").astype(float)
        med.attrs["original"] = clinical.assign(_o=ov).groupby("feature")["_o"].median()
    return med


# ----------------------------------------------------------------------------- status / audit


def _fallbacks(audit: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fallback counts an audit record carries: head regions the tracker had to place
    without a detection, and (swap) faces masked instead of swapped."""
    if not audit:
        return {}
    c = audit.get("counts") or {}
    st = audit.get("anonymizer_stats") or {}
    out = {
        "regions_interpolated": c.get("regions_interpolated"),
        "regions_held": c.get("regions_held"),
        "regions_pose": c.get("regions_pose"),
    }
    masked = [st.get(k) for k in ("faces_masked_gate", "faces_masked_swap_failed") if st.get(k) is not None]
    out["swap_fallbacks"] = sum(int(v) for v in masked) if masked else None
    la = audit.get("leak_audit") or {}
    out["audit_leaks"] = la.get("leaks") if isinstance(la, Mapping) else None
    out["audit_skipped"] = bool(isinstance(la, Mapping) and la.get("skipped"))
    return out


def status_table(status: pd.DataFrame | None, audits: Mapping[tuple[str, str], Mapping[str, Any] | None],
                 video_methods: Sequence[tuple[str, str]] = ()) -> pd.DataFrame:
    """One row per (video, method): state, frames, fail-closed frames, fallbacks, leaks,
    error. From status.parquet joined with the audit records; audit records alone when
    there is no status table; a ``missing`` row for outputs run.json lists that neither knows."""
    cols = ["video", "method", "state", "frames_read", "frames_written", "fail_closed_frames", "faces_detected",
            "regions_interpolated", "regions_held", "regions_pose", "swap_fallbacks", "leaks", "audit_skipped",
            "error_kind", "error"]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    if status is not None and not status.empty:
        for r in status.to_dict("records"):
            key = (str(r.get("video")), str(r.get("method") or ""))
            rows[key] = {
                "video": key[0], "method": key[1], "state": r.get("state"), "frames_read": r.get("frames_read"),
                "frames_written": r.get("frames_written"), "fail_closed_frames": r.get("fail_closed_frames"),
                "faces_detected": r.get("faces_detected"), "regions_interpolated": r.get("faces_interpolated"),
                "regions_held": r.get("faces_held"), "regions_pose": r.get("faces_pose_placed"),
                "leaks": r.get("leaks"), "error_kind": r.get("error_kind") or "", "error": r.get("error") or "",
            }
    for key, audit in audits.items():
        fb = _fallbacks(audit)
        row = rows.get(key)
        if row is None and audit:
            c = audit.get("counts") or {}
            row = {
                "video": key[0], "method": key[1], "state": audit.get("status"), "frames_read": audit.get("frames_read"),
                "frames_written": (audit.get("output") or {}).get("frames_written"),
                "fail_closed_frames": c.get("frames_fail_closed"), "faces_detected": c.get("regions_detected"),
                "leaks": fb.get("audit_leaks"), "error_kind": "", "error": audit.get("error") or "",
            }
            rows[key] = row
        if row is None:
            continue
        for k in ("regions_interpolated", "regions_held", "regions_pose"):
            if row.get(k) is None or (isinstance(row.get(k), float) and not np.isfinite(row[k])):
                row[k] = fb.get(k)
        row["swap_fallbacks"] = fb.get("swap_fallbacks")
        # the record says the leak audit did not run (audit.leak_check off): its "leaks" is
        # then no evidence of anything, and the verdict must not read it as 0
        row["audit_skipped"] = bool(fb.get("audit_skipped"))
        if row.get("leaks") is None or (isinstance(row.get("leaks"), float) and not np.isfinite(row["leaks"])):
            row["leaks"] = fb.get("audit_leaks")
    for key in video_methods:
        if key not in rows:
            rows[key] = {"video": key[0], "method": key[1], "state": "unknown",
                         "error": "no status row and no audit record for this output"}
    df = pd.DataFrame(list(rows.values()), columns=cols)
    if df.empty:
        return df
    order = {m: i for i, m in enumerate(order_methods(list(df["method"].unique())))}
    df["_o"] = df["method"].map(order)
    return df.sort_values(["video", "_o"]).drop(columns="_o").reset_index(drop=True)


def status_overview(st: pd.DataFrame) -> pd.DataFrame:
    """Per method: outputs by state, fail-closed frames, fallbacks, leaks, errors (the archive view)."""
    if st.empty:
        return pd.DataFrame()
    rows = []
    methods = list(st["method"].fillna("").unique())
    # order_methods drops "": a video that failed before any output has one such row
    for m in order_methods(methods) + ([""] if "" in methods else []):
        d = st[st["method"].fillna("") == m]
        row: dict[str, Any] = {"method": m or "(before any output)", "outputs": len(d)}
        for s, n in d["state"].fillna("unknown").value_counts().items():
            row[f"state_{s}"] = int(n)
        for c in ("fail_closed_frames", "regions_interpolated", "regions_held", "regions_pose", "swap_fallbacks", "leaks"):
            row[c] = _nansum(_num(d, c))
        row["errors"] = int((d["error"].fillna("") != "").sum())
        rows.append(row)
    df = pd.DataFrame(rows).set_index("method")
    states = [c for c in df.columns if c.startswith("state_")]
    df[states] = df[states].fillna(0).astype(int)  # counts of outputs: absent = none; unknown counts stay NaN
    return df


def error_kinds(st: pd.DataFrame) -> pd.Series:
    if st.empty:
        return pd.Series(dtype=int)
    e = st[st["error"].fillna("") != ""]
    return e["error_kind"].replace("", "unknown").fillna("unknown").value_counts()


# ----------------------------------------------------------------------------- worst videos


def worst_videos(summary: pd.DataFrame, st: pd.DataFrame, n: int = 10) -> dict[str, pd.DataFrame]:
    """The videos a reviewer should look at first, across methods (original excluded):

    - ``leaks``: most frames still matching the patient or the original face (summary),
      plus faces the pipeline's own leak audit flagged (status);
    - ``fail_closed``: most frames the pipeline redacted because a person had no face region;
    - ``lowest_ap``: lowest overall AP of any method.
    """
    out: dict[str, pd.DataFrame] = {}
    s = summary[summary["method"] != "original"] if not summary.empty else summary
    if not s.empty:
        # matches to the patient, plus matches to the original face by either test (the
        # gallery of its faces, or the face at the same place): the larger, not the sum
        orig = np.maximum(_num(s, "frames_match_original").fillna(0), _num(s, "frames_match_same_place").fillna(0))
        leak = s.assign(_l=_num(s, "frames_match_patient").fillna(0) + orig)
        lv = leak.groupby("video").agg(leak_frames=("_l", "sum"))
        if not st.empty:
            al = st.assign(_a=_num(st, "leaks").fillna(0)).groupby("video")["_a"].sum().rename("audit_leaks")
            lv = lv.join(al, how="outer").fillna(0)
        else:
            lv["audit_leaks"] = 0.0
        lv["total"] = lv["leak_frames"] + lv["audit_leaks"]
        lv = lv[lv["total"] > 0].sort_values("total", ascending=False).head(n)
        out["leaks"] = lv.drop(columns="total")
        ap = s.assign(_ap=_num(s, "ap_overall"))
        ap = ap[np.isfinite(ap["_ap"])]
        if not ap.empty:
            idx = ap.groupby("video")["_ap"].idxmin()
            low = ap.loc[idx, ["video", "method", "_ap"]].rename(columns={"_ap": "ap_overall"}).set_index("video")
            out["lowest_ap"] = low.sort_values("ap_overall").head(n)
    if not st.empty:
        fc = st.assign(_f=_num(st, "fail_closed_frames")).groupby("video").agg(
            fail_closed_frames=("_f", "max"), frames=("frames_read", "max"))
        fc = fc[fc["fail_closed_frames"] > 0].sort_values("fail_closed_frames", ascending=False).head(n)
        out["fail_closed"] = fc
    return out


def per_video_distributions(summary: pd.DataFrame, st: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per (video, method) values the archive plots draw as distributions."""
    s = summary[summary["method"] != "original"] if not summary.empty else summary
    out: dict[str, pd.DataFrame] = {}
    if not s.empty:
        # frames_match_* count among the frames checked for faces (every identity_every-th)
        checked = _identity_frames(s).replace(0, np.nan)
        out["ap_overall"] = s.assign(value=_num(s, "ap_overall"))[["video", "method", "value"]]
        out["match_patient_pct"] = s.assign(value=100.0 * _num(s, "frames_match_patient") / checked)[["video", "method", "value"]]
    if not st.empty:
        fr = _num(st, "frames_read").replace(0, np.nan)
        out["fail_closed_pct"] = st.assign(value=100.0 * _num(st, "fail_closed_frames") / fr)[["video", "method", "value"]]
    return out
