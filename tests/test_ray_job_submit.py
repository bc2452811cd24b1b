"""`ray job submit` of the archive entrypoint against a local head started with
`ray start --head --node-ip-address=127.0.0.1` (loopback only; a private temp folder;
only the processes this test started are stopped). Real models on the demo clips:
outputs, audit records, frame tables, the status table, METRICS_DIR and the report."""

import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo_media"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def head(tmp_path):
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip("the ray CLI is not installed beside this Python")
    temp = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))  # short: Ray's unix sockets live here
    port, dash = _free_port(), _free_port()
    env = dict(os.environ)
    env["PATH"] = f"{ray_bin.parent}{os.pathsep}{env.get('PATH', '')}"  # the job's `python` is this one
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    out, _ = proc.communicate(timeout=180)
    pgid = proc.pid  # ray start made its own session: every Ray process it launched is in this group
    try:
        assert proc.returncode == 0, out
        yield {"address": f"http://127.0.0.1:{dash}", "env": env, "bin": ray_bin}
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            time.sleep(3)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.timeout(2400)
def test_job_submit_on_demo_media(head, tmp_path):
    out = tmp_path / "archive_out"
    env = dict(head["env"], RAY_AUTH_MODE="token")  # Ray 2.60 heads require the token `ray start` wrote
    cmd = [str(head["bin"]), "job", "submit", "--address", head["address"], "--working-dir", str(REPO), "--",
           "python", "-m", "ray_jobs.deidentify", "--manifest", str(DEMO), "--out", str(out), "--methods", "blur",
           "--evaluate", "--report", str(out / "report.html"), "--no-progress"]
    for _ in range(24):  # the head's job agent needs a few seconds after `ray start`
        r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=2300)
        if "No available agent to submit job" not in r.stdout + r.stderr:
            break
        time.sleep(5)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "succeeded" in (r.stdout + r.stderr)
    clips = sorted(p.stem for p in DEMO.glob("*.mp4"))
    st = pq.read_table(out / "status.parquet").to_pandas()
    assert sorted(zip(st.video, st.method, st.state)) == [(c, "blur", "done") for c in clips]
    for c in clips:
        for suffix in (".blur.mp4", ".blur.audit.json", ".blur.frames.parquet"):
            assert (out / f"{c}{suffix}").is_file(), f"{c}{suffix}"
        rec = json.loads((out / f"{c}.blur.audit.json").read_text())
        assert rec["leak_audit"]["leaks"] == 0 and rec["output"]["frames_written"] == rec["frames_read"]
    summ = pq.read_table(out / "metrics" / "summary.parquet").to_pandas()
    assert sorted(set(summ.video)) == clips and set(summ.method) == {"original", "blur"}
    assert (summ[summ.method == "original"].ap_overall > 0.99).all(), "the original scored against itself"
    assert (out / "metrics" / "run.json").is_file() and (out / "metrics" / "keypoints").is_dir()
    try:
        importlib.import_module("deid.report")
    except ImportError:
        return
    assert (out / "report.html").is_file()
