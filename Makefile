# platformQ — `make demo` and `make test` are the two commands; everything else is optional.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VERSION ?= 3.11
VENV := .venv
PY := $(VENV)/bin/python
# web3/py-evm/vyper need pycryptodome<4, which clashes with minio's pin: their own venv
CHAIN_VENV := .venv-chain
STAMPS := .make
# lava-dl needs Python 3.10 + torch 2.3 (5.5 GB): its environment lives in a cache keyed by the
# hash of requirements/lava.txt, so a fresh clone (CI) links it instead of reinstalling it.
LAVA_PY310 ?= $(shell p="$$(pyenv root 2>/dev/null)/versions/3.10.13/bin/python"; [ -x "$$p" ] && echo "$$p" || echo 3.10)
PLATFORMQ_CACHE ?= $(HOME)/.cache/platformq
LAVA_ENV := $(PLATFORMQ_CACHE)/venv-lava-$(shell sha256sum requirements/lava.txt | cut -c1-12)
LAVA_VENV := .venv-lava
AIRFLOW_ENV := $(PLATFORMQ_CACHE)/venv-airflow-$(shell sha256sum requirements/airflow.txt | cut -c1-12)
# A real Ethereum JSON-RPC node for the anchoring tests (npm's hardhat: `hardhat node`), pinned; no lock
# file (npm's records download addresses). Cached like the lava env; .test-chain links to it.
HARDHAT_VERSION := 2.29.1
TEST_CHAIN_ENV := $(PLATFORMQ_CACHE)/test-chain-hardhat-$(HARDHAT_VERSION)

