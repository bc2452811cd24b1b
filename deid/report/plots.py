"""Matplotlib figures rendered to PNG bytes (embedded in the HTML as data: URIs).

Why PNG and not SVG: an SVG of a per-frame curve grows with the number of frames and
carries an ``xmlns="http://..."`` attribute that the report's "no external URL" checks
would have to special-case; a palette PNG stays ~20-60 KB whatever the data size.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot global
state), so building a report is thread-safe and never opens a window. Each function
returns ``bytes`` or None when it has nothing to draw; callers turn None into a note.
"""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

#: Okabe-Ito colours (colour-blind safe), one per method, the same in every plot
METHOD_COLORS: dict[str, str] = {
    "original": "#999999",
    "swap": "#CC79A7",
    "mask": "#000000",
    "blur": "#0072B2",
    "pixelate": "#009E73",
}
_EXTRA = ["#E69F00", "#D55E00", "#56B4E9", "#F0E442"]
DPI = 96


def method_color(method: str, i: int = 0) -> str:
    return METHOD_COLORS.get(method, _EXTRA[i % len(_EXTRA)])


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    return fig


def to_png(fig, colors: int = 128) -> bytes:
    """Render and shrink: a palette PNG (``colors`` entries) is ~3x smaller than RGBA and
    looks the same for line and bar charts."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3, linewidth=0.6)


# ----------------------------------------------------------------------------- AP


def ap_by_region(pose_tab: pd.DataFrame, per_video: pd.DataFrame | None = None,
                 groups: Sequence[str] = ("overall", "body", "head", "face", "hands", "feet")) -> bytes | None:
    """Grouped bars: mean AP@[.5:.95] per region group and method (the sanity row
    "original" left out); whiskers = the middle half of the videos (25th..75th
    percentile) when there are several (min..max would always span 0..1 on an archive)."""
    if pose_tab is None or pose_tab.empty:
        return None
    methods = [m for m in pose_tab.index if m != "original"]
    groups = [g for g in groups if f"ap_{g}" in pose_tab and np.isfinite(pose_tab.loc[methods, f"ap_{g}"]).any()] if methods else []
    if not methods or not groups:
        return None
    fig = _figure(8.5, 3.4)
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    x = np.arange(len(groups))
    for i, m in enumerate(methods):
        vals = np.array([pose_tab.loc[m, f"ap_{g}"] for g in groups], float)
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, np.nan_to_num(vals), width * 0.92, color=method_color(m, i), label=m)
        if per_video is not None and per_video["video"].nunique() > 1:
            d = per_video[per_video["method"] == m]
            q = {g: pd.to_numeric(d[f"ap_{g}"], errors="coerce").dropna() for g in groups}
            lo = [q[g].quantile(0.25) if len(q[g]) else np.nan for g in groups]
            hi = [q[g].quantile(0.75) if len(q[g]) else np.nan for g in groups]
            err = np.array([np.nan_to_num(vals - np.array(lo)), np.nan_to_num(np.array(hi) - vals)])
            ax.errorbar(pos, np.nan_to_num(vals), yerr=np.clip(err, 0, None), fmt="none", ecolor="#555555", lw=0.8, capsize=2)
        for p, v in zip(pos, vals):
            ax.text(p, (v if np.isfinite(v) else 0) + 0.01, "n/a" if not np.isfinite(v) else f"{v:.2f}",
                    ha="center", va="bottom", fontsize=6.5, rotation=90 if len(methods) > 3 else 0)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("AP@[.5:.95] vs original")
    ax.set_title("Pose kept after de-identification, by region", fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), ncol=len(methods), fontsize=8, frameon=False, loc="outside lower center")
    _style(ax)
    return to_png(fig)


# ----------------------------------------------------------------------------- per-frame OKS


def oks_column(df: pd.DataFrame, group: str = "overall") -> str | None:
    for c in (f"oks_{group}", group):
        if c in df.columns:
            return c
    return None


def distance_column(df: pd.DataFrame) -> str | None:
    for c in ("min_dist_patient", "dist_patient", "min_dist", "dist_patient_min"):
        if c in df.columns:
            return c
    return None


def oks_over_time(perframe: pd.DataFrame, fps: float, threshold: float, title: str = "") -> bytes | None:
    """Per-frame OKS (overall group) of each method over time; below it, when measured,
    each frame's smallest identity distance to the patient with the same-person threshold."""
    if perframe is None or perframe.empty:
        return None
    col = oks_column(perframe)
    if col is None:
        return None
    pf = perframe[perframe["method"] != "original"]
    methods = [m for m in dict.fromkeys(pf["method"]) if np.isfinite(pd.to_numeric(pf.loc[pf["method"] == m, col], errors="coerce")).any()]
    if not methods:
        return None
    dcol = distance_column(pf)
    has_d = dcol is not None and np.isfinite(pd.to_numeric(pf[dcol], errors="coerce")).any()
    fig = _figure(8.5, 3.6 if has_d else 2.4)
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2]) if has_d else [fig.add_subplot()]
    fps = fps if fps and fps > 0 else 1.0
    from .data import order_methods

    for i, m in enumerate(order_methods(methods)):
        d = pf[pf["method"] == m]
        t = d["frame"].to_numpy(float) / fps
        axes[0].plot(t, pd.to_numeric(d[col], errors="coerce").to_numpy(float), lw=1.0, color=method_color(m, i), label=m)
        if has_d:
            axes[1].plot(t, pd.to_numeric(d[dcol], errors="coerce").to_numpy(float), lw=0.9, color=method_color(m, i),
                         marker=".", ms=2)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("OKS per frame")
    fig.legend(*axes[0].get_legend_handles_labels(), ncol=len(methods), fontsize=8, frameon=False, loc="outside lower center")
    if title:
        axes[0].set_title(title, fontsize=10)
    if has_d:
        axes[1].axhline(threshold, color="#D55E00", ls="--", lw=1)
        axes[1].text(axes[1].get_xlim()[0], threshold, f" {threshold:g}: same person below", color="#D55E00",
                     fontsize=7, va="bottom")
        axes[1].set_ylabel("dist. to patient")
    axes[-1].set_xlabel("time (s)")
    for ax in axes:
        _style(ax)
    return to_png(fig)


