"""Shared fixtures. Tests that read ../shared/media skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every Ray a test starts (in process, or `ray start` in a subprocess) listens on loopback
# only: see ray_jobs.cluster.loopback_only. Set before anything imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDIA = Path(os.environ.get("DEID_SHARED_MEDIA", REPO.parent / "shared" / "media"))


def media_path(rel: str) -> Path:
    """Path of a file under ../shared/media, or skip the test with a clear reason."""
    p = SHARED_MEDIA / rel
    if not p.exists():
        pytest.skip(f"shared test media not available: {p} (set DEID_SHARED_MEDIA or put ../shared/media beside the repo)")
    return p


@pytest.fixture(scope="session")
def shared_media() -> Path:
    if not SHARED_MEDIA.is_dir():
        pytest.skip(f"shared test media not available at {SHARED_MEDIA}")
    return SHARED_MEDIA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
