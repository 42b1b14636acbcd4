# The project's commands. `make help` lists them; `make run` and `make test` are the two a
# newcomer needs: both install what is missing (uv, Python packages, Kafka jars, the Kubernetes
# binaries, cached under .cache/) before they start anything.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),.cache/uv/bin/uv)
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: help install up down run test lint bench clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.cache/uv/bin/uv:
	python3 -m venv .cache/uv
	.cache/uv/bin/pip install -q uv==$(UV_VERSION)

.venv/.synced: $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml cli/pyproject.toml)
	$(UV) sync --frozen
	@touch $@

install: .venv/.synced ## Install Python packages, fetch Kafka, build the Kubernetes binaries (cached)
	bash deploy/local/fetch-kafka.sh
	bash deploy/local/build-kubernetes.sh

up: install ## Start Kafka and the Kubernetes control plane; settings go to .local/env
	$(PY) -m gitops_localstack up

down: ## Stop exactly what `make up` started
	@if [ -x $(PY) ]; then $(PY) -m gitops_localstack down; else echo "nothing to stop"; fi

run: install ## The stack, all five services and a demo config repo; Ctrl-C stops everything
	$(PY) -m gitops_localstack.demo

test: install ## The whole test suite against real Kafka, Kubernetes and Git
	$(PY) -m pytest $(PYTEST_ARGS)

lint: .venv/.synced ## ruff, mypy --strict and the import contracts
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy libs/*/src services/*/src cli/src tests
	.venv/bin/lint-imports

bench: install ## Benchmarks against baselines measured in the same run; writes docs/performance.md
	$(PY) -m tests.bench

clean: down ## Remove the virtualenv and runtime state (keeps the .cache of built binaries)
	rm -rf .venv .local
