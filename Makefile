# The two commands a newcomer needs:
#   make dev   - build what is missing, start the local cluster, run llmop with a real tiny model
#   make test  - every test tier (unit, integration, e2e) plus ruff and mypy
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export LLMOP_CACHE ?= $(HOME)/.cache/llmop

.PHONY: dev test venv lint unit integration e2e bench crds chart-docs bins runtimes cluster-up cluster-down clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

lint: venv bins
	$(VENV)/bin/ruff check operator tests hack bench
	$(VENV)/bin/ruff format --check operator tests hack bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/llmop crds --check
	$(VENV)/bin/llmop crds --check --dir charts/llmop/files/crds
	$(PY) hack/chartdocs.py --check
	"$$(hack/build-cluster-bins.sh | sed -n 's/^helm: //p')" lint --strict charts/llmop --kube-version 1.36.3

unit: venv bins  # the chart's tests render it with helm
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
	$(VENV)/bin/pytest -q --durations=25 tests/unit tests/integration tests/e2e

# Benchmarks on a local cluster of their own (LocalCluster "bench"): writes docs/benchmarks.md and
# its plots. Tens of minutes; measures, never asserts.
bench: venv bins
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	$(PY) bench/run.py --make

# The CRDs and the chart's copy of them, generated from the models; then the chart's values
# reference, generated from its schema. Run after changing operator/llmop/models or the chart.
crds: venv
	$(VENV)/bin/llmop crds --write
	$(VENV)/bin/llmop crds --write --dir charts/llmop/files/crds

chart-docs: venv
	$(PY) hack/chartdocs.py

cluster-up: venv bins
	$(PY) hack/localcluster.py up

cluster-down: venv
	hack/dev.sh down

dev: venv bins runtimes
	hack/dev.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
