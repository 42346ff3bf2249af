# The two commands: `make demo` (the product end to end on the local emulators) and
# `make test` (lint, types, Terraform format, and every test suite). Each installs what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/uv/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synced-stamp
TASKS_VENV := .venv-tasks
PYTEST_ARGS ?=

.PHONY: help install test lint typecheck terraform-check unit demo up down status bench faults clean

help:
	@echo "make demo   - start the emulators and services, run the demo, print the LoopResults"
	@echo "make test   - install, then ruff, import contracts, mypy, terraform checks, and every pytest suite (faults too)"
	@echo "make faults - the fault-injection suite at its long size"
	@echo "make up     - start the local stack and leave it running (make down stops it)"

$(UV):
	@echo "==> installing uv $(UV_VERSION) into .tools/uv"
	@$(PYTHON) -m venv .tools/uv
	@.tools/uv/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMP): $(UV) pyproject.toml uv.lock
	@echo "==> syncing $(VENV) from uv.lock"
	@$(UV) sync --frozen --quiet
	@touch $(STAMP)

# The function sandbox (docs/functions.md) needs bubblewrap, the run viewer's browser tests Debian's
# chromium (driven by Playwright, no browser download); as root on Debian both are installed here.
install: $(STAMP)
	@if ! command -v bwrap >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "==> installing bubblewrap"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				bubblewrap >/dev/null) || echo "==> bubblewrap not installed: the sandbox tests skip"; \
		else echo "==> no bwrap and not root: the sandbox suite skips, stored functions fail closed"; fi; \
	fi
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "==> installing chromium (Debian) for the run viewer's browser tests"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				chromium >/dev/null) || echo "==> chromium not installed: the browser tests skip"; \
		else echo "==> no chromium and not root: the browser tests (tests/integration/test_ui_browser.py) skip"; fi; \
	fi
	@$(PY) -c "from cloudagents.local.emulators import ensure_tasks_emulator_venv as e; \
	from pathlib import Path; e(Path('.'))"

lint: install
	@echo "==> ruff"
	@$(VENV)/bin/ruff check libs services tests scripts
	@$(VENV)/bin/ruff format --check libs services tests scripts
	@echo "==> import contracts (import-linter: domain <- engine <- ports <- runtime; adapters)"
	@$(VENV)/bin/lint-imports --no-cache

typecheck: install
	@echo "==> mypy (libs/)"
	@$(VENV)/bin/mypy

terraform-check: install
	@echo "==> Terraform topology inputs are current"
	@$(PY) scripts/gen_terraform_topology.py --check
	@if command -v terraform >/dev/null 2>&1; then \
		echo "==> terraform fmt -check -recursive terraform"; terraform fmt -check -recursive terraform; \
	else echo "==> terraform not installed: skipping terraform fmt (the HCL tests still run)"; fi
	@echo "==> checkov over terraform/, with and without graph node types"
	@bash scripts/checkov.sh

test: install lint typecheck terraform-check
	@echo "==> pytest"
	@$(VENV)/bin/pytest --durations=25 $(PYTEST_ARGS)

unit: install
	@$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

up: install
	@$(VENV)/bin/cloudagents up

down:
	@if [ -x $(VENV)/bin/cloudagents ]; then $(VENV)/bin/cloudagents down; fi

status: install
	@$(VENV)/bin/cloudagents status

demo: install
	@$(PY) scripts/demo.py

# `make bench`: cloudagents side by side with LangGraph and the OpenAI Agents SDK (docs/performance.md).
# The peers go to their own .venv-bench (scripts/bench/requirements.txt, made by run.py);
# PostgreSQL (for LangGraph's checkpointer) comes from Debian when missing.
bench: install
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "==> installing PostgreSQL (Debian) for LangGraph's checkpointer"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				postgresql >/dev/null) || echo "==> PostgreSQL not installed: LangGraph uses SQLite"; \
		else echo "==> no PostgreSQL and not root: LangGraph uses its SQLite saver"; fi; \
	fi
	@$(PY) scripts/bench/run.py $(BENCH_ARGS)
	@echo "==> a sandboxed stored-function call against an in-process tool call (docs/functions.md)"
	@$(PY) scripts/bench/sandbox_cost.py || echo "==> sandbox unavailable (needs root and bubblewrap): skipped"

# `make faults`: the fault-injection suite (tests/faults, docs/reliability.md) at its long size;
# `make test` runs it at its default size. Figures: bench-results/fault-figures.{json,md}.
faults: install
	@FAULTS_SCALE=long $(VENV)/bin/pytest tests/faults --timeout=7200 $(PYTEST_ARGS)

clean: down
	rm -rf $(VENV) $(TASKS_VENV) .tools .local .pytest_cache .mypy_cache .ruff_cache