export PLATFORMQ_HOME ?= $(CURDIR)/.platformq
export DAGSTER_HOME ?= $(PLATFORMQ_HOME)
# The local (SQLite) instance file is copied into the local home only, and only while DAGSTER_HOME is that home:
# a DAGSTER_HOME set elsewhere (the compose or production instance) is never written by `make`.
LOCAL_INSTANCE := $(if $(filter $(abspath $(PLATFORMQ_HOME)),$(abspath $(DAGSTER_HOME))),$(PLATFORMQ_HOME)/dagster.yaml)
# Compile bytecode at install: every Dagster step process re-imports the libraries.
export UV_COMPILE_BYTECODE := 1
# requirements/main.txt pins the CPU build of torch (`+cpu`), which PyPI does not host. Where PIP_FIND_LINKS names
# a folder holding the wheel (the build machine: no index but PyPI is reachable), uv looks there; otherwise the
# main environment also uses the PyTorch CPU index, each pin taken from whichever index has that version.
export UV_FIND_LINKS := $(PIP_FIND_LINKS)
TORCH_INDEX := $(if $(strip $(PIP_FIND_LINKS)),,--index https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
# Without uv on PATH, `make setup` installs it into its own venv here (no system pip: PEP 668 distributions refuse it).
UV_VENV := $(PLATFORMQ_CACHE)/uv
export PATH := $(PATH):$(UV_VENV)/bin
export UV_LINK_MODE := copy
# Nothing phones home (no internet here anyway; this avoids slow timeouts).
export GX_ANALYTICS_ENABLED := False
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DAGSTER_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

DBT_SOURCES := $(shell find dbt/models dbt/macros dbt/tests -type f 2>/dev/null) dbt/dbt_project.yml dbt/profiles.yml
MANIFEST := dbt/target/manifest.json

.PHONY: help setup services demo test test-production test-fast validate ui bench clean distclean lock

help:
	@echo "make demo       set up, simulate a few trading days, build the whole asset graph"
	@echo "make test       set up and run every test (unit, integration, e2e) + definitions validation"
	@echo "make test-fast  the quick tests only (no graph materialisation)"
	@echo "make test-production  the production profile against real servers on loopback"
	@echo "make ui         Dagster UI + daemon on http://127.0.0.1:3000"
	@echo "make bench      benchmarks, each printed as a ratio against a baseline run alongside"
	@echo "make clean      remove local state (.platformq/, dbt target, landing files)"
	@echo "make lock       recompile requirements/*.txt from requirements/*.in"

## ---- setup (idempotent; a no-op when nothing changed) ----------------------
setup: $(STAMPS)/venv $(STAMPS)/venv-chain $(STAMPS)/venv-lava $(MANIFEST) $(LOCAL_INSTANCE)

$(STAMPS)/uv:
	@command -v uv >/dev/null 2>&1 || { python3 -m venv $(UV_VENV) && $(UV_VENV)/bin/python -m pip install --quiet uv; } \
	  || { echo "uv is missing and could not be installed: install uv, or python3-venv (Debian/Ubuntu)" >&2; exit 1; }
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: $(STAMPS)/uv requirements/main.txt requirements/dev.txt pyproject.toml
	@test -x $(PY) || uv venv --quiet --python $(PYTHON_VERSION) $(VENV)
	uv pip sync --quiet --python $(PY) $(TORCH_INDEX) requirements/main.txt requirements/dev.txt
	uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

$(STAMPS)/venv-chain: $(STAMPS)/uv requirements/chain.txt
	@test -x $(CHAIN_VENV)/bin/python || uv venv --quiet --python $(PYTHON_VERSION) $(CHAIN_VENV)
	uv pip sync --quiet --python $(CHAIN_VENV)/bin/python requirements/chain.txt
	@touch $@

$(STAMPS)/venv-lava: $(STAMPS)/uv requirements/lava.txt
	@if [ ! -f $(LAVA_ENV)/.complete ]; then \
	  rm -rf $(LAVA_ENV) && uv venv --quiet --python $(LAVA_PY310) $(LAVA_ENV) && \
	  UV_LINK_MODE=hardlink uv pip sync --quiet --python $(LAVA_ENV)/bin/python requirements/lava.txt && \
	  touch $(LAVA_ENV)/.complete; fi
	ln -sfn $(LAVA_ENV) $(LAVA_VENV)
	@touch $@

$(STAMPS)/test-chain: infra/test-chain/hardhat.config.js
	@if [ ! -f $(TEST_CHAIN_ENV)/.complete ]; then \
	  command -v npm >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }; \
	  rm -rf $(TEST_CHAIN_ENV) && mkdir -p $(TEST_CHAIN_ENV) && \
	  echo '{"name": "platformq-test-chain", "private": true}' > $(TEST_CHAIN_ENV)/package.json && \
	  npm install --silent --no-audit --no-fund --no-save --no-package-lock --prefix $(TEST_CHAIN_ENV) \
	    hardhat@$(HARDHAT_VERSION) && \
	  touch $(TEST_CHAIN_ENV)/.complete; fi
	cp infra/test-chain/hardhat.config.js $(TEST_CHAIN_ENV)/hardhat.config.js
	ln -sfn $(TEST_CHAIN_ENV) .test-chain
	@mkdir -p $(STAMPS) && touch $@

# A real Airflow 3 for the Airflow integration test (test-production only), cached like the lava env.
$(STAMPS)/venv-airflow: $(STAMPS)/uv requirements/airflow.txt
	@if [ ! -f $(AIRFLOW_ENV)/.complete ]; then \
	  rm -rf $(AIRFLOW_ENV) && uv venv --quiet --python $(PYTHON_VERSION) $(AIRFLOW_ENV) && \
	  UV_LINK_MODE=hardlink uv pip sync --quiet --python $(AIRFLOW_ENV)/bin/python requirements/airflow.txt && \
	  touch $(AIRFLOW_ENV)/.complete; fi
	ln -sfn $(AIRFLOW_ENV) .venv-airflow
	@touch $@

$(MANIFEST): $(STAMPS)/venv $(DBT_SOURCES)
	cd dbt && ../$(VENV)/bin/dbt parse --profiles-dir . --quiet
	@touch $@

