# The two commands a newcomer needs:
#   make dev   - build what is missing, start the local cluster, run llmop with a real tiny model
#   make test  - every test tier (unit, integration, e2e) plus ruff and mypy
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export LLMOP_CACHE ?= $(HOME)/.cache/llmop

.PHONY: dev test venv lint unit integration e2e crds bins runtimes cluster-up cluster-down clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check operator tests hack
	$(VENV)/bin/ruff format --check operator tests hack
	$(VENV)/bin/mypy
	$(VENV)/bin/llmop crds --check

unit: venv
	$(VENV)/bin/pytest -q tests/unit

# The control plane and runtimes are built once per pinned version (hack/versions.env).
bins:
	hack/build-cluster-bins.sh

runtimes: venv
	hack/build-runtimes.sh

integration: venv bins runtimes
	$(VENV)/bin/pytest -q tests/integration

e2e: venv bins runtimes
	$(VENV)/bin/pytest -q tests/e2e

test: lint bins runtimes
	$(VENV)/bin/pytest -q tests/unit tests/integration tests/e2e

crds: venv
	$(VENV)/bin/llmop crds --write

cluster-up: venv bins
	$(PY) hack/localcluster.py up

cluster-down: venv
	hack/dev.sh down

dev: venv bins runtimes
	hack/dev.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
