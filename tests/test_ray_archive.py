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

    argv = ["--manifest", str(manifest), "--out", str(out), "--no-progress"]
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


def test_archive_two_done_one_failed_then_rerun_does_nothing(ray_cluster, archive, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("ray_out") / "out"
    assert _main(archive / "manifest.csv", out) == 1, "exit code 1: one video failed"
    assert _outputs(out) == EXPECTED
    _check_status(out)
    assert probe(out / "alpha.blur.mp4").frame_count == 45 and probe(out / "ward" / "beta.pixelate.mp4").frame_count == 30
    assert not (out.parent / ".out.deid-work").exists(), "segments are private and removed once published"
    captured = capsys.readouterr()
    assert "2 done, 1 failed" in captured.out and "FAILED gamma" in captured.err

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    assert _main(archive / "manifest.csv", out) == 1
    assert "1 failed, 2 skipped" in capsys.readouterr().out
    assert _outputs(out) == EXPECTED
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == mtimes, "a rerun rewrites nothing"
    _check_status(out)


@pytest.mark.parametrize("stage", ["render", "finalize"])
def test_worker_killed_midway_still_gives_each_output_once(ray_cluster, archive, tmp_path, monkeypatch, stage):
    marker = tmp_path / f"killed-{stage}"
    monkeypatch.setenv("DEID_RAY_KILL_ONCE", f"{stage}:{marker}")
    out = tmp_path / "out"
    assert _main(archive / "manifest.csv", out) == 1
    assert marker.is_file(), "a worker really was killed"
    assert _outputs(out) == EXPECTED, "no duplicate, partial or missing output"
    st = _check_status(out)
    assert len(st) == 4
    for name, n in (("alpha.blur.mp4", 45), ("alpha.mask.mp4", 45), ("ward/beta.pixelate.mp4", 30)):
        assert probe(out / name).frame_count == n
