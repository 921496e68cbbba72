# mammosynth — `make help` lists the targets. Tools and paths are overridable: make test PYTEST_ARGS=-x
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mammosynth-installed
PRESET ?= embedded
SOURCE ?= embedded
OVERRIDES ?= {}
RUN_ARGS ?=
EXTERNAL_SOURCE ?=
PYTEST_ARGS ?=
RUFF := $(VENV)/bin/ruff
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE := 1

.DEFAULT_GOAL := help
.PHONY: help setup run test test-all lint format bench bench-gpu bench-readme compile clean readme

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or pass PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps tf-keras==2.21.0
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

setup: $(STAMP) ## create the virtualenv and install the locked dependencies (once)

run: setup ## run the embedded study end to end through kfp.local (results in runs/latest/); RUN_ARGS='--seeds 0,1 --gan-steps 200', EXTERNAL_SOURCE=folder
	$(PY) -m pipelines run --preset '$(PRESET)' --source '$(SOURCE)' --overrides '$(OVERRIDES)' \
		--external-source '$(EXTERNAL_SOURCE)' $(RUN_ARGS)

readme: setup ## rewrite README.md's results block from runs/latest (metrics.json, run.json)
	$(PY) -m mammosynth.readme --run runs/latest --readme README.md

test: setup ## run the test suite (pytest's "no tests collected" counts as a failure)
	@set +e; $(PY) -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

test-all: setup ## run every test, slow ones included
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup ## ruff lint + format check, hadolint on the Dockerfiles
	$(RUFF) check src components pipelines tests bench
	$(RUFF) format --check src components pipelines tests bench
	@if [ -x $(VENV)/bin/hadolint ]; then $(VENV)/bin/hadolint images/*.Dockerfile; fi

format: setup ## apply ruff's formatter and import sorting
	$(RUFF) check --fix --select I src components pipelines tests bench
	$(RUFF) format src components pipelines tests bench

compile: setup ## compile build/mammosynth-study.yaml, CPU-only (image: REGISTRY/TAG, else ghcr.io/mammosynth/trainer:0.1.0)
	$(if $(REGISTRY),MAMMOSYNTH_TRAINER_IMAGE=$(TRAINER_IMAGE)) $(PY) -m pipelines compile --out build/mammosynth-study.yaml

bench: setup ## benchmarks vs same-run baselines -> runs/bench/bench.json (and a table)
	$(PY) -m bench --out runs/bench/bench.json

bench-gpu: setup ## GPU benchmarks at 224² -> runs/bench/bench-gpu.json (says so and exits 0 without a GPU)
	$(PY) -m bench.gpu --out runs/bench/bench-gpu.json

bench-readme: setup ## regenerate README's benchmark table from runs/bench/bench.json (+ bench-gpu.json)
	$(PY) -m bench.readme --bench runs/bench/bench.json --gpu runs/bench/bench-gpu.json --readme README.md

clean: ## remove build outputs and local pipeline artifacts (keeps runs/ and the venv)
	rm -rf build local_outputs .pytest_cache

-include mk/cluster.mk
