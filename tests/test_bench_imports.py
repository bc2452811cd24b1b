"""Every bench module imports (the bench runs only under `make bench`, so a syntax or
import error in it would otherwise surface after a 17-minute run, not in `make test`)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench

MODULES = sorted(m.name for m in pkgutil.iter_modules(bench.__path__))


def test_the_bench_has_its_modules():
    assert {"run", "child", "project", "recall", "table"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_bench_module_imports(name):
    importlib.import_module(f"bench.{name}")
