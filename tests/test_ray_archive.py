"""The archive job on a module-scoped local Ray cluster (2 CPUs): a broken video fails
alone, a rerun does nothing new, and worker deaths midway still give every output
exactly once. Synthetic clips and the fake (real-algorithm) backends of deid.testing,
selected by name so the Ray workers build them too."""

import csv

import pyarrow.parquet as pq
import pytest

from deid.io import probe

pytestmark = pytest.mark.ray

FAKE = [
    "detect.backend=color", "track.pose_fallback=false", "audit.identity_backend=patch", "audit.sample_frames=6",
    "io.chunk_size=8", "track.lookahead=24", "ray.segment_overlap=24", "ray.segment_frames=20",
    "ray.concurrency=2", "ray.progress_every_s=0",
    # evaluation with the fakes too: colour pose, patch identity, colour face detector
    "evaluate.pose.backend=color_pose", "evaluate.identity.backend=patch", "evaluate.face_detector=color",
    "evaluate.locate_faces=none", "evaluate.default_distractors=false",
]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from deid.testing import make_synthetic_video

    root = tmp_path_factory.mktemp("ray_archive")
    make_synthetic_video(root / "alpha.mp4", n_frames=45, hidden=[19, 20, 21])
    (root / "ward").mkdir()
    make_synthetic_video(root / "ward" / "beta.mp4", n_frames=30)
    (root / "gamma.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x13" * 300)  # broken
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "patient_id", "methods"])
        w.writerows([["alpha.mp4", "p1", "blur,mask"], ["ward/beta.mp4", "p2", "pixelate"], ["gamma.mp4", "p3", "blur"]])
    return root


def _main(manifest, out, *extra):
    from ray_jobs.deidentify import main

    argv = ["--manifest", str(manifest), "--out", str(out), "--no-progress", "--no-report"]
    for s in FAKE + list(extra):
        argv += ["--set", s]
    return main(argv)


