"""`deid report` end to end on synthetic METRICS_DIRs (real pipeline outputs of synthetic
clips, metrics from the project's metric functions; see deid.report.testing): the HTML
parses, is self-contained, has the tables and plots for what the run holds, never
shows an unanonymized face, degrades gracefully, and the JSON summary agrees."""

import base64
import dataclasses
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from deid.cli import main as deid_main
from deid.errors import InvalidInputError
from deid.metrics import schemas
from deid.report import build_report, summary_path
from deid.report.build import ReportOptions
from deid.report.testing import make_metrics_dir
from deid.testing import ColorFaceDetector, face_color_mask

VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}


class _Doc(HTMLParser):
    """Collects tags, attributes and text, and checks that non-void tags nest properly."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(path):
    d = _Doc()
    d.feed(path.read_text(encoding="utf-8"))
    d.close()
    assert not d.errors and not d.stack, (d.errors[:5], d.stack)
    d.body = " ".join(d.text)
    return d


def images(doc):
    """(alt, mime, bytes) of every <img>."""
    out = []
    for tag, a in doc.tags:
        if tag == "img":
            m = re.match(r"data:(image/[a-z]+);base64,(.*)$", a["src"], re.S)
            assert m, a["src"][:60]
            out.append((a.get("alt", ""), m.group(1), base64.b64decode(m.group(2))))
    return out


def decode(data):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """Two videos; blur, mask, pixelate, a fake swap, and a 'leaky' output that left the
    faces in clear (and whose frames table claims no region)."""
    root = tmp_path_factory.mktemp("report_full")
    md = make_metrics_dir(root, videos=("patient_a", "patient_b"), swap=True, leaky=True, n_frames=40)
    html = build_report(md, root / "out" / "report.html", detector=ColorFaceDetector())
    return md, html


def test_html_parses_and_is_self_contained(full_run):
    md, html = full_run
    doc = parse(html)
    text = html.read_text(encoding="utf-8")
    assert [t for t, _ in doc.tags[:3]] == ["html", "head", "meta"]
    csp = [a["content"] for t, a in doc.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "img-src data:" in csp[0]
    for tag, a in doc.tags:
        for attr in ("src", "href", "action", "poster", "data"):
            if attr in a:
                assert a[attr].startswith(("data:", "#")), f"<{tag} {attr}={a[attr][:80]!r}> leaves the page"
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), "an absolute URL is in the page"
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text
    assert str(md.parent / "anon") not in text  # no local paths of processed / original videos in the page


def test_tables_have_a_row_for_each_method_and_the_expected_plots(full_run):
    md, html = full_run
    doc = parse(html)
    summary = schemas.read_table(md / "summary.parquet", "summary").to_pandas()
    rows = re.findall(r"<tr class=\"[^\"]*\"><td class=\"\">([a-z_]+)</td>", html.read_text(encoding="utf-8"))
    for m in summary["method"].unique():
        assert rows.count(m) >= 2, f"method {m}: rows in pose + identity tables, got {rows.count(m)}"
    alts = [a for a, mime, _ in images(doc) if mime == "image/png"]
    assert any(a.startswith("bar chart: AP by region") for a in alts)
    assert any(a.startswith("per-keypoint error") for a in alts)
    assert any(a.startswith("identity distance histograms") for a in alts)
    assert sum(a.startswith("per-frame OKS of") for a in alts) == 2  # one per video
    for alt, mime, data in images(doc):
        img = decode(data)
        assert img.shape[0] > 10 and img.shape[1] > 10, alt
    # paper-style numbers: the table shows the mean over videos of the summary's AP
    blur = summary[summary["method"] == "blur"]["ap_overall"].mean()
    assert f"{blur:.3f}" in html.read_text(encoding="utf-8")


def test_no_thumbnail_shows_a_face_the_pipeline_did_not_anonymize(full_run):
    md, html = full_run
    doc = parse(html)
    thumbs = [(alt, decode(data)) for alt, mime, data in images(doc) if mime == "image/jpeg"]
    assert thumbs, "no frame strips"
    det = ColorFaceDetector()
    leaky = [(alt, im) for alt, im in thumbs if alt.startswith("leaky ")]
    assert len(leaky) >= 4
    for alt, im in leaky:  # the output that left faces in clear: every face was redacted by the report
        assert len(det.detect([im])[0]) == 0, alt
        assert face_color_mask(im).sum() < 5, alt
    # control: the same frames, downscaled without the report's check, do show the face
    from deid.io import read_frames

    run = json.loads((md / "run.json").read_text())
    raw = read_frames(run["videos"][0]["processed"]["leaky"], [10])[0]
    assert len(det.detect([raw])[0]) == 1
    s = json.loads(summary_path(html).read_text())
    assert s["frame_strips"]["faces_redacted"] >= len(leaky)
    assert "redacted by the report" in html.read_text(encoding="utf-8")
    # original frames never appear: every thumbnail's caption names a processed method
    methods = set(run["videos"][0]["processed"])
    assert all(alt.split()[0] in methods for alt, _ in thumbs)


def test_json_summary_has_the_headline_figures(full_run):
    md, html = full_run
    s = json.loads(summary_path(html).read_text())
    summary = schemas.read_table(md / "summary.parquet", "summary").to_pandas()
    assert s["videos"] == 2 and s["layout"] == "study"
    assert set(s["pose"]) == set(summary["method"])
    for m, d in summary.groupby("method"):
        assert s["pose"][m]["ap_overall"] == pytest.approx(d["ap_overall"].mean())
        assert s["identity"][m]["frames_match_patient"] == d["frames_match_patient"].sum()
    assert s["verdict"]["level"] == "bad"  # the leaky output still matches the patient
    assert s["verdict"]["frames_match_patient"] == summary.query("method == 'leaky'")["frames_match_patient"].sum() > 0
    assert s["identity"]["swap"]["mean_dist_target"] < 0.6  # the fake swap shows the donor


def test_cli_writes_both_files_and_can_fail_on_leaks(full_run, tmp_path, capsys):
    md, _ = full_run
    out = tmp_path / "r.html"
    assert deid_main(["report", str(md), "--out", str(out), "--no-strips"]) == 0
    assert out.is_file() and summary_path(out).is_file() and summary_path(out).name == "r_summary.json"
    assert "BAD" in capsys.readouterr().out
    assert deid_main(["report", str(md), "--out", str(out), "--no-strips", "--fail-on-leak"]) == 3
    assert "Frame strips were turned off" in out.read_text(encoding="utf-8")


def test_runs_without_swap_reference_or_tables_still_render(tmp_path):
    md = make_metrics_dir(tmp_path, methods=("blur",), reference=False, n_frames=24,
                          drop=("perframe", "keypoints", "per_keypoint", "clinical", "status"))
    out = build_report(md, tmp_path / "report.html", detector=ColorFaceDetector())
    doc = parse(out)
    missing = json.loads(summary_path(out).read_text())["missing"]
    joined = " ".join(missing)
    for needle in ("no swap output", "no reference of the patient", "no perframe/ table", "no keypoints/ table",
                   "per_keypoint.parquet is missing", "status.parquet is missing"):
        assert needle in joined, needle
    assert "Not in this report" in doc.body
    assert any(mime == "image/jpeg" for _, mime, _ in images(doc))  # strips without skeletons still show
    # the pose table still has the blur row
    assert re.search(r"<td class=\"\">blur</td>", out.read_text(encoding="utf-8"))


def test_missing_run_json_or_summary(tmp_path):
    md = make_metrics_dir(tmp_path, methods=("mask",), n_frames=16, drop=("run",))
    out = build_report(md, tmp_path / "r.html", detector=ColorFaceDetector())
    assert "run.json is missing" in " ".join(json.loads(summary_path(out).read_text())["missing"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match="not a METRICS_DIR"):
        build_report(empty, tmp_path / "x.html")
    with pytest.raises(InvalidInputError, match="no such metrics directory"):
        build_report(tmp_path / "nope", tmp_path / "x.html")
    with pytest.raises(InvalidInputError, match="JSON summary is written beside it"):
        build_report(md, tmp_path / "x.json")


def test_archive_layout_lists_worst_videos_and_caps_strips(full_run, tmp_path):
    md, _ = full_run
    opts = ReportOptions(per_video_limit=1, max_strip_videos=1)
    out = build_report(md, tmp_path / "archive.html", options=opts, detector=ColorFaceDetector())
    doc = parse(out)
    s = json.loads(summary_path(out).read_text())
    assert s["layout"] == "archive" and s["frame_strips"]["videos"] == 1
    for title in ("Most leaks", "Most fail-closed frames", "Lowest AP", "Across videos"):
        assert title in doc.body, title
    assert any(a.startswith("distributions across videos") for a, _, _ in images(doc))
    assert s["worst_videos"]["leaks"][0]["video"] in ("patient_a", "patient_b")


class _Broken:
    name = "broken"

    def detect(self, frames):
        raise RuntimeError("no model")


def test_face_check_failure_embeds_no_thumbnail(full_run, tmp_path):
    md, _ = full_run
    out = build_report(md, tmp_path / "r.html", options=dataclasses.replace(ReportOptions(), max_strip_videos=1),
                       detector=_Broken())
    doc = parse(out)
    assert not [1 for _, mime, _ in images(doc) if mime == "image/jpeg"]
    assert "face check failed" in doc.body
    assert json.loads(summary_path(out).read_text())["frame_strips"]["thumbnails"] == 0


def test_report_size_stays_small(full_run):
    _, html = full_run
    size = html.stat().st_size
    s = json.loads(summary_path(html).read_text())
    # 2 videos x 6 frames x 5 methods thumbnails + 6 plots: well under a megabyte
    assert s["frame_strips"]["thumbnails"] == 60
    assert size < 1_000_000, size


def test_max_frames_is_stated_in_the_page_and_the_summary(full_run, tmp_path):
    md, _ = full_run
    import shutil

    m = shutil.copytree(md, tmp_path / "metrics")
    run = json.loads((m / "run.json").read_text())
    # one video evaluated on its first 20 frames (evaluate.max_frames), the others whole: said per video
    first = run["videos"][0]
    first["frames_evaluated"] = 20
    (m / "run.json").write_text(json.dumps(run))
    out = build_report(m, tmp_path / "r.html", options=ReportOptions(strips=False))
    doc = parse(out)
    note = f"1 of {len(run['videos'])} video(s) were evaluated on their first 20 frames only"
    assert note in doc.body and "Not in this report" in doc.body
    s = json.loads(summary_path(out).read_text())
    assert s["run"]["partly_evaluated"] == [{"video": first["video"], "frames_evaluated": 20, "frame_count": first["frame_count"]}]
    assert any(note in x for x in s["missing"])
    base = json.loads(summary_path(full_run[1]).read_text())
    assert base["run"]["partly_evaluated"] == [] and not any("max_frames" in x for x in base["missing"])


def test_archive_without_measurable_ap_says_why_it_has_no_strips(tmp_path):
    """No AP, no leak, no fail-closed frame: no video is 'worst', so the archive layout
    draws no strip; the report must say that (the videos are readable), and the JSON
    summary still has every worst_videos list."""
    import pandas as pd

    from deid.report.testing import write_rows

    md = make_metrics_dir(tmp_path, videos=("a", "b"), methods=("blur",), n_frames=12, drop=("perframe", "per_keypoint"))
    s = schemas.read_table(md / "summary.parquet", "summary").to_pandas()
    for c in [c for c in s.columns if c.startswith(("ap_", "ap50", "ap75"))]:
        s[c] = np.nan
    for c in ("frames_match_patient", "frames_match_original", "frames_match_same_place"):
        s[c] = 0
    write_rows(s.astype(object).where(pd.notna(s), None).to_dict("records"), md / "summary.parquet", "summary")
    out = build_report(md, tmp_path / "r.html", options=ReportOptions(per_video_limit=1), detector=ColorFaceDetector())
    js = json.loads(summary_path(out).read_text())
    assert js["layout"] == "archive" and js["frame_strips"]["videos"] == 0
    joined = " ".join(js["missing"])
    assert "no video has a measurable AP, a leak or a fail-closed frame" in joined
    assert "could be read" not in joined
    assert set(js["worst_videos"]) == {"leaks", "fail_closed", "lowest_ap"} and js["worst_videos"]["lowest_ap"] == []


def test_refused_outputs_mixed_pose_models_and_unknown_counts_are_said(tmp_path):
    """An output the evaluation refused (run.json videos[].errors) has no summary row: it
    must reach the status table, the verdict and "Not in this report", not vanish. Videos
    scored by different pose models are named per row, not credited to one model. A
    count no record gives is unknown (null), not 0."""
    import pandas as pd

    from deid.report.testing import write_rows

    md = make_metrics_dir(tmp_path, videos=("a", "b"), methods=("blur", "mask"), n_frames=12, drop=("perframe",))
    run = json.loads((md / "run.json").read_text())
    run["videos"][1]["errors"] = {"mask": "mask output: frame 2 dropped"}
    (md / "run.json").write_text(json.dumps(run))
    s = schemas.read_table(md / "summary.parquet", "summary").to_pandas()
    s = s[~((s["video"] == "b") & (s["method"] == "mask"))].copy()  # the refused output has no summary row
    s["pose_backend"] = np.where(s["video"] == "a", "mediapipe_holistic", "rtmpose")
    write_rows(s.astype(object).where(pd.notna(s), None).to_dict("records"), md / "summary.parquet", "summary")
    st = schemas.read_table(md / "status.parquet", "status").to_pandas()
    st["fail_closed_frames"] = None
    write_rows(st.astype(object).where(pd.notna(st), None).to_dict("records"), md / "status.parquet", "status")
    for a in tmp_path.rglob("*.audit.json"):  # no record says either
        rec = json.loads(a.read_text())
        rec.get("counts", {}).pop("frames_fail_closed", None)
        a.write_text(json.dumps(rec))
    out = build_report(md, tmp_path / "r.html", detector=ColorFaceDetector())
    js = json.loads(summary_path(out).read_text())
    assert js["verdict"]["errors"] == 1 and js["verdict"]["level"] in ("warn", "bad")
    assert js["status"]["mask"]["errors"] == 1
    assert any("could not be compared with their original" in m and "frame 2 dropped" in m for m in js["missing"])
    body = parse(out).body
    assert "not evaluated: mask output: frame 2 dropped" in body
    assert "rtmpose: 1 video" in body and "mediapipe_holistic: 1 video" in body and "different pose models" in body
    assert js["fail_closed_frames"] is None and js["status"]["blur"]["fail_closed_frames"] is None


@pytest.mark.parametrize("where", ["summary.parquet", "identity", "perframe"])
def test_a_damaged_table_is_one_clear_error_not_a_traceback(tmp_path, capsys, where):
    """A truncated or overwritten Parquet file (a copy cut short, a disk error) used to
    end `deid report` in pyarrow's ArrowInvalid traceback; a partition of another type
    likewise. It is one line naming the table, and no report is written: one that left
    a damaged identity partition out could say "no leak" about frames it never read."""
    md = make_metrics_dir(tmp_path, methods=("blur",), n_frames=12)
    target = md / where if where.endswith(".parquet") else sorted((md / where).rglob("*.parquet"))[-1]
    target.write_bytes(b"not parquet at all")
    out = tmp_path / "r.html"
    assert deid_main(["report", str(md), "--out", str(out), "--no-strips"]) == 1
    err = capsys.readouterr().err
    assert f"cannot read the {where.removesuffix('.parquet')} table" in err and "Traceback" not in err
    assert not out.exists() and not summary_path(out).exists()


def test_a_partition_of_another_type_is_one_clear_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    md = make_metrics_dir(tmp_path, videos=("a", "b"), methods=("blur",), n_frames=12)
    f = sorted((md / "identity").rglob("*.parquet"))[-1]
    t = pq.read_table(f)
    i = t.schema.get_field_index("dist_patient")
    pq.write_table(t.set_column(i, "dist_patient", pa.array([[1.0]] * t.num_rows)), f)
    with pytest.raises(InvalidInputError, match="cannot read the identity table"):
        build_report(md, tmp_path / "r.html", options=ReportOptions(strips=False))


def test_outputs_written_without_the_leak_audit_are_not_ok(tmp_path):
    """audit.leak_check=false: the audit records say {"skipped": true} and the status
    table's leaks is null. The report used to read that as no audit leak and say OK
    (`deid verify` reports it as an error); it warns, names the outputs and says so under "Not in this report"."""
    import pandas as pd

    from deid.report.testing import write_rows

    md = make_metrics_dir(tmp_path, methods=("blur", "mask"), n_frames=12, drop=("perframe",))
    opts = ReportOptions(strips=False)
    before = json.loads(summary_path(build_report(md, tmp_path / "a.html", options=opts)).read_text())["verdict"]
    assert before["level"] == "ok" and before["audit_skipped"] == 0
    for a in tmp_path.rglob("*.blur.audit.json"):
        rec = json.loads(a.read_text())
        rec["leak_audit"] = {"skipped": True}
        a.write_text(json.dumps(rec))
    st = schemas.read_table(md / "status.parquet", "status").to_pandas()
    st.loc[st["method"] == "blur", "leaks"] = None
    write_rows(st.astype(object).where(pd.notna(st), None).to_dict("records"), md / "status.parquet", "status")
    js = json.loads(summary_path(build_report(md, tmp_path / "r.html", options=opts)).read_text())
    v = js["verdict"]
    assert v["level"] == "warn" and v["audit_skipped"] == 1 and v["audit_leaks"] == 0
    assert "leak audit did not run on 1 output(s)" in v["text"] and "patient_a / blur" in v["text"]
    assert any(m.startswith("Leak audit: 1 output(s) were written without") for m in js["missing"])


def test_an_output_whose_leak_audit_result_is_unknown_is_not_ok(tmp_path):
    """A skipped audit leaves the status table's leaks null, and only the audit record says
    it was skipped: with the record out of reach (a report built away from the outputs,
    a record removed) that null was read as 0 leaks and the verdict said OK."""
    import pandas as pd

    from deid.report.testing import write_rows

    md = make_metrics_dir(tmp_path, methods=("blur", "mask"), n_frames=12, drop=("perframe",))
    st = schemas.read_table(md / "status.parquet", "status").to_pandas()
    st.loc[st["method"] == "blur", "leaks"] = None
    write_rows(st.astype(object).where(pd.notna(st), None).to_dict("records"), md / "status.parquet", "status")
    for a in tmp_path.rglob("*.blur.audit.json"):
        a.unlink()
    v = json.loads(summary_path(build_report(md, tmp_path / "r.html", options=ReportOptions(strips=False))).read_text())["verdict"]
    assert v["level"] == "warn" and v["audit_unknown"] == 1 and v["audit_skipped"] == 0
    assert "result of 1 output(s) is unknown" in v["text"] and "patient_a / blur" in v["text"]
