"""Cluster configs: cluster.yaml against the cluster-launcher schema shipped inside the
ray package, k8s/rayjob.yaml for the fields KubeRay requires, configs/archive*.yaml, and
the entrypoints' command lines. No cluster is started."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deid.archive import check_segmenting
from deid.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def rayjob():
    return yaml.safe_load((REPO / "k8s" / "rayjob.yaml").read_text())


def test_cluster_yaml_matches_the_launcher_schema(cluster):
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)
    validate_config(prepare_config(cluster))  # ray's own checks after filling in its defaults
    bad = dict(cluster, available_node_types={"head": {"resources": {"CPU": 1}}})  # no node_config
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_cluster_yaml_node_pools_and_setup(cluster):
    import ray

    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("CPU", 1) == 0 and not head["resources"].get("GPU")
    cpu = [t for n, t in types.items() if n != cluster["head_node_type"] and not t["resources"].get("GPU")]
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert cpu and gpu, "a CPU pool for decode/encode and a GPU pool for training and pose"
    for t in types.values():
        assert 0 <= t.get("min_workers", 0) <= t.get("max_workers", 0) <= cluster["max_workers"]
    assert any("pip install" in c and "-e ." in c for c in cluster["setup_commands"]), "setup installs this package"
    assert "." in cluster["file_mounts"].values()
    images = [cluster["docker"]["image"]] + [t["docker"]["worker_image"] for t in types.values() if "docker" in t]
    for img in images:
        assert f":{ray.__version__}-py311" in img, f"{img}: the image's Ray must match the pinned ray {ray.__version__}"


def test_rayjob_has_what_kuberay_requires(rayjob):
    import ray

    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", rayjob["metadata"]["name"])
    spec = rayjob["spec"]
    m = re.fullmatch(r"python -m ray_jobs\.deidentify --config (\S+)", spec["entrypoint"])
    assert m, spec["entrypoint"]
    check_segmenting(load_config(REPO / m.group(1)))  # the config it names exists and is valid
    yaml.safe_load(spec["runtimeEnvYAML"])
    rc = spec["rayClusterSpec"]
    assert rc["rayVersion"] == ray.__version__
    groups = [("head", rc["headGroupSpec"])] + [(g["groupName"], g) for g in rc["workerGroupSpecs"]]
    assert len({n for n, _ in groups}) == len(groups), "group names are unique"
    for name, g in groups:
        assert isinstance(g["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in g["rayStartParams"].values()), f"{name}: rayStartParams values must be strings"
        pod = g["template"]["spec"]
        assert pod["containers"] and all(c.get("name") and c.get("image") for c in pod["containers"])
        vols = {v["name"] for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            for vm in c.get("volumeMounts", []):
                assert vm["name"] in vols, f"{name}: volume {vm['name']} is mounted but not defined"
                assert vm["mountPath"] == "/mnt/deid"
        if name != "head":
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    gpu = [g for _, g in groups if any("nvidia.com/gpu" in c["resources"].get("limits", {}) for c in g["template"]["spec"]["containers"])]
    assert len(gpu) == 1 and gpu[0]["groupName"] == "gpu-workers"
    assert rc["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_archive_configs_load_and_share_the_mounted_paths():
    for f in sorted((REPO / "configs").glob("archive*.yaml")):
        cfg = load_config(f)
        check_segmenting(cfg)
        assert cfg.ray.manifest and cfg.ray.out_dir, f
    cfg = load_config(REPO / "configs" / "archive.yaml")
    for p in (cfg.ray.manifest, cfg.ray.archive_root, cfg.ray.out_dir, cfg.ray.work_dir, cfg.ray.storage_path):
        assert p.startswith("/mnt/deid/"), "every node must see these paths: the shared mount of cluster.yaml / rayjob.yaml"


@pytest.mark.parametrize("cmd", [[sys.executable, "-m", "ray_jobs.deidentify", "--help"], [sys.executable, "-m", "deid.cli", "archive", "--help"]])
def test_entrypoints_parse(cmd):
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for flag in ("--manifest", "--out", "--config", "--local", "--no-evaluate"):
        assert flag in r.stdout


def test_missing_manifest_is_a_config_error_with_exit_code_2(tmp_path, capsys):
    from ray_jobs.deidentify import main

    assert main(["--out", str(tmp_path / "o")]) == 2
    assert "no manifest" in capsys.readouterr().err
    assert main(["--manifest", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--manifest", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "ray.segment_overlap=2"]) == 2
    assert "segment_overlap (2) must be >= track.lookahead" in capsys.readouterr().err


def test_render_pool_keeps_one_segment_in_flight_per_actor():
    pytest.importorskip("ray.data")
    from ray_jobs.deidentify import render_pool

    pool = render_pool(concurrency=2, n_rows=3)
    assert pool.max_tasks_in_flight_per_actor == 1, "a segment queued behind a busy actor waits while another idles"
    assert (pool.min_size, pool.max_size) == (1, 2)
    small = render_pool(concurrency=4, n_rows=1)
    assert small.max_size == 1 and small.max_tasks_in_flight_per_actor == 1


def test_cpu_training_worker_may_try_more_threads_than_its_reservation(monkeypatch):
    """Ray pins a 1-CPU worker to OMP_NUM_THREADS=1; the worker raises torch's ceiling so
    the trainer's thread tuner can use a free core (it falls back to one thread by timing)."""
    import os

    import torch

    from ray_jobs.train import cpu_training_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as Ray leaves a 1-CPU worker
        assert cpu_training_threads(3) == 3
        assert cpu_training_threads(0) == min(4, os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(Exception, match="train_threads"):
        load_config(None, ["ray.train_threads=-1"])


def test_actor_pools_can_grow_back_to_their_size():
    """The render and evaluation pools keep one task in flight per actor, so their
    utilisation tops out at 100 %; Ray Data adds actors only above its up-scaling
    threshold (175 % by default, when it also warns at every run). configure_data()
    puts the threshold where a pool that shrank while idle can grow again."""
    import ray.data

    from ray_jobs.cluster import configure_data
    from ray_jobs.deidentify import render_pool

    pool = render_pool(concurrency=2, n_rows=5)
    ctx = ray.data.DataContext.get_current()
    saved = ctx.autoscaling_config.actor_pool_util_upscaling_threshold
    try:
        configure_data()
        reachable = pool.max_tasks_in_flight_per_actor / 1  # one task at a time per actor
        assert reachable >= ctx.autoscaling_config.actor_pool_util_upscaling_threshold > 0
        assert pool.min_size == 1 and pool.max_size == 2
    finally:
        ctx.autoscaling_config.actor_pool_util_upscaling_threshold = saved


def test_pseudonym_records_inside_the_output_folder_are_refused_before_ray_starts(tmp_path, capsys):
    """io.output_names=pseudonym: the status table, metrics and report name the inputs, so
    none of them may be placed inside the output folder (exit 2, nothing created)."""
    from ray_jobs.deidentify import main

    o = tmp_path / "o"
    base = ["--manifest", str(tmp_path), "--out", str(o), "--set", "io.output_names=pseudonym"]
    for extra, what in ((["--records", str(o / "r")], "the records folder"), (["--metrics", str(o / "m")], "the metrics folder"),
                        (["--evaluate", "--report", str(o / "sub" / "r.html")], "the report")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"archive: error: {what}") and "lies inside the output folder" in err, err
    assert not o.exists()


def test_a_file_system_error_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    import ray_jobs.deidentify as job

    def fail(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out"))

    monkeypatch.setattr(job, "run_args", fail)
    assert job.main(["--manifest", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"archive: error: Permission denied: {tmp_path / 'out'}; rerun the same command to resume once it is fixed\n"


def test_only_rays_token_enabled_notice_is_filtered():
    import logging

    from ray_jobs.cluster import _DropTokenNotice, _quiet_token_notice

    def rec(msg):
        return logging.LogRecord("ray._private.authentication.authentication_token_setup", logging.WARNING, __file__, 1, msg, None, None)

    f = _DropTokenNotice()
    assert not f.filter(rec("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out."))
    assert f.filter(rec("Token authentication is disabled for this Ray cluster. Anyone with network access ..."))
    _quiet_token_notice()
    _quiet_token_notice()  # once only
    lg = logging.getLogger("ray._private.authentication.authentication_token_setup")
    assert sum(isinstance(x, _DropTokenNotice) for x in lg.filters) == 1


def test_report_and_metrics_without_evaluate_are_warned_about(tmp_path, caplog):
    from ray_jobs.deidentify import build_parser, resolve_config

    args = build_parser().parse_args(["--manifest", str(tmp_path), "--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.html")])
    with caplog.at_level("WARNING", logger="ray_jobs.deidentify"):
        resolve_config(args)
    assert [r.getMessage() for r in caplog.records] == [
        "--report given without --evaluate (ray.evaluate): no evaluation runs, so nothing is written there"]
    caplog.clear()
    args = build_parser().parse_args(["--manifest", str(tmp_path), "--out", str(tmp_path / "o"), "--evaluate", "--report", str(tmp_path / "r.html")])
    with caplog.at_level("WARNING", logger="ray_jobs.deidentify"):
        resolve_config(args)
    assert not caplog.records
