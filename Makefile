# The README's two commands are `make demo` and `make test`; each sets up .venv first if missing.
PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
# CPU build that lies on disk here; on a GPU machine: make TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC  ?= torch==2.13.0
GPTQMODEL   ?= gptqmodel==7.6.0
# Dagster integration libraries for the service (docker/, docker/k8s/): they pin dagster==<their
# release> exactly, and the registry has no 0.29.28 to match dagster 1.13.28 (dagster-webserver
# 1.13.28 is the newest, so dagster resolves to 1.13.28).  0.29.27 is installed with --no-deps so it
# cannot move dagster; it works with 1.13.28 (genbound_assets_tests/test_production_config.py,
# test_k8s_config.py) and prints a version-mismatch UserWarning on import.  Their runtime
# dependencies are in pyproject.toml.  Bump all three together once 0.29.28 is published.
DAGSTER_LIBS ?= dagster-postgres==0.29.27 dagster-k8s==0.29.27
PIP         := $(BIN)/python -m pip
CORES       := $(shell nproc 2>/dev/null || echo 2)
export GPTQMODEL_CPU_WORKERS ?= $(CORES)

.PHONY: setup demo test lint ui ui-check clean-venv bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@echo ">> torch first, pinned ($(TORCH_SPEC)): an unpinned torch pulls a multi-GB CUDA build"
	$(PIP) install -q $(TORCH_SPEC)
	@echo ">> genbound with dev extras"
	$(PIP) install -q -e '.[dev]'
	@echo ">> $(GPTQMODEL) with --no-deps (it pins protobuf>=7.34; dagster needs <7; runtime deps are in pyproject)"
	$(PIP) install -q --no-deps --no-build-isolation $(GPTQMODEL)
	@echo ">> $(DAGSTER_LIBS) with --no-deps (they pin dagster 1.13.27; see DAGSTER_LIBS above)"
	$(PIP) install -q --no-deps $(DAGSTER_LIBS)
	@$(PIP) check || echo ">> pip check: only GPTQModel's protobuf pin and the dagster-postgres/dagster-k8s dagster pins are expected above (see README)"
	@touch $@

demo: setup
	$(BIN)/genbound demo

test: setup
	$(BIN)/python -m pytest -q

# every bench (bench/run_all.py): bench/results/<name>.json and the tables of docs/performance.md;
# ~10-15 min on 2 cores.  A subset: make bench BENCH="freedman coverage"
bench: setup
	$(BIN)/python bench/run_all.py $(if $(BENCH),--only $(BENCH))

lint: setup
	$(BIN)/ruff check genbound_assets genbound_assets_tests bench

ui: setup
	$(BIN)/genbound ui

# after `make demo`: screenshots of the UI under <data dir>/ui-check/ (installs chromium; not in CI)
ui-check: setup
	scripts/ui_check.sh

clean-venv:
	rm -rf $(VENV)
