"""``deid evaluate`` end to end on synthetic clips with fake (real-algorithm) backends:
the original against itself, a video whose face is gone, the CLI on pipeline outputs,
the METRICS_DIR tables in pandas and DuckDB, and aggregate() over several videos."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from deid.config import Config
from deid.errors import InvalidInputError
from deid.evaluate import aggregate, evaluate_outputs
from deid.evaluate.extract import VideoFaces, VideoKeypoints, extract
from deid.evaluate.models import EvalModels
from deid.io import VideoWriter
from deid.pipeline import process_video
from deid.registry import POSE_ESTIMATORS
from deid.testing import (FACE_RGB, SHIRT_RGB, ColorFaceDetector, PatchIdentityEncoder, draw_frame, face_color_mask,
                          fake_components)
from deid.types import Keypoints

K = 133


class FacePoseEstimator:
    """A pose estimator for the synthetic clips: shoulders and hips from the shirt
    colour, nose/eyes/ears and 68 face points from the face colour. A face that is
    masked or blurred away loses its head and face points; the body stays."""

    name = "face_color_pose"

    def __init__(self, **_: object):
        self.calls = 0

    def reset(self) -> None:
        pass

    def estimate(self, frames):
        out = []
        for f in frames:
            self.calls += 1
            ys, xs = np.nonzero(face_color_mask(f, SHIRT_RGB, tol=60))
            if len(xs) < 30:
                out.append(Keypoints.empty(K))
                continue
            kp = np.zeros((1, K, 3), np.float32)
            x1, x2 = np.percentile(xs, [5, 95])
            y1, ym, y2 = np.percentile(ys, [20, 50, 95])
            w = x2 - x1
            # ten COCO body points placed on the torso box (shoulders, elbows, wrists, hips, knees)
            for k, (fx, y) in {5: (1.0, y1), 6: (0.0, y1), 7: (0.95, ym), 8: (0.05, ym), 9: (0.9, y2),
                               10: (0.1, y2), 11: (0.75, ym), 12: (0.25, ym), 13: (0.7, y2), 14: (0.3, y2)}.items():
                kp[0, k] = (x1 + fx * w, y, 0.9)
            fy, fx = np.nonzero(face_color_mask(f, FACE_RGB, tol=60))
            if len(fx) >= 20:
                cx, cy, w, h = fx.mean(), fy.mean(), np.ptp(fx) + 1, np.ptp(fy) + 1
                kp[0, 0] = (cx, cy, 0.9)
                kp[0, 1], kp[0, 2] = (cx + 0.2 * w, cy - 0.1 * h, 0.9), (cx - 0.2 * w, cy - 0.1 * h, 0.9)
                kp[0, 3], kp[0, 4] = (cx + 0.5 * w, cy, 0.9), (cx - 0.5 * w, cy, 0.9)
                a = np.linspace(0, 2 * np.pi, 68, endpoint=False)
                kp[0, 23:91] = np.stack([cx + 0.4 * w * np.cos(a), cy + 0.4 * h * np.sin(a), np.full(68, 0.9)], 1)
            out.append(Keypoints(kp))
        return out


POSE_ESTIMATORS.register("face_color_pose", FacePoseEstimator)

FAKES = ["evaluate.pose.backend=face_color_pose", "evaluate.identity.backend=patch", "evaluate.face_detector=color",
         "evaluate.locate_faces=none", "evaluate.default_distractors=false"]
CFG = Config().replace(*FAKES, "evaluate.identity_every=1", "detect.backend=color", "audit.sample_frames=6", "io.chunk_size=8",
                       "track.lookahead=24", "track.pose_fallback=false",
                       "audit.min_face_px=0")  # the synthetic faces are small; the fake encoder has no small-face noise
N = 24


def write_clip(path, n=N, face=True, stripes=False):
    """A synthetic clip like deid.testing's; ``face=False`` draws the person without a
    face (a perfectly masked face); ``stripes`` gives the face another look (another
    identity for the patch encoder)."""
    with VideoWriter(path, 160, 120, 25.0, crf=12, preset="ultrafast", timing="cfr") as w:
        for i in range(n):
            img, box = draw_frame(i, n, 160, 120, draw_face=face)
            if stripes and box is not None:
                x1, y1, x2, y2 = box.astype(int)
                for y in range(y1 + 4, y2 - 4, 6):  # a grid of dark dots (the face stays one blob)
                    for x in range(x1 + 4, x2 - 4, 6):
                        img[y : y + 3, x : x + 3] = (120, 0, 90)
            w.write(img)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalclips")
    orig = write_clip(d / "patient.mp4")
    copy = d / "patient.copy.mp4"
    shutil.copy(orig, copy)
    return {"dir": d, "original": orig, "copy": copy, "noface": write_clip(d / "patient.noface.mp4", face=False),
            "other": write_clip(d / "stranger.mp4", stripes=True)}


def rows_by_method(res):
    return {r["method"]: r for r in res["summary"]}


def test_original_against_itself_scores_ap_one_and_is_recognised(clips, tmp_path):
    res = evaluate_outputs(clips["original"], {"copy": clips["copy"]}, tmp_path / "m", CFG,
                           distractors=[f"stranger={clips['other']}"], progress=False)
    rows = rows_by_method(res)
    assert set(rows) == {"original", "copy"} and not res["errors"]
    for m in ("original", "copy"):
        r = rows[m]
        for g in ("overall", "body", "head", "face"):
            assert r[f"ap_{g}"] == pytest.approx(1.0), (m, g)
        assert math.isnan(r["ap_hands"]) and math.isnan(r["ap_feet"])  # no ground truth there
        assert r["frames"] == N and r["identity_frames"] == N
        assert r["frames_match_patient"] == N and r["frames_match_same_place"] == N  # the face is untouched
        assert r["attack_rank1"] == 1.0 and r["attack_chance_rank1"] < 1.0
    assert res["references"]["distractors"] == ["stranger"] and res["references"]["patient_source"] == "original_video"


def test_a_video_without_its_face_loses_head_and_face_ap_not_body(clips, tmp_path):
    res = evaluate_outputs(clips["original"], {"mask": clips["noface"]}, tmp_path / "m", CFG, distractors=[],
                           progress=False)
    r = rows_by_method(res)["mask"]
    # COCO-17 "body" includes the 5 head points, so losing them costs the body group too
    # (best OKS 10/15), but far less than the head and face groups, which lose everything
    assert r["ap_body"] > 0.2 and r["ap_hands"] != r["ap_hands"]  # NaN: no hands anywhere
    assert r["ap_head"] < r["ap_body"] and r["ap_face"] < r["ap_body"]
    assert r["ap_head"] == 0.0 and r["ap_face"] == 0.0
    assert r["frames_no_face"] == N and r["frames_match_patient"] == 0 and r["frames_match_same_place"] == 0
    pf = pd.read_parquet(tmp_path / "m" / "perframe", filters=[("method", "=", "mask")])
    assert len(pf) == N and (pf["faces_found"] == 0).all() and (pf["persons"] == 1).all()
    pk = pd.read_parquet(tmp_path / "m" / "per_keypoint.parquet")
    mask_pk = pk[pk["method"] == "mask"].set_index("keypoint")
    assert mask_pk.loc[0, "missing_rate"] == 1.0 and mask_pk.loc[5, "missing_rate"] == 0.0


def test_cli_end_to_end_on_pipeline_outputs(clips, tmp_path, capsys):
    duckdb = pytest.importorskip("duckdb")
    from deid.cli import main

    out = tmp_path / "out"
    r = process_video(clips["original"], out, ["mask", "blur"], CFG, components=fake_components(CFG, ["mask", "blur"]))
    assert r.status == "done", r.error
    mdir = tmp_path / "metrics"
    args = ["evaluate", "--original", str(clips["original"]), "--processed", str(out / "patient.mask.mp4"),
            str(out / "patient.blur.mp4"), "--distractors", f"stranger={clips['other']}", "--out", str(mdir),
            "--no-progress", "--set", "io.chunk_size=8", "--set", "evaluate.identity_every=2"]
    for s in FAKES:
        args += ["--set", s]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "face_color_pose" in text and "patch" in text and "attacker's detector: color" in text
    for m in ("original", "mask", "blur"):
        assert any(line.startswith(m) for line in text.splitlines()), m
    # the METRICS_DIR contract
    for name in ("run.json", "summary.parquet", "status.parquet", "per_keypoint.parquet", "clinical.parquet",
                 "keypoints", "identity", "perframe"):
        assert (mdir / name).exists(), name
    run = json.loads((mdir / "run.json").read_text())
    assert run["pose_backend"]["name"] == "face_color_pose" and run["identity_backend"]["name"] == "patch"
    assert run["identity_backend"]["threshold"] == 0.6 and run["config"]["evaluate"]["identity_every"] == 2
    (v,) = run["videos"]
    assert v["video"] == "patient" and set(v["processed"]) == {"mask", "blur"} and v["frame_count"] == N
    assert v["audit"]["mask"].endswith("patient.mask.audit.json")
    summary = pd.read_parquet(mdir / "summary.parquet")
    assert sorted(summary["method"]) == ["blur", "mask", "original"]
    assert (summary["identity_frames"] == N // 2).all()
    masked = summary.set_index("method").loc["mask"]
    assert masked["frames_match_patient"] == 0 and masked["ap_head"] < masked["ap_body"]
    status = pd.read_parquet(mdir / "status.parquet")
    assert sorted(status["method"]) == ["blur", "mask"] and (status["state"] == "done").all()
    assert (status["input_sha256"].str.len() == 64).all()
    # partitioned tables as pandas and DuckDB read them
    kp = pd.read_parquet(mdir / "keypoints")
    assert set(kp["method"].astype(str)) == {"original", "mask", "blur"} and len(kp) == 3 * N * K
    q = (f"select method, count(*) n, avg(oks_body) b from read_parquet('{mdir}/perframe/**/*.parquet', "
         "hive_partitioning = true) group by method order by method")
    got = {m: (n, b) for m, n, b in duckdb.sql(q).fetchall()}
    assert got["original"] == (N, pytest.approx(1.0)) and got["mask"][0] == N
    ident = duckdb.sql(f"select count(distinct frame) from read_parquet('{mdir}/identity/**/*.parquet', "
                       "hive_partitioning = true) where method = 'blur'").fetchall()[0][0]
    assert ident == N // 2
    clin = pd.read_parquet(mdir / "clinical.parquet")
    assert set(clin.columns) >= {"feature", "value", "original_value", "relative_error"} and len(clin) == 3 * 14


def test_several_videos_into_one_dir_and_aggregate_rebuilds(clips, tmp_path):
    m = tmp_path / "m"
    d = clips["dir"]
    other = write_clip(tmp_path / "second.mp4", stripes=True)
    other_nf = write_clip(tmp_path / "second.noface.mp4", face=False)
    evaluate_outputs(clips["original"], {"mask": clips["noface"], "copy": clips["copy"]}, m, CFG, distractors=[],
                     progress=False)
    evaluate_outputs(other, {"mask": other_nf}, m, CFG, distractors=[], progress=False)
    before = pd.read_parquet(m / "summary.parquet").sort_values(["video", "method"]).reset_index(drop=True)
    assert sorted(zip(before["video"], before["method"])) == [
        ("patient", "copy"), ("patient", "mask"), ("patient", "original"), ("second", "mask"), ("second", "original")]
    run_before = json.loads((m / "run.json").read_text())
    for name in ("summary.parquet", "run.json", "per_keypoint.parquet", "clinical.parquet", "status.parquet"):
        (m / name).unlink(missing_ok=True)
    run = aggregate(m)
    after = pd.read_parquet(m / "summary.parquet").sort_values(["video", "method"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert [v["video"] for v in run["videos"]] == [v["video"] for v in run_before["videos"]] == ["patient", "second"]
    assert len(pd.read_parquet(m / "per_keypoint.parquet")) == 5 * K
    # re-evaluating one video with fewer outputs replaces its rows, others stay
    evaluate_outputs(clips["original"], {"mask": clips["noface"]}, m, CFG, distractors=[], progress=False)
    s = pd.read_parquet(m / "summary.parquet")
    assert sorted(zip(s["video"], s["method"])) == [
        ("patient", "mask"), ("patient", "original"), ("second", "mask"), ("second", "original")]
    assert d.exists()


def test_frame_ranges_stitch_to_the_whole_video(clips):
    mdl = EvalModels.build(CFG)
    kw = dict(estimator=mdl.estimator, encoder=mdl.encoder, detector=mdl.detector, every=3, chunk_size=5)
    kp, fa = extract(str(clips["original"]), null_control=True, **kw)
    parts = [extract(str(clips["original"]), start=a, stop=b, null_control=True, **kw) for a, b in ((0, 10), (10, N))]
    kp2 = VideoKeypoints.concat([p[0] for p in parts])
    fa2 = VideoFaces.concat([p[1] for p in parts])
    assert len(kp2) == len(kp) == N
    for a, b in zip(kp.keypoints, kp2.keypoints):
        np.testing.assert_allclose(a, b, atol=1e-3)
    np.testing.assert_array_equal(fa.frames, fa2.frames)
    np.testing.assert_array_equal(fa.frames, np.arange(0, N, 3))
    for a, b in zip(fa.ref_emb + fa.null_emb, fa2.ref_emb + fa2.null_emb):
        np.testing.assert_allclose(a, b, atol=1e-3)
    # a processed range embeds at the original's boxes of the same frames
    _, pf = extract(str(clips["noface"]), at=fa2, start=10, stop=N, **kw)
    assert list(pf.frames) == [12, 15, 18, 21] and all(len(b) == 0 for b in pf.found_boxes)
    assert [len(b) for b in pf.ref_boxes] == [len(fa2.ref_boxes[fa2.index()[f]]) for f in pf.frames]


def test_inputs_that_cannot_be_compared_are_refused(clips, tmp_path):
    short = write_clip(tmp_path / "patient.short.mp4", n=N - 4)
    with pytest.raises(InvalidInputError, match="keep every frame"):
        evaluate_outputs(clips["original"], {"short": short}, tmp_path / "m", CFG, distractors=[], progress=False)
    with VideoWriter(tmp_path / "patient.big.mp4", 320, 240, 25.0, timing="cfr") as w:
        for _ in range(N):
            w.write(np.zeros((240, 320, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="frame size"):
        evaluate_outputs(clips["original"], {"big": tmp_path / "patient.big.mp4"}, tmp_path / "m", CFG, progress=False)
    with pytest.raises(InvalidInputError, match="not allowed"):
        evaluate_outputs(clips["original"], {"original": clips["copy"]}, tmp_path / "m", CFG, progress=False)
    with pytest.raises(InvalidInputError, match="no such file"):
        evaluate_outputs(tmp_path / "missing.mp4", {"copy": clips["copy"]}, tmp_path / "m", CFG, progress=False)
    assert not (tmp_path / "m").exists(), "a refused evaluation leaves no (empty) metrics folder"
    # one output that cannot be compared does not stop the others
    res = evaluate_outputs(clips["original"], {"copy": clips["copy"], "big": tmp_path / "patient.big.mp4", "short": short},
                           tmp_path / "m3", CFG, distractors=[], progress=False)
    assert set(rows_by_method(res)) == {"original", "copy"}
    assert "frame size" in res["errors"]["big"] and "keep every frame" in res["errors"]["short"]
    # max_frames evaluates the first frames only
    res = evaluate_outputs(clips["original"], {"copy": clips["copy"]}, tmp_path / "m2",
                           CFG.replace("evaluate.max_frames=10"), distractors=[], progress=False)
    assert rows_by_method(res)["copy"]["frames"] == 10 and rows_by_method(res)["copy"]["identity_frames"] == 10


def test_importing_the_command_is_light():
    code = "import sys, deid.evaluate; assert 'numpy' not in sys.modules and 'pyarrow' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_fakes_behave_like_the_real_thing_here(clips):
    """The test doubles must separate what the tests rely on: the stranger's face is
    another identity for the patch encoder, and the colour detector finds faces."""
    from deid.io import read_frames

    a, b = read_frames(clips["original"], [5]), read_frames(clips["other"], [5])
    det, enc = ColorFaceDetector(), PatchIdentityEncoder()
    ba, bb = det.detect(a)[0].boxes, det.detect(b)[0].boxes
    assert len(ba) == 1 and len(bb) == 1
    d = enc.distance(enc.embed(a, [ba])[0], enc.embed(b, [bb])[0])[0, 0]
    assert d > enc.threshold


def test_a_failed_re_evaluation_leaves_none_of_the_old_rows(clips, tmp_path, monkeypatch):
    """Re-evaluating a (video, method) replaces every one of its partitions; when the
    new evaluation of an output fails, no number from the earlier one stands in for it."""
    from deid.errors import DeidError
    from deid.evaluate.store import clear_method_scores

    m = tmp_path / "m"
    evaluate_outputs(clips["original"], {"mask": clips["noface"]}, m, CFG, distractors=[], progress=False)
    parts = lambda: sorted(str(p.relative_to(m)) for p in m.rglob("method=mask"))  # noqa: E731
    assert any(p.startswith("keypoints/") for p in parts()) and any(p.startswith("parts/summary/") for p in parts())
    import deid.evaluate.score as score_mod

    def failing(video, method, *a, **k):
        if method == "mask":
            raise DeidError("pose estimator crashed")
        return orig_score(video, method, *a, **k)

    orig_score = score_mod.score_method
    monkeypatch.setattr(score_mod, "score_method", failing)
    res = evaluate_outputs(clips["original"], {"mask": clips["noface"]}, m, CFG, distractors=[], progress=False)
    assert "mask" in res["errors"]
    assert parts() == []
    s = pd.read_parquet(m / "summary.parquet")
    assert "mask" not in set(s["method"])
    assert clear_method_scores(m, "patient", "original") >= 3 and not list(m.rglob("method=original"))


def test_the_ray_identity_stage_also_clears_a_failed_re_evaluation(clips, tmp_path, monkeypatch):
    """The archive job's identity stage (ray_jobs/evaluate.py, called here without Ray)
    follows the same rule as evaluate_outputs: a (video, method) whose re-evaluation
    fails keeps none of its earlier rows. Video ids with '/' (sub-folders) included."""
    import pickle

    import deid.evaluate.score as score_mod
    import ray_jobs.evaluate as rj
    from deid.errors import DeidError
    from deid.evaluate.extract import extract_keypoints
    from deid.evaluate.store import clear_method_scores

    m = tmp_path / "m"
    vid = "ward/patient"
    evaluate_outputs(clips["original"], {"mask": clips["noface"]}, m, CFG, distractors=[], progress=False, video_id=vid)
    assert list(m.rglob("method=mask")) and list(m.rglob("video=ward%2Fpatient"))
    mdl = EvalModels.cached(CFG)
    n = 24
    kps = {"original": extract_keypoints(clips["original"], mdl.estimator, stop=n),
           "mask": extract_keypoints(clips["noface"], mdl.estimator, stop=n)}
    kp = tmp_path / "kp.pkl"
    kp.write_bytes(pickle.dumps({"frames": n, "keypoints": kps, "pose": {"name": FacePoseEstimator.name}}))
    stage = object.__new__(rj.IdentityStage)
    stage.cfg, stage.models, stage.metrics_dir = CFG, mdl, str(m)
    orig = score_mod.score_method

    def failing(video, method, *a, **k):
        if method == "mask":
            raise DeidError("pose estimator crashed")
        return orig(video, method, *a, **k)

    monkeypatch.setattr(score_mod, "score_method", failing)
    stage.evaluate(vid, {"original": str(clips["original"]), "processed": {"mask": str(clips["noface"])}}, str(kp))
    aggregate(m)
    assert list(m.rglob("method=mask")) == []
    assert clear_method_scores(m, vid) >= 3 and list(m.rglob("method=original")) == []  # every method of the video


def test_an_archive_s_failures_reach_the_report_s_status_table_and_leave_it_when_fixed(tmp_path):
    from types import SimpleNamespace

    import pyarrow.parquet as pq

    from deid.evaluate import aggregate
    from deid.evaluate.store import write_failures
    from deid.metrics.schemas import status_rows

    res = SimpleNamespace(input="a.mp4", status="failed", error="a.mp4: no such file", error_kind="invalid_input",
                          frames_read=0, counts={}, timings={}, outputs=[])
    failed = [dict(r, output_path=None) for r in status_rows(res, video="ward__a", input_sha256="", config_hash="", deid_version="x")]
    m = tmp_path / "m"
    write_failures(m, "ward__a", failed)
    aggregate(m)
    st = pq.read_table(m / "status.parquet").to_pandas()
    assert list(zip(st.video, st.method, st.state)) == [("ward__a", "", "failed")]
    write_failures(m, "ward__a", [])  # fixed since (its outputs' rows come from their audit records)
    aggregate(m)
    assert pq.read_table(m / "status.parquet").num_rows == 0
    # one method failed (a swap whose training failed) beside one evaluated: the failure
    # stays, though the video's evaluation lists only the method that has an output
    from deid.evaluate.store import write_video_entry

    write_video_entry(m, {"video": "ward__a", "processed": {"blur": "x.blur.mp4"}})
    write_failures(m, "ward__a", [dict(failed[0], method="swap")])
    aggregate(m)
    st = pq.read_table(m / "status.parquet").to_pandas()
    assert list(zip(st.video, st.method, st.state)) == [("ward__a", "swap", "failed")]
    write_failures(m, "ward__a", [])  # swap no longer asked for, or done since
    aggregate(m)
    assert pq.read_table(m / "status.parquet").num_rows == 0


def test_the_ray_pose_stage_refuses_an_output_on_its_own(clips, tmp_path):
    """The archive's evaluation (ray_jobs.evaluate) refuses like evaluate_outputs: an
    output of another size or with a frame dropped alone, the others evaluated."""
    from ray_jobs.evaluate import _frames

    short = write_clip(tmp_path / "patient.short.mp4", n=N - 4)
    with VideoWriter(tmp_path / "patient.big.mp4", 320, 240, 25.0, timing="cfr") as w:
        for _ in range(N):
            w.write(np.zeros((240, 320, 3), np.uint8))
    n, refused = _frames(str(clips["original"]), {"copy": str(clips["copy"]), "big": str(tmp_path / "patient.big.mp4"),
                                                   "short": str(short)}, 0)
    assert n == N and sorted(refused) == ["big", "short"] and "keypoints are compared in pixels" in refused["big"]
    assert _frames(str(clips["original"]), {"copy": str(clips["copy"])}, 10) == (10, {})
    with pytest.raises(InvalidInputError, match="keep|frame by frame"):
        _frames(str(clips["original"]), {"short": str(short)}, 0)
