"""Markdown for bench/results.md, and the time/memory-vs-length plot.

Everything renders from the plain results dictionary :mod:`bench.run` builds (also
saved as bench/out/results.json), so the table can be re-made without re-measuring:
``python -m bench.table [results.json] [results.md]``.

A row whose measurement did not happen carries ``status: "not run (reason)"`` and is
printed as such — the writer never fills a number in.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

SPEED_HEADERS = ("path", "input", "frames in -> out", "fps (median)", "runs (s)", "x bare transcode", "x deface",
                 "CPU-s / frame", "x bare (CPU)", "x deface (CPU)", "peak RSS (MB)", "notes")


def fmt(v: Any, spec: str = "{:.2f}", empty: str = "-") -> str:
    """A number for a table cell; ``empty`` for None / NaN."""
    if v is None:
        return empty
    if isinstance(v, float) and not math.isfinite(v):
        return empty
    if isinstance(v, (int, float)):
        return spec.format(v)
    return str(v)


def cell(v: Any) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, no line breaks)."""
    return str(v).replace("|", "\\|").replace("\n", " ").strip()


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [list(r) for r in rows]
    for r in rows:
        if len(r) != len(headers):
            raise ValueError(f"row has {len(r)} cells, the table {len(headers)}: {r}")
    out = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def is_run(row: Mapping[str, Any]) -> bool:
    return str(row.get("status", "ok")) == "ok"


def speed_cells(row: Mapping[str, Any]) -> list[str]:
    """One speed row: measured, or 'not run (reason)' with every number left out."""
    if not is_run(row):
        return [row.get("path", "?"), row.get("input", "-"), "-", row.get("status", "not run"), "-", "-", "-", "-", "-", "-", "-",
                row.get("note", "")]
    fin, fout = row.get("frames"), row.get("frames_out")
    frames = f"{fmt(fin, '{:d}')} -> {fmt(fout, '{:d}')}" if fin is not None else "-"
    runs = ", ".join(fmt(x, "{:.2f}") for x in row.get("runs_s") or [])
    fps_spec = "{:.2f}" if (row.get("fps") or 0) < 10 else "{:.1f}"
    return [
        row.get("path", "?"),
        row.get("input", "-"),
        frames,
        fmt(row.get("fps"), fps_spec) + (f" {row['unit']}" if row.get("unit") else ""),
        runs or "-",
        fmt(row.get("x_bare"), "{:.3f}"),
        fmt(row.get("x_deface"), "{:.2f}"),
        fmt(row.get("cpu_per_frame"), "{:.4f}"),
        fmt(row.get("x_bare_cpu"), "{:.3f}"),
        fmt(row.get("x_deface_cpu"), "{:.2f}"),
        fmt(row.get("peak_rss_mb"), "{:.0f}"),
        row.get("note", ""),
    ]


def speed_table(rows: Sequence[Mapping[str, Any]]) -> str:
    return md_table(SPEED_HEADERS, [speed_cells(r) for r in rows])


def length_table(runs: Sequence[Mapping[str, Any]]) -> str:
    headers = ("video length", "frames", "wall (s)", "s per 1000 frames", "CPU-s / frame", "peak RSS (MB)", "status")
    rows = []
    for r in runs:
        ok = is_run(r)
        rows.append([
            f"{fmt(r.get('minutes'), '{:g}')} min (looped: {fmt(r.get('video_seconds'), '{:.0f}')} s)",
            fmt(r.get("frames"), "{:d}"),
            fmt(r.get("seconds"), "{:.1f}") if ok else "-",
            fmt(1000 * r["seconds"] / r["frames"], "{:.2f}") if ok and r.get("seconds") and r.get("frames") else "-",
            fmt(r.get("cpu_per_frame"), "{:.4f}") if ok else "-",
            fmt(r.get("peak_rss_mb"), "{:.0f}") if ok else "-",
            r.get("status", "ok"),
        ])
    return md_table(headers, rows)


