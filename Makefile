# energykit — `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PARAMS ?= params/report.yaml
# CPU build of PyTorch for the tests of the `hf` engine; on a GPU machine see environment-gpu.yml.
TORCH_SPEC ?= torch==2.13.0

NOTEBOOKS := $(wildcard notebooks/0[2-9]_*.py)
REPORTS := $(patsubst notebooks/%.py,reports/%.html,$(NOTEBOOKS))
SRC := $(wildcard energykit/*.py energykit/*/*.py)
DATA := $(wildcard data/*.csv data/*/*.nc)

.PHONY: help setup report test test-all lab measure lint clean bench

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.core
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[dev,hf,slurm]'
	@touch $@

setup: $(VENV)/.core ## create .venv and install energykit (core)

report: $(REPORTS) ## execute the analysis notebooks and render reports/index.html
	@echo "open reports/index.html"

reports/%.html: notebooks/%.py $(PARAMS) $(SRC) $(DATA) | $(VENV)/.core
	$(BIN)/python -m energykit report --params $(PARAMS) --only $*

# make test: the fast suite (≤ 5 min on 2 cores, no wall-clock limits): every test but the slow end-to-end
# and fault-injection ones, of which one representative each (marker smoke) stays. make test-all: every test (CI).
test: $(VENV)/.dev ## run the fast tests (slow end-to-end ones: one representative each)
	$(BIN)/python -m pytest -q -m "not slow or smoke"

test-all: $(VENV)/.dev ## run every test, the slow end-to-end and fault-injection ones included (CI)
	$(BIN)/python -m pytest -q

bench: $(VENV)/.dev ## time the fits and the report build (benchmarks/)
	$(BIN)/python benchmarks/bench_fit.py

lab: $(VENV)/.core ## open JupyterLab on the notebooks (the .py sources, paired with .ipynb by jupytext)
	$(BIN)/jupyter lab notebooks/

measure: $(VENV)/.core ## run a measurement sweep: make measure PARAMS=params/measure_cpu_tiny.yaml
	@case "$(PARAMS)" in params/report.yaml) echo "make measure needs PARAMS=params/measure_<name>.yaml" >&2; exit 2;; esac
	$(BIN)/python -m energykit measure $(PARAMS)

lint: $(VENV)/.core ## check the notebook sources (jupytext scripts, defaults = params/report.yaml, no outputs)
	$(BIN)/python tools/check_notebooks.py notebooks/*.py

clean: ## remove reports and caches (keeps .venv)
	rm -rf reports .pytest_cache .benchmarks
	find . -name __pycache__ -not -path './.venv/*' -exec rm -rf {} +