def _outputs(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


EXPECTED = sorted([
    "alpha.blur.audit.json", "alpha.blur.frames.parquet", "alpha.blur.mp4", "alpha.mask.audit.json",
    "alpha.mask.frames.parquet", "alpha.mask.mp4", "status.parquet", "ward/beta.pixelate.audit.json",
    "ward/beta.pixelate.frames.parquet", "ward/beta.pixelate.mp4",
])


def _check_status(out):
    st = pq.read_table(out / "status.parquet").to_pandas()
    assert sorted(zip(st.video, st.method, st.state)) == [
        ("alpha", "blur", "done"), ("alpha", "mask", "done"), ("gamma", "", "failed"), ("ward__beta", "pixelate", "done")]
    gamma = st[st.video == "gamma"].iloc[0]
    assert "gamma.mp4" in gamma.error and gamma.error_kind == "invalid_input"
    ok = st[st.state == "done"]
    assert list(ok.frames_written) == [45, 45, 30]
    assert (ok.input_sha256.str.len() == 64).all()
    return st


def _metrics(out):
    return sorted(str(p.relative_to(out)) for p in (out / "metrics").rglob("*") if p.is_file())


def test_archive_two_done_one_failed_then_rerun_does_nothing(ray_cluster, archive, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("ray_out") / "out"
    assert _main(archive / "manifest.csv", out, "ray.evaluate=true") == 1, "exit code 1: one video failed"
    assert [f for f in _outputs(out) if not f.startswith("metrics/")] == EXPECTED
    _check_status(out)
    assert probe(out / "alpha.blur.mp4").frame_count == 45 and probe(out / "ward" / "beta.pixelate.mp4").frame_count == 30
    assert not (out.parent / ".out.deid-work").exists(), "segments are private and removed once published"
    captured = capsys.readouterr()
    assert "2 done, 1 failed" in captured.out and "FAILED gamma" in captured.err

    # evaluation on the actor pools: the same numbers as the in-process evaluation
    from deid.config import Config
    from deid.evaluate import evaluate_outputs

    summ = pq.read_table(out / "metrics" / "summary.parquet").to_pandas()
    assert sorted(zip(summ.video, summ.method)) == [("alpha", "blur"), ("alpha", "mask"), ("alpha", "original"),
                                                   ("ward__beta", "original"), ("ward__beta", "pixelate")]
    for kind in ("keypoints", "identity", "perframe"):
        assert (out / "metrics" / kind / "video=alpha" / "method=mask").is_dir()
    # the failed video, which has no audit record, is in the report's status table too
    mst = pq.read_table(out / "metrics" / "status.parquet").to_pandas()
    assert ("gamma", "", "failed") in set(zip(mst.video, mst.method, mst.state))
    cfg = Config().replace(*[s for s in FAKE if not s.startswith("ray.")])
    ref = evaluate_outputs(archive / "alpha.mp4", {m: out / f"alpha.{m}.mp4" for m in ("blur", "mask")},
                           out.parent / "ref_metrics", cfg, progress=False)
    cols = ["ap_overall", "ap_face", "oks_mean", "frames", "faces", "frames_leak", "mean_dist_original"]
    for row in ref["summary"]:
        got = summ[(summ.video == "alpha") & (summ.method == row["method"])].iloc[0]
        for c in cols:
            assert got[c] == pytest.approx(row[c], nan_ok=True), (row["method"], c)

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "status.parquet" and "metrics" not in p.parts}
    metrics = _metrics(out)
    assert _main(archive / "manifest.csv", out, "ray.evaluate=true") == 1
    assert "1 failed, 2 skipped" in capsys.readouterr().out
    assert [f for f in _outputs(out) if not f.startswith("metrics/")] == EXPECTED
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes, "a rerun rewrites no output"
    assert _metrics(out) == metrics
    _check_status(out)
    # other evaluation settings: the outputs stand, their evaluation is redone
    assert _main(archive / "manifest.csv", out, "ray.evaluate=true", "evaluate.max_frames=20") == 1
    captured = capsys.readouterr()
    assert "evaluating 2 video(s)" in captured.out + captured.err
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    summ = pq.read_table(out / "metrics" / "summary.parquet").to_pandas()
    assert set(summ.frames) == {20}


@pytest.mark.parametrize("stage", ["render", "finalize"])
def test_worker_killed_midway_still_gives_each_output_once(ray_cluster, archive, tmp_path, monkeypatch, stage):
    marker = tmp_path / f"killed-{stage}"
    monkeypatch.setenv("DEID_RAY_KILL_ONCE", f"{stage}:{marker}")
    out = tmp_path / "out"
    assert _main(archive / "manifest.csv", out, "ray.evaluate=false") == 1
    assert marker.is_file(), "a worker really was killed"
    assert _outputs(out) == EXPECTED, "no duplicate, partial or missing output"
    st = _check_status(out)
    assert len(st) == 4
    for name, n in (("alpha.blur.mp4", 45), ("alpha.mask.mp4", 45), ("ward/beta.pixelate.mp4", 30)):
        assert probe(out / name).frame_count == n


def test_a_patients_video_left_without_methods_does_not_stop_the_wave(ray_cluster, tmp_path, capsys):
    """A patient whose swap cannot be trained (here: rows with two donors) with one video
    that asked for the swap only and one that also asked for a blur: the first fails, the
    second's blur is still rendered in the same wave. The wave's method list used to be
    taken over every video of the wave after the first had left the plans: KeyError, the
    whole run stopped with a traceback (every rerun too), the blur never rendered."""
    from deid.testing import make_synthetic_video

    root = tmp_path / "arch"
    root.mkdir()
    make_synthetic_video(root / "a.mp4", n_frames=20)
    make_synthetic_video(root / "b.mp4", n_frames=22)
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "patient_id", "donor", "methods"])
        w.writerows([["a.mp4", "P9", "donor-one", "swap"], ["b.mp4", "P9", "donor-two", "swap,blur"]])
    out = tmp_path / "out"
    assert _main(root / "manifest.csv", out, f"swap.donor_library={tmp_path / 'donors'}") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "KeyError" not in err, err[-2000:]
    st = pq.read_table(out / "status.parquet").to_pandas()
    rows = {(v, m): (s, e) for v, m, s, e in zip(st.video, st.method, st.state, st.error)}
    assert rows[("b", "blur")][0] == "done", rows
    assert rows[("a", "swap")][0] == "failed" and "different donors" in rows[("a", "swap")][1], rows
    assert rows[("b", "swap")][0] == "failed" and "different donors" in rows[("b", "swap")][1], rows
    assert _outputs(out) == ["b.blur.audit.json", "b.blur.frames.parquet", "b.blur.mp4", "status.parquet"]