def recall_table(rows: Sequence[Mapping[str, Any]]) -> str:
    headers = ("clip", "frames", "faces: deface / deid detector", "frames deface found a face deid's detector missed",
               "frames deid's detector found a face deface missed", "frames with a face deface found left visible by deid's output",
               "frames deid's output hides a region deface left visible", "deid fail-closed frames", "status")
    out = []
    for r in rows:
        if not is_run(r):
            out.append([r.get("clip", "?"), "-", "-", "-", "-", "-", "-", "-", r.get("status")])
            continue
        out.append([r["clip"], r["frames"], f"{r['faces_deface']} / {r['faces_deid_detector']}", r["frames_deface_only"],
                    r["frames_deid_only"], r["frames_deface_face_visible_in_deid"], r["frames_deid_region_not_in_deface"],
                    r["frames_redacted"], "ok"])
    return md_table(headers, out)


def targets_table(targets: Sequence[Mapping[str, Any]]) -> str:
    def verdict(t: Mapping[str, Any]) -> str:
        m = t.get("met")
        return "met" if m is True else ("NOT met" if m is False else "not measured")

    return md_table(("target", "measured", "verdict", "notes"),
                    [[t["target"], t.get("measured", "-"), verdict(t), t.get("note", "")] for t in targets])


def facts_table(facts: Mapping[str, Any]) -> str:
    return md_table(("machine", ""), [[k, v] for k, v in facts.items()])


def render(res: Mapping[str, Any]) -> str:
    """The whole bench/results.md."""
    L: list[str] = ["# deid benchmarks", ""]
    L.append(f"Generated by `make bench` (`python -m bench.run {res.get('argv', '')}`) on {res.get('machine', {}).get('date', '?')}; "
             f"the whole run took {fmt(res.get('elapsed_s', math.nan), '{:.0f}')} s. Method and caveats: docs/benchmarks.md.")
    L.append("Every speed figure is also given as a ratio to a reference measured in the same run on the same input "
             "(the machine is shared, so absolute numbers drift; ratios drift less). Each path ran "
             f"{res.get('repeats', '?')} times, each in a fresh process; the median is shown, every run is listed.")
    L += ["", facts_table(res.get("machine", {})), ""]
    if res.get("targets"):
        L += ["## Targets", "", targets_table(res["targets"]), ""]
    for sec in res.get("speed_sections", []):
        L += [f"## {sec['title']}", ""]
        if sec.get("intro"):
            L += [sec["intro"], ""]
        L += [speed_table(sec["rows"]), ""]
    ln = res.get("length")
    if ln:
        L += ["## Time and memory vs video length", ""]
        if ln.get("intro"):
            L += [ln["intro"], ""]
        L += [length_table(ln.get("runs", [])), ""]
        if ln.get("summary"):
            L += [ln["summary"], ""]
        if ln.get("plot"):
            L += [f"![time and peak memory vs video length]({ln['plot']})", ""]
    rc = res.get("recall")
    if rc:
        L += ["## Face recall: deid vs deface on the same frames", ""]
        if rc.get("intro"):
            L += [rc["intro"], ""]
        L += [recall_table(rc.get("rows", [])), ""]
        if rc.get("summary"):
            L += [rc["summary"], ""]
    pj = res.get("projection_text")
    if pj:
        L += ["## Projection to a whole archive", "", pj, ""]
    if res.get("notes"):
        L += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(L).rstrip() + "\n"


def plot_length(runs: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Time and peak RSS vs video length (two panels); None when fewer than two runs."""
    ok = [r for r in runs if is_run(r) and r.get("seconds")]
    if len(ok) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["video_seconds"] / 60.0 for r in ok]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    a1.plot(x, [r["seconds"] for r in ok], "o-")
    a1.set_xlim(0, max(x) * 1.05)
    a1.set_ylim(0, max(r["seconds"] for r in ok) * 1.1)
    a1.set_xlabel("video length (min)")
    a1.set_ylabel("wall time (s)")
    a1.set_title("time (linear = streaming)")
    a1.grid(alpha=0.3)
    a2.plot(x, [r["peak_rss_mb"] for r in ok], "o-", color="tab:red")
    a2.set_xlim(0, max(x) * 1.05)
    a2.set_xlabel("video length (min)")
    a2.set_ylabel("peak RSS (MB)")
    a2.set_ylim(0, max(r["peak_rss_mb"] for r in ok) * 1.25)
    a2.set_title("peak memory (flat = bounded)")
    a2.grid(alpha=0.3)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    plt.close(fig)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    here = Path(__file__).resolve().parent
    src = Path(argv[0]) if argv else here / "out" / "results.json"
    dst = Path(argv[1]) if len(argv) > 1 else here / "results.md"
    dst.write_text(render(json.loads(src.read_text())))
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
