"""A scheduler's stop: SIGTERM to the archive job's driver (`ray job stop`, Slurm,
Kubernetes) unwinds it like Ctrl-C (exit 143, its local Ray shut down), and the same
command run again finishes the archive with every output once and nothing half-written.
Synthetic clips and the fake backends, in child processes with their own local Ray."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deid.io import probe

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
SETS = ["detect.backend=color", "track.pose_fallback=false", "audit.identity_backend=patch", "audit.sample_frames=6",
        "ray.segment_frames=60", "ray.segment_overlap=24", "track.lookahead=24", "ray.concurrency=1", "ray.num_cpus=2"]


def _job(root: Path, out: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "ray_jobs.deidentify", "--manifest", str(root), "--out", str(out), "--methods", "blur",
            "--no-progress", "--no-report"]
    for s in SETS:
        argv += ["--set", s]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_sigterm_stops_the_archive_job_and_a_rerun_finishes_it(tmp_path):
    from deid.archive import default_work_root
    from deid.testing import make_synthetic_video

    root = tmp_path / "archive"
    root.mkdir()
    for name in ("a", "b", "c"):
        make_synthetic_video(root / f"{name}.mp4", n_frames=240)
    out = tmp_path / "out"
    work = default_work_root(out)
    p = _job(root, out)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None and not (work.is_dir() and any(f.is_file() for f in work.rglob("*.mp4"))):
        time.sleep(0.05)  # until the first rendered segment exists: mid-archive
    assert p.poll() is None, "the job ended before it could be stopped: " + p.stderr.read()[-2000:]
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "terminated (SIGTERM)" in err, err[-3000:]
    again = _job(root, out)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    names = sorted(f.name for f in out.iterdir())
    assert [n for n in names if n.endswith(".mp4")] == ["a.blur.mp4", "b.blur.mp4", "c.blur.mp4"]
    assert not [n for n in names if n.startswith(".")], names  # no temporaries left
    assert all(probe(out / f"{n}.blur.mp4").frame_count == 240 for n in "abc")


def test_sigterm_in_local_mode_removes_the_temporaries_of_the_videos_being_written(tmp_path):
    """Whole videos (no segments) are rendered straight into hidden temporaries in --out;
    stopped mid-write, the local job shuts its workers down and removes them, rather than
    leaving them for the next run."""
    from deid.testing import make_synthetic_video

    root = tmp_path / "archive"
    root.mkdir()
    for name in ("a", "b"):
        make_synthetic_video(root / f"{name}.mp4", n_frames=600, width=320, height=240)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "ray_jobs.deidentify", "--manifest", str(root), "--out", str(out), "--methods", "blur",
            "--no-progress", "--no-report"]
    for s in [*SETS, "ray.segment_frames=0"]:
        argv += ["--set", s]
    p = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None and not (out.is_dir() and any(".partial-" in f.name for f in out.iterdir())):
        time.sleep(0.01)
    assert p.poll() is None, "the job ended before it could be stopped: " + p.stderr.read()[-2000:]
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-3000:]
    assert not [f.name for f in out.iterdir() if ".partial-" in f.name]