# ----------------------------------------------------------------------------- identity


def identity_histograms(hists: Mapping[str, Mapping[str, np.ndarray]], edges: np.ndarray, threshold: float) -> bytes | None:
    """Small multiples, one per method: histogram of face distances to the patient
    (to the original face at the same place when there is no reference photo) and, for
    swap, to the donor; the same-person threshold as a dashed line."""
    from .data import order_methods

    methods = [m for m in order_methods(list(hists)) if any(np.sum(v) > 0 for v in hists[m].values())]
    if not methods:
        return None
    n = len(methods)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig = _figure(2.6 * cols + 0.4, 2.0 * rows + 0.3)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    centers = (edges[:-1] + edges[1:]) / 2
    w = edges[1] - edges[0]
    labels = {"patient": "to patient", "original": "to original (same place)", "target": "to donor"}
    colors = {"patient": "#0072B2", "original": "#56B4E9", "target": "#CC79A7"}
    for ax, m in zip(axes, methods):
        for key in ("patient", "original", "target"):
            c = np.asarray(hists[m].get(key, []), float)
            if c.size and c.sum() > 0:
                if key == "original" and np.sum(hists[m].get("patient", [])) > 0:
                    continue  # the patient's reference wins; same-place distance is the fallback
                ax.bar(centers, c, w, color=colors[key], alpha=0.65, label=labels[key])
        ax.axvline(threshold, color="#D55E00", ls="--", lw=1)
        ax.set_title(m, fontsize=9)
        ax.set_xlim(edges[0], edges[-1])
        ax.tick_params(labelsize=7)
        _style(ax)
        ax.legend(fontsize=6.5, frameon=False)
    for ax in axes[len(methods):]:
        ax.set_visible(False)
    fig.supxlabel(f"face distance (same person below {threshold:g}, dashed)", fontsize=8)
    fig.supylabel("faces", fontsize=8)
    return to_png(fig)


# ----------------------------------------------------------------------------- per keypoint


def _pick(df: pd.DataFrame, names: Sequence[str]) -> str | None:
    return next((c for c in names if c in df.columns), None)


