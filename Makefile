# deid — the two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch==2.13.0 (CPU wheel) lies in /opt/wheels on the reference machines; elsewhere pip
# takes it from PyPI. Everything goes in ONE pip call so protobuf<5 and numpy<2 hold.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP_QUIET  := 2>&1 | grep -v -E "^WARNING: Location '.*' is ignored" || true

.PHONY: setup demo test test-all test-slow bench browser clean lint

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo ">> installing deid and its pinned dependencies into $(VENV) (first time: ~3 min)"
	@set -o pipefail; $(PY) -m pip install -q --disable-pip-version-check $(FIND_LINKS) -e ".[test]" 2>&1 \
	  | { grep -v -E "^WARNING: Location '.*' is ignored" || true; }
	@$(PY) -c "import numpy, google.protobuf as pb, mediapipe, dlib, av, torch, cv2; \
	  assert numpy.__version__.startswith('1.'), numpy.__version__; \
	  assert pb.__version__.startswith('4.'), pb.__version__; print('>> environment ok: numpy', numpy.__version__, 'protobuf', pb.__version__, 'torch', torch.__version__)"
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/deid demo --out demo_out

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -q -m "slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -q -m "not gpu and not bench" $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench.run $(BENCH_ARGS)

# Debian's chromium for the report's browser test (no browser download).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# pyflakes (installed into .venv on first use): unused imports and names, undefined names
lint: setup
	@$(PY) -c "import pyflakes" 2>/dev/null || $(PY) -m pip install -q --disable-pip-version-check pyflakes $(PIP_QUIET)
	$(PY) -m pyflakes deid ray_jobs bench/*.py tests

clean:
	rm -rf demo_out .pytest_cache build *.egg-info
