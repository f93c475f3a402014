# The README's two commands are `make demo` and `make test`; each sets up .venv first if missing.
PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
# CPU build that lies on disk here; on a GPU machine: make TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC  ?= torch==2.13.0
GPTQMODEL   ?= gptqmodel==7.6.0
# The Dagster set is pinned to one release in pyproject.toml (dagster, -webserver, -graphql,
# -pipes, -shared 1.13.27; dagster-postgres, dagster-k8s 0.29.27; dagster-dg-cli/-core 1.13.27):
# the integration libraries pin dagster==<their release> and the registry's newest
# dagster-postgres/-k8s are 0.29.27, its newest dagster-dg-cli 1.13.27.  So `pip install -e .`
# resolves them together; bump them all at once (docs/deploy.md, "Versions").
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
	@$(PIP) check || echo ">> pip check: only GPTQModel's protobuf pin is expected above (see README)"
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
