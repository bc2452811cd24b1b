"""Fixes from the Ray platform's QA pass, each tested without a Ray cluster where the
fix allows it: the driver's Ray calls are replaced by fakes, the bookkeeping is real."""

import json
import os
from pathlib import Path

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


# ----------------------------------------------------------------------------- 3. no torch.distributed store in a local run


def test_patient_trainer_starts_no_torch_process_group(monkeypatch, tmp_path):
    """The trainer of train_patient_task uses the single-worker backend: no
    torch.distributed process group, whose TCPStore listens on every interface."""
    pytest.importorskip("ray.train")
    import ray.train.torch

    from ray_jobs.train import train_patient_task
    from ray_jobs.train_backend import SingleWorkerTorchConfig, _NoProcessGroup

    built = {}

    class FakeTrainer:
        def __init__(self, fn, **kw):
            built.update(kw)

        def fit(self):
            return None

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", FakeTrainer)
    job = {"videos": [], "model_dir": str(tmp_path / "m"), "donor": "d", "name": "swap-x"}
    settings = {"cfg": {}, "num_gpus": 0, "workers": 1, "storage": str(tmp_path / "s"), "max_failures": 0}
    train_patient_task("p", job, settings)
    tc = built["torch_config"]
    assert isinstance(tc, SingleWorkerTorchConfig) and tc.backend_cls is _NoProcessGroup

    class Group:
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

    _NoProcessGroup().on_start(Group(1), tc)  # starts nothing
    with pytest.raises(RuntimeError, match="train_workers must be 1"):
        _NoProcessGroup().on_start(Group(2), tc)


@pytest.mark.ray
@pytest.mark.slow
def test_single_worker_trainer_trains_without_a_process_group_or_open_port(tmp_path):
    """A TorchTrainer with SingleWorkerTorchConfig on a loopback-only local Ray: the worker
    trains and reports, torch.distributed is not initialised, and the worker process
    listens on no address but loopback."""
    ray = pytest.importorskip("ray")
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("reads the listening sockets from /proc")
    import ray.train
    from ray.train.torch import TorchTrainer

    from ray_jobs.cluster import loopback_only
    from ray_jobs.train_backend import SingleWorkerTorchConfig

    def loop(config):  # self-contained: the worker cannot import this test module
        import torch.distributed as dist

        def _listening_beyond_loopback() -> list[str]:
            """This process's listening TCP sockets on an address other than loopback (Linux /proc)."""
            import os

            mine = set()
            for fd in os.listdir("/proc/self/fd"):
                try:
                    link = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    mine.add(link[8:-1])
            loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
            out = []
            for table in ("/proc/net/tcp", "/proc/net/tcp6"):
                if not os.path.isfile(table):
                    continue
                with open(table) as fh:
                    for line in fh.readlines()[1:]:
                        f = line.split()
                        addr, state, inode = f[1], f[3], f[9]
                        if state == "0A" and inode in mine and addr.split(":")[0] not in loopback:
                            out.append(addr)
            return out

        seen = {"dist": int(dist.is_initialized()), "open": _listening_beyond_loopback()}
        Path(config["result"]).write_text(json.dumps(seen))  # Ray Train V2 keeps metrics only with checkpoints
        ray.train.report({"dist": seen["dist"]})

    if ray.is_initialized():
        pytest.skip("needs its own local Ray")
    loopback_only()
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
             logging_level="WARNING")
    try:
        TorchTrainer(loop, train_loop_config={"result": str(tmp_path / "seen.json")}, torch_config=SingleWorkerTorchConfig(),
                           scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=False),
                           run_config=ray.train.RunConfig(name="single", storage_path=str(tmp_path))).fit()
    finally:
        ray.shutdown()
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["dist"] == 0, "a torch.distributed process group was started"
    assert seen["open"] == [], "the training worker listens on a non-loopback address"


# ----------------------------------------------------------------------------- 4. token authentication on the clusters