$(PLATFORMQ_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(PLATFORMQ_HOME)
	@if [ -f $@ ] && ! grep -q '^# The embedded (local) Dagster instance' $@; then \
	  echo "$@ is not the local instance file: left alone" >&2; else cp dagster.yaml $@; fi

# Production twins the tests use (Postgres from Debian, on 127.0.0.1; moto_server is
# started by the tests themselves). Needs root for apt-get on a fresh machine.
services:
	@bash infra/scripts/test-services.sh up

## ---- the two commands ------------------------------------------------------
demo: setup
	$(VENV)/bin/platformq demo $(DEMO_ARGS)

# Tests run in TEST_WORKERS processes (pytest-xdist), a test file's tests together in one of them (module
# fixtures are built once, tests that share one keep their order); TEST_WORKERS=0 runs them in this process.
# Tests marked `serial` (several tests under one node id: Schemathesis's, which xdist's per-file scheduling
# would run only one of; a test that restarts the shared Postgres) run in one process afterwards, alone; exit
# status 5 is "none selected" (e.g. by PYTEST_ARGS).
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile
MAIN_TESTS := --ignore=tests/services/anchoring --ignore=tests/production

test: setup services $(STAMPS)/test-chain
	$(PY) -m pytest -q $(XDIST) -m "not serial" --timeout=900 --durations=25 $(MAIN_TESTS) $(PYTEST_ARGS)
	$(PY) -m pytest -q -m serial --timeout=900 $(MAIN_TESTS) $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(CHAIN_VENV)/bin/python -m pytest -q -o filterwarnings= --timeout=300 tests/services/anchoring
	$(MAKE) --no-print-directory validate

# The production profile against real servers on loopback: Postgres, Redis, moto (S3), an MLflow
# tracking server, Spark standalone and a two-node Ray cluster (in its own network namespace).
test-production: setup services $(STAMPS)/venv-airflow
	$(PY) -m pytest -q --timeout=1200 tests/production $(PYTEST_ARGS)

test-fast: setup services
	$(PY) -m pytest -q $(XDIST) -m "not slow and not serial" --timeout=300 --ignore=tests/services/anchoring $(PYTEST_ARGS)
	$(PY) -m pytest -q -m "serial and not slow" --timeout=300 --ignore=tests/services/anchoring $(PYTEST_ARGS) || [ $$? -eq 5 ]

validate: setup
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

## ---- everything else -------------------------------------------------------
# `dagster dev` is marked superseded by `dg dev` (the dagster-dg-cli package, not installed here); it is still
# Dagster's documented local server, so that one notice is not printed on every start.
# Schedules and sensors are declared stopped (Dagster's default: a deployment starts nothing it was not told
# to); the local UI starts them all in the local instance first, unless UI_AUTOMATION=off.
UI_AUTOMATION ?= on
ui: setup
ifneq ($(UI_AUTOMATION),off)
	$(VENV)/bin/dagster schedule start --start-all -w workspace.yaml
	$(VENV)/bin/dagster sensor start --start-all -w workspace.yaml
endif
	PYTHONWARNINGS='ignore:Function `dev_command` is superseded' $(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

bench: setup services
	$(PY) tests/bench/run.py $(BENCH_ARGS)

clean:
	rm -rf .platformq dbt/target dbt/logs data/landing .pytest_cache

distclean: clean
	rm -rf $(VENV) $(CHAIN_VENV) $(LAVA_VENV) .venv-airflow .test-chain $(STAMPS)

lock: $(STAMPS)/uv
	UV_FIND_LINKS="$(PIP_FIND_LINKS)" uv pip compile --quiet $(TORCH_INDEX) --python-version $(PYTHON_VERSION) requirements/main.in -o requirements/main.txt
	uv pip compile --quiet --python-version $(PYTHON_VERSION) requirements/dev.in -o requirements/dev.txt
	uv pip compile --quiet --python-version 3.10 requirements/lava.in -o requirements/lava.txt
	uv pip compile --quiet --python-version $(PYTHON_VERSION) requirements/airflow.in -o requirements/airflow.txt
