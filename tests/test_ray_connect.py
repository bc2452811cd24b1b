"""The job's own local Ray (``ray_jobs.cluster.connect`` without ``RAY_ADDRESS``): loopback
only, and the State API up — Ray Train's placement-group cleaner depends on it and kills
healthy training workers without it."""

import pytest

pytestmark = pytest.mark.ray


def test_local_connect_is_loopback_with_state_api(monkeypatch):
    ray = pytest.importorskip("ray")
    from ray.util.state import list_actors

    from deid.config import load_config
    from ray_jobs.cluster import connect

    if ray.is_initialized():
        pytest.skip("a Ray instance is already up in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # as outside the test suite (conftest sets loopback for every test): connect must do it
    import ray._private.ray_constants as rc

    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.setattr(rc, "ENABLE_RAY_CLUSTER", True)
    cfg = load_config(None, ["ray.num_cpus=1"])
    where, started = connect(cfg)
    try:
        assert (where, started) == ("local", True)
        ctx = ray.get_runtime_context()
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        dash = ray._private.worker.global_worker.node.address_info.get("webui_url") or ""
        assert dash.startswith("127.0.0.1:"), dash
        gcs = ray._private.worker.global_worker.node.address_info["gcs_address"]
        assert gcs.startswith("127.0.0.1:"), gcs
        assert isinstance(list_actors(address=gcs, timeout=20), list)  # the State API answers
        assert ctx.get_job_id()
        assert connect(cfg) == ("existing", False)
        # its logs name inputs and patients: the session folder is this user's only
        import os
        import stat

        session = ray._private.worker._global_node.get_session_dir_path()
        assert stat.S_IMODE(os.stat(session).st_mode) == 0o700
    finally:
        ray.shutdown()


def test_a_dashboard_url_in_ray_address_is_a_clear_config_error(monkeypatch):
    ray = pytest.importorskip("ray")
    from deid.config import load_config
    from deid.errors import ConfigError
    from ray_jobs.cluster import connect

    if ray.is_initialized():
        pytest.skip("a Ray instance is already up in this process")
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:1")  # the job API's form, not a driver's
    with pytest.raises(ConfigError, match="HEAD:6379"):
        connect(load_config(None, []))
    assert not ray.is_initialized()