def test_cluster_configs_turn_token_authentication_on():
    import yaml

    repo = Path(__file__).resolve().parents[1]
    cluster = yaml.safe_load((repo / "cluster.yaml").read_text())
    assert cluster["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token", "every node gets the token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cluster[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token ray start" in c for c in starts), key
    rayjob = yaml.safe_load((repo / "k8s" / "rayjob.yaml").read_text())
    assert rayjob["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    docs = (repo / "docs" / "ray.md").read_text()
    assert "ray get-auth-token --generate" in docs and "written to `~/.ray/auth_token` by `ray start`" not in docs


# ----------------------------------------------------------------------------- 5. the k8s image holds demo_media


def test_k8s_image_finds_the_same_default_distractors(tmp_path):
    """The files k8s/Dockerfile copies, laid out as in the image and imported from another
    folder (as the editable install does): the evaluation's default distractors are those
    of this checkout."""
    import re
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    docker = (repo / "k8s" / "Dockerfile").read_text()
    image = tmp_path / "image"
    image.mkdir()
    for line in docker.splitlines():
        m = re.match(r"COPY\s+(?:--\S+\s+)*(.+)\s+(\S+)$", line.strip())
        if not m:
            continue
        for src in m.group(1).split():
            (shutil.copytree if (repo / src).is_dir() else shutil.copy2)(repo / src, image / src)
    assert re.search(r"pip install [^\n]*-e \.", docker), "editable: deid finds demo_media beside its source"
    code = ("import json; from deid.evaluate.references import default_distractors; "
            "print(json.dumps([lab for lab, _ in default_distractors('/mnt/deid/archive/x.mp4')]))")

    def distractors(root):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(root)}
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    here = distractors(repo)
    assert here, "this checkout has default distractors (demo_media)"
    assert distractors(image) == here


# ----------------------------------------------------------------------------- 6. a wrong address fails at once


def test_a_gcs_address_where_nothing_listens_is_refused_in_seconds(monkeypatch):
    import socket
    import time

    import ray

    from ray_jobs.cluster import connect, unreachable

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("ray.init must not be tried"))
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=rf"cannot join the Ray cluster at RAY_ADDRESS='127.0.0.1:{port}' \(nothing accepts"):
        connect(load_config())
    assert time.monotonic() - t0 < 10
    assert unreachable("auto") == "" and unreachable("ray://127.0.0.1") == ""
    assert "nothing accepts" in unreachable(f"http://127.0.0.1:{port}")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        assert unreachable(f"127.0.0.1:{srv.getsockname()[1]}") == ""


# ----------------------------------------------------------------------------- 7. no GPU for a CPU pose model


def test_archive_configs_reserve_no_gpu_for_pose():
    """Every pose backend runs on the CPU (rtmpose too: onnxruntime's CPU provider), so a
    GPU reservation for the pose actors only makes them wait for GPU nodes."""
    repo = Path(__file__).resolve().parents[1]
    for f in sorted((repo / "configs").glob("archive*.yaml")):
        cfg = load_config(f)
        assert cfg.ray.num_gpus_pose == 0, f"{f.name}: {cfg.evaluate.pose.backend} runs on the CPU; its actors would wait for GPUs"


def test_the_onnx_pose_backend_asks_for_the_cpu_only(tmp_path):
    """What docs/ray.md and the README say: RTMPose (and its YOLOX) run on onnxruntime's
    CPU provider, whatever GPUs Ray reserves."""
    pytest.importorskip("onnx")
    import numpy as np

    from deid.pose.rtmpose_backend import RTMPoseEstimator
    from deid.pose.testing import write_rtmpose_onnx, write_yolox_onnx

    m = write_rtmpose_onnx(tmp_path / "r.onnx", np.zeros((1, 17, 384), np.float32), np.zeros((1, 17, 512), np.float32))
    d = write_yolox_onnx(tmp_path / "y.onnx", np.zeros((1, 5), np.float32))
    est = RTMPoseEstimator(m, det_model_path=d)
    assert est._pose.session.get_providers() == ["CPUExecutionProvider"]
    assert est._det.session.get_providers() == ["CPUExecutionProvider"]


# ----------------------------------------------------------------------------- 8. relative paths in a submitted job; .rayignore