ERROR_COLUMNS = ("mean_error", "error", "mean_normalised_error", "mean_normalized_error", "error_mean")
MISSING_COLUMNS = ("missing_rate", "missing", "miss_rate")


def keypoint_error(per_keypoint: pd.DataFrame | None) -> bytes | None:
    """Mean normalised error (distance / person scale) and missing rate per keypoint,
    averaged over videos, one line per method, with the region bands of the schema."""
    if per_keypoint is None or per_keypoint.empty:
        return None
    ecol, mcol = _pick(per_keypoint, ERROR_COLUMNS), _pick(per_keypoint, MISSING_COLUMNS)
    kcol = _pick(per_keypoint, ("keypoint", "keypoint_index", "index"))
    if kcol is None or (ecol is None and mcol is None):
        return None
    from ..pose.schema import REGIONS
    from .data import order_methods

    df = per_keypoint[per_keypoint["method"] != "original"].copy()
    if df.empty:
        return None
    for c in (ecol, mcol):
        if c:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    agg = df.groupby(["method", kcol])[[c for c in (ecol, mcol) if c]].mean().reset_index()
    panels = [c for c in (ecol, mcol) if c and np.isfinite(agg[c]).any()]
    if not panels:
        return None
    fig = _figure(8.5, 1.9 * len(panels) + 0.6)
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    kmax = int(agg[kcol].max())
    for ax, c in zip(axes, panels):
        for j, (region, ix) in enumerate(REGIONS.items()):
            if ix[0] > kmax:
                continue
            if j % 2 == 0:
                ax.axvspan(ix[0] - 0.5, ix[-1] + 0.5, color="#f0f0f0", lw=0)
        for i, m in enumerate(order_methods(list(agg["method"].unique()))):
            d = agg[agg["method"] == m].sort_values(kcol)
            ax.plot(d[kcol], d[c], lw=0.9, marker=".", ms=2.5, color=method_color(m, i), label=m)
        ax.set_ylabel("mean error\n(/ person scale)" if c == ecol else "missing rate", fontsize=8)
        _style(ax)
    top = axes[0]
    ymax = top.get_ylim()[1]
    for region, ix in REGIONS.items():
        if ix[0] <= kmax:
            top.text((ix[0] + min(ix[-1], kmax)) / 2, ymax, region.replace("_", " "), ha="center", va="bottom", fontsize=7, color="#555555")
    fig.legend(*axes[0].get_legend_handles_labels(), ncol=6, fontsize=7.5, frameon=False, loc="outside lower center")
    axes[-1].set_xlabel("keypoint index (wholebody133)")
    return to_png(fig)


# ----------------------------------------------------------------------------- archive distributions


def distributions(dists: Mapping[str, pd.DataFrame]) -> bytes | None:
    """Archive view: per method, the distribution across videos of overall AP, % of
    checked frames still matching the patient, and % of frames redacted fail-closed."""
    from .data import order_methods

    titles = {"ap_overall": "AP@[.5:.95] overall", "match_patient_pct": "% frames matching patient",
              "fail_closed_pct": "% frames fail-closed"}
    keys = [k for k in titles if k in dists and np.isfinite(pd.to_numeric(dists[k]["value"], errors="coerce")).any()]
    if not keys:
        return None
    fig = _figure(2.7 * len(keys) + 0.4, 2.8)
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    for ax, k in zip(axes, keys):
        d = dists[k]
        ms = [m for m in order_methods(list(d["method"].unique())) if m]
        data = [pd.to_numeric(d.loc[d["method"] == m, "value"], errors="coerce").dropna().to_numpy(float) for m in ms]
        keep = [(m, v) for m, v in zip(ms, data) if len(v)]
        if not keep:
            ax.set_visible(False)
            continue
        bp = ax.boxplot([v for _, v in keep], tick_labels=[m for m, _ in keep], patch_artist=True, widths=0.6,
                        flierprops={"markersize": 2, "alpha": 0.4})
        for i, (patch, (m, _)) in enumerate(zip(bp["boxes"], keep)):
            patch.set_facecolor(method_color(m, i))
            patch.set_alpha(0.55)
        ax.set_title(titles[k], fontsize=9)
        ax.tick_params(labelsize=7)
        _style(ax)
    return to_png(fig)
