"""Fixes from the Ray platform's QA pass, each tested without a Ray cluster where the
fix allows it: the driver's Ray calls are replaced by fakes, the bookkeeping is real."""

import json

import pytest

from deid.archive import ArchiveRun, load_manifest
from deid.config import load_config
from deid.errors import ConfigError


@pytest.fixture()
def one_video(tmp_path):
    from deid.testing import make_synthetic_video

    root = tmp_path / "archive"
    root.mkdir()
    make_synthetic_video(root / "v.mp4", n_frames=6)
    return root


def _skip_all(run):
    """Every video of the run as already done (a status row each, as a rerun keeps)."""
    from deid.archive import failed_rows

    for e in run.manifest.entries:
        row = failed_rows(e.video_id, e.video, "", "")[0]
        row.update(method="blur", state="done", error=None, error_kind=None)
        run.status.replace_video(e.video_id, [row])
        run._finished(e.video_id, "skipped", "already done with this configuration")


def _fake_ray(monkeypatch):
    """run_args without Ray: no cluster, every video planned as already done."""
    import ray_jobs.cluster as cluster
    import ray_jobs.deidentify as job

    monkeypatch.setattr(cluster, "connect", lambda cfg, local=False, train=True: ("test", False))
    monkeypatch.setattr(cluster, "configure_data", lambda: None)

    monkeypatch.setattr(job, "_plan_all", lambda run, cfg, overwrite: _skip_all(run))
    monkeypatch.setattr(job, "_render_and_finalize", lambda run, cfg, models, vids: None)


# ----------------------------------------------------------------------------- 1. the lock covers the evaluation


def test_finish_can_keep_the_lock_until_release(one_video, tmp_path):
    cfg = load_config()
    out = tmp_path / "out"
    man = load_manifest(one_video)
    run = ArchiveRun(man, cfg, out)
    run.begin()
    _skip_all(run)
    run.finish(release=False)
    with pytest.raises(ConfigError, match="another deid archive job"):
        ArchiveRun(man, cfg, out).begin()
    run.release()
    run.release()  # idempotent
    second = ArchiveRun(man, cfg, out)
    second.begin()
    second.finish()


def test_job_holds_the_lock_while_evaluating_and_a_failed_evaluation_exits_1(one_video, tmp_path, monkeypatch, capsys):
    import ray_jobs.evaluate as evaluate
    from ray_jobs.deidentify import main

    _fake_ray(monkeypatch)
    out = tmp_path / "out"
    seen = {}

    def fake_evaluate(run, cfg, *, echo=print, failures=None):
        try:  # a second job of the same output folder, submitted while this one evaluates
            ArchiveRun(run.manifest, cfg, run.out_dir).begin()
            seen["second"] = "accepted"
        except ConfigError as e:
            seen["second"] = str(e)
        failures["v"] = "v: evaluation failed: FileNotFoundError: keypoints.pkl"
        metrics = tmp_path / "metrics"
        metrics.mkdir()
        return metrics

    monkeypatch.setattr(evaluate, "evaluate_archive", fake_evaluate)
    rc = main(["--manifest", str(one_video), "--out", str(out), "--methods", "blur", "--evaluate", "--no-report", "--no-progress"])
    assert "another deid archive job" in seen["second"], "a second job was accepted during the evaluation"
    assert rc == 1, "a video whose evaluation failed must make the exit code non-zero"
    assert "EVALUATION FAILED v: " in capsys.readouterr().err
    again = ArchiveRun(load_manifest(one_video), load_config(), out)  # released at the end
    again.begin()
    again.finish()


# ----------------------------------------------------------------------------- 2. a rerun checks the file, not only the table


def test_a_rerun_renders_again_an_output_replaced_or_whose_record_is_gone(tmp_path):
    """plan_video, which the Ray job's plan tasks run, accepts an output as current only
    if its audit record describes that very file (run in process: the same planning)."""
    from deid.archive import STATUS_FILE, StatusTable, run_archive_in_process
    from deid.config import Config
    from deid.pipeline import audit_path, sha256_file
    from deid.testing import make_synthetic_video

    cfg = Config().replace("detect.backend=color", "track.pose_fallback=false", "audit.identity_backend=patch",
                           "audit.sample_frames=4", "io.chunk_size=8", "track.lookahead=24", "ray.segment_overlap=24",
                           "ray.segment_frames=0")
    root = tmp_path / "archive"
    root.mkdir()
    make_synthetic_video(root / "a.mp4", n_frames=12)
    make_synthetic_video(root / "b.mp4", n_frames=12)
    out = tmp_path / "out"
    man = load_manifest(root, methods=("blur", "mask"), out_dir=out)
    assert run_archive_in_process(man, cfg, out).states == {"a": "done", "b": "done"}
    # the raw input copied over an output (same name, a finished record beside it)
    (out / "b.mask.mp4").write_bytes((root / "b.mp4").read_bytes())
    # an audit record deleted (the status table still says done)
    audit_path(out / "a.blur.mp4").unlink()
    again = run_archive_in_process(man, cfg, out)
    assert again.states == {"a": "done", "b": "done"}, "both were rendered again, not skipped"
    assert sha256_file(out / "b.mask.mp4") != sha256_file(root / "b.mp4")
    for o in ("a.blur.mp4", "b.mask.mp4"):
        rec = json.loads(audit_path(out / o).read_text())
        assert rec["output"]["sha256"] == sha256_file(out / o)
    st = StatusTable.load(out / STATUS_FILE)
    assert all(st.get(v, m)["state"] == "done" for v in "ab" for m in ("blur", "mask"))
    # nothing replaced since: a third run skips every video
    assert run_archive_in_process(man, cfg, out).states == {"a": "skipped", "b": "skipped"}
