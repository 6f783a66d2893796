# `make demo` and `make test` set everything up into .venv (idempotent) and then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.boom-installed
export RAY_USAGE_STATS_ENABLED := 0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo demo-repeats test test-heavy bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup-venv.sh
	PYTHON=$(PYTHON) bash scripts/setup-venv.sh $(VENV)
	touch $@

demo: setup
	$(BIN)/boom run --config jobs/configs/demo.yaml

# The demo three times with seeds 42, 43, 44 (runs/demo/repeat-<k>/) and one report over them.
demo-repeats: setup
	$(BIN)/boom run --config jobs/configs/demo.yaml --repeats 3

test: setup
	$(BIN)/python -m pytest -q -ra -m "not heavy" tests

# The few end-to-end tests of several minutes each: Ray's autoscaler adding five nodes, the
# pipeline on a loopback S3 server, the ablation grid's smoke twin.
test-heavy: setup
	$(BIN)/python -m pytest -q -ra -m heavy tests

bench: setup
	$(BIN)/python benchmarks/bagging.py
	$(BIN)/python benchmarks/merge.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/embed_throughput.py

clean:
	rm -rf runs .pytest_cache
