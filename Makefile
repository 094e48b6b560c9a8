# synthface: set-up, tests, demo, benchmark.
# `make test` and `make demo` work on a fresh machine: they run `setup` first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# torch is installed first and pinned to the CPU build where no CUDA GPU exists,
# so that the other packages see it and do not pull the multi-GB CUDA wheels.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")
EXTRAS ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "gpu,dev" || echo "cpu,dev")

.PHONY: setup test demo benchmark clean help

help:
	@echo "make setup      install into $(VENV) (torch first, then synthface[$(EXTRAS)])"
	@echo "make test       run the test suite (runs setup if needed)"
	@echo "make demo       tiny offline end-to-end run (configs/demo.yaml)"
	@echo "make benchmark  train on a dataset, score on .bin files (configs/benchmark.yaml)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[$(EXTRAS)]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

# `make demo`: tiny random-weight models, a small identity bank, generate,
# verify and the dataset card, all under out/demo (offline, CPU, minutes).
# Rerunning resumes (committed shards are kept).
DEMO := out/demo

demo: setup
	$(PY) -m synthface models init-tiny $(DEMO)/models
	$(PY) -m synthface ids sample --config configs/demo.yaml --out $(DEMO)/bank.parquet
	$(PY) -m synthface generate --config configs/demo.yaml --out $(DEMO)/dataset
	$(PY) -m synthface verify $(DEMO)/dataset
	$(PY) -m synthface card $(DEMO)/dataset
	@echo "demo dataset: $(DEMO)/dataset (card: $(DEMO)/dataset/README.md)"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