def test_relative_paths_are_refused_in_a_submitted_jobs_working_dir(tmp_path, monkeypatch, capsys):
    from ray_jobs.deidentify import job_package_dir, main

    pkg = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    (pkg / "configs").mkdir(parents=True)
    assert job_package_dir(pkg / "configs") == pkg and job_package_dir(tmp_path) is None
    monkeypatch.chdir(pkg)
    rc = main(["--manifest", str(tmp_path / "archive"), "--out", "rel_out", "--methods", "blur", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--out / ray.out_dir = 'rel_out'" in err and "_ray_pkg_0123abcd" in err
    assert not (pkg / "rel_out").exists()
    rc = main(["--manifest", "my_videos", "--out", str(tmp_path / "out"), "--methods", "blur", "--no-progress"])
    assert rc == 2 and "--manifest / ray.manifest = 'my_videos'" in capsys.readouterr().err
    # the swap's donor library too (the trainer opens it on a worker)
    rc = main(["--manifest", str(tmp_path / "archive"), "--out", str(tmp_path / "out"), "--methods", "blur", "--no-progress",
               "--set", "swap.donor_library=donors"])
    assert rc == 2 and "swap.donor_library = 'donors'" in capsys.readouterr().err


def test_rayignore_uploads_only_what_the_job_needs(tmp_path):
    """`ray job submit --working-dir .` (Ray's own packaging) on a checkout with a folder of
    videos and one of outputs in it: only the code, the configs and demo_media travel."""
    import shutil
    import zipfile

    pytest.importorskip("ray")
    from ray._private.runtime_env.packaging import create_package

    repo = Path(__file__).resolve().parents[1]
    co = tmp_path / "checkout"
    co.mkdir()
    for name in (".rayignore", ".gitignore", "pyproject.toml", "README.md", "Makefile"):
        shutil.copy2(repo / name, co / name)
    for d in ("deid", "ray_jobs", "configs", "demo_media", "docs"):
        shutil.copytree(repo / d, co / d, ignore=shutil.ignore_patterns("__pycache__"))
    for d in ("my_videos", "my_out", "archive_out"):
        (co / d / "ward").mkdir(parents=True)
        (co / d / "ward" / "p17.mp4").write_bytes(b"patient")
    z = tmp_path / "pkg.zip"
    create_package(str(co), z, include_gitignore=True, include_parent_dir=False, excludes=[])
    tops = {n.split("/")[0] for n in zipfile.ZipFile(z).namelist()}
    assert tops == {"deid", "ray_jobs", "configs", "demo_media", "pyproject.toml", ".rayignore"}
    names = zipfile.ZipFile(z).namelist()
    assert "deid/archive.py" in names and "ray_jobs/deidentify.py" in names and "configs/archive.yaml" in names


# ----------------------------------------------------------------------------- 9. evaluation progress; the report's path


def test_evaluation_says_each_video_and_the_summary_names_the_report(one_video, tmp_path, monkeypatch, capsys):
    import ray_jobs.deidentify as job
    import ray_jobs.evaluate as evaluate

    lines: list[str] = []
    failures: dict[str, str] = {}
    ok = evaluate.collect_evaluations(iter([{"video": "a", "error": ""}, {"video": "b", "error": "b: boom"}]), 2, lines.append, failures)
    assert ok == 1 and failures == {"b": "b: boom"}
    assert lines[0].startswith("archive: evaluated a (1 of 2") and "evaluation of b failed (2 of 2" in lines[1]

    _fake_ray(monkeypatch)
    metrics = tmp_path / "metrics"
    monkeypatch.setattr(evaluate, "evaluate_archive", lambda run, cfg, echo=print, failures=None: metrics)
    monkeypatch.setattr(job, "_report", lambda args, m, records, echo: tmp_path / "report.html")
    rc = job.main(["--manifest", str(one_video), "--out", str(tmp_path / "out"), "--methods", "blur", "--evaluate", "--no-progress"])
    assert rc == 0
    assert f"archive: metrics {metrics}; report {tmp_path / 'report.html'}" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 6. Ray Train's watchers find this job's cluster


def test_training_tasks_name_their_cluster_to_what_ray_train_starts_under_them(monkeypatch, tmp_path):
    """Ray Train's PlacementGroupCleaner (a detached actor started by the training
    controller) finds the State API from RAY_ADDRESS, else from the Ray processes on the
    machine: with a second Ray there (another archive job, someone's `ray start`) it
    failed ("Found multiple active Ray instances") or asked the other cluster. The
    training tasks carry RAY_ADDRESS = this cluster, and a detached actor started under
    such a task inherits it."""
    ray = pytest.importorskip("ray")
    import ray_jobs.train as train

    if ray.is_initialized():
        pytest.skip("needs its own local Ray")
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
    try:
        gcs = ray.get_runtime_context().gcs_address
        env = train.training_runtime_env()
        assert env == {"env_vars": {"RAY_ADDRESS": gcs}}

        class Watcher:  # as Ray Train starts its cleaner: detached, from inside the training's task
            def address(self):
                from ray._private.services import canonicalize_bootstrap_address_or_die

                return os.environ.get("RAY_ADDRESS"), canonicalize_bootstrap_address_or_die(None)

        def fit():
            w = ray.remote(num_cpus=0)(Watcher).options(lifetime="detached").remote()
            try:
                return ray.get(w.address.remote())
            finally:
                ray.kill(w)

        seen = ray.get(ray.remote(num_cpus=0, runtime_env=env)(fit).remote())
        assert seen == (gcs, gcs)
    finally:
        ray.shutdown()

    # and the archive's trainings are submitted with it
    submitted = {}

    def fake_remote(**kw):
        submitted.update(kw)
        return lambda fn: type("T", (), {"remote": staticmethod(lambda *a: object())})

    monkeypatch.setattr(ray, "remote", fake_remote)
    monkeypatch.setattr(train, "training_runtime_env", lambda: {"env_vars": {"RAY_ADDRESS": "127.0.0.1:1"}})
    models = train.SwapModels.__new__(train.SwapModels)
    models.cfg = load_config(None, ["ray.max_concurrent_trainings=1"])
    models._queue, models._inflight, models.jobs = ["P1"], {}, {"P1": {}}
    models._settings = {}
    models._submit()
    assert submitted.get("runtime_env") == {"env_vars": {"RAY_ADDRESS": "127.0.0.1:1"}}, submitted


# ----------------------------------------------------------------------------- 7. a stopped run deletes models nothing writes any more


def test_cleanup_of_a_stopped_run_stops_the_trainings_before_deleting_their_folders(tmp_path):
    """Ctrl-C / SIGTERM while a patient trains: run_archive's clean-up deleted the model
    folder while the training still ran (Ray is shut down only afterwards), so the
    training could write the face crops (or model.pt) again after the deletion."""
    ray = pytest.importorskip("ray")
    import time

    import ray_jobs.train as train

    def keeps_writing(model_dir):
        """A training that goes on writing the patient's face crops (as TrainData.save
        does, re-creating the folder) until it is stopped."""
        import time
        from pathlib import Path

        d = Path(model_dir) / "faces"
        while True:
            d.mkdir(parents=True, exist_ok=True)
            (d / "patient.npz").write_bytes(b"faces")
            time.sleep(0.05)

    if ray.is_initialized():
        pytest.skip("needs its own local Ray")
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
    try:
        model_dir = tmp_path / "storage" / "models" / "swap-x"
        models = train.SwapModels.__new__(train.SwapModels)
        models.cfg = load_config(None, [])
        models.storage = tmp_path / "storage"
        models.jobs = {"P1": {"model_dir": str(model_dir), "name": "swap-x"}}
        models.remaining = {"P1": {"v"}}
        ref = ray.remote(num_cpus=0, max_retries=0)(keeps_writing).remote(str(model_dir))
        models._inflight, models._queue = {ref: "P1"}, []
        deadline = time.time() + 60
        while not (model_dir / "faces" / "patient.npz").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert (model_dir / "faces" / "patient.npz").exists()
        models.cleanup()
        time.sleep(1.0)  # a training still running would have written again by now
        assert not model_dir.exists(), sorted(str(p) for p in model_dir.rglob("*"))
    finally:
        ray.shutdown()
