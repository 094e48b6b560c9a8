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

.PHONY: setup test demo demo-controls benchmark clean help

help:
	@echo "make setup      install into $(VENV) (torch first, then synthface[$(EXTRAS)])"
	@echo "make test       run the test suite (runs setup if needed)"
	@echo "make demo       tiny offline end-to-end run (configs/demo.yaml)"
	@echo "make demo-controls  the same with the expression adapter and pose ControlNet (configs/demo-controls.yaml)"
	@echo "make benchmark  train on a dataset, score on .bin files (configs/benchmark.yaml)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Two test processes (pytest-xdist, whole files per process so module fixtures are built
# once): 8 minutes instead of 13 on the 2-core VM. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadfile

# `make demo`: tiny random-weight models, a small identity bank, generate,
# verify and the dataset card, all under out/demo (offline, CPU, minutes).
# Rerunning resumes (committed shards and the bank are kept; rm -rf out/demo
# to start over).
DEMO := out/demo

demo: setup
	$(PY) -m synthface models init-tiny $(DEMO)/models
	test -f $(DEMO)/bank.parquet || $(PY) -m synthface ids sample --config configs/demo.yaml --out $(DEMO)/bank.parquet
	$(PY) -m synthface generate --config configs/demo.yaml --out $(DEMO)/dataset
	$(PY) -m synthface verify $(DEMO)/dataset
	$(PY) -m synthface card $(DEMO)/dataset
	@echo "demo dataset: $(DEMO)/dataset (card: $(DEMO)/dataset/README.md)"

# `make demo-controls`: the demo with both Arc2Face controls on (tiny random
# ControlNet + expression adapter, a stand-in pose pool), under out/demo-controls.
DEMO_C := out/demo-controls

demo-controls: setup
	$(PY) -m synthface models init-tiny $(DEMO_C)/models --controlnet --exp-adapter
	test -d $(DEMO_C)/pose-pool || $(PY) -m synthface pose-pool $(DEMO_C)/pose-pool --count 16 --size 64
	test -f $(DEMO_C)/bank.parquet || $(PY) -m synthface ids sample --config configs/demo-controls.yaml --out $(DEMO_C)/bank.parquet
	$(PY) -m synthface generate --config configs/demo-controls.yaml --out $(DEMO_C)/dataset
	$(PY) -m synthface verify $(DEMO_C)/dataset
	$(PY) -m synthface card $(DEMO_C)/dataset
	@echo "demo dataset with controls: $(DEMO_C)/dataset (card: $(DEMO_C)/dataset/README.md)"

# `make benchmark`: train on a dataset's shards, then score on .bin files.
# Defaults: the demo dataset (made by `make demo` if missing) and the shared
# test bins; on your machine pass BENCH_DATA=DATASET_ROOT BINS=DIR_WITH_LFW_BINS,
# BENCH_CONFIG=your.yaml and NPROC=<GPUs> (torchrun DDP).
BENCH_CONFIG ?= configs/benchmark.yaml
BENCH_DATA ?= out/demo/dataset
BENCH_OUT ?= out/benchmark
BINS ?= ../shared/assets/verification
NPROC ?= 1
BENCH_LAUNCH := $(if $(filter-out 1,$(NPROC)),$(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC) -m synthface,$(PY) -m synthface)

benchmark: setup
	@test -f $(BENCH_DATA)/dataset.json || [ "$(BENCH_DATA)" != "out/demo/dataset" ] || $(MAKE) demo
	$(BENCH_LAUNCH) train --config $(BENCH_CONFIG) --data $(BENCH_DATA) --out $(BENCH_OUT)/run
	@if ls $(BINS)/*.bin >/dev/null 2>&1; then \
	  $(PY) -m synthface benchmark --config $(BENCH_CONFIG) --model $(BENCH_OUT)/run --bins $(BINS) --out $(BENCH_OUT)/report; \
	else \
	  echo "trained $(BENCH_OUT)/run; not scored: no .bin files in $(BINS). Pass the folder holding lfw.bin, cfp_fp.bin, agedb_30.bin: make benchmark BINS=DIR"; \
	fi

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
