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
SRC := $(wildcard energykit/*.py energykit/*/*.py)
DATA := $(wildcard data/*.csv data/*/*.nc)
# each parameter set renders into its own folder, reports/<params-stem>/, listed by reports/index.html
REPORT_DIR := reports/$(basename $(notdir $(PARAMS)))
# root may run Lab only with --allow-root
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: help setup report test test-all lab measure lint clean bench FORCE

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

report: $(REPORT_DIR)/index.html ## render the notebooks for PARAMS (default params/report.yaml) into reports/<params-stem>/, again when anything they read changed
	@echo "open reports/index.html (this set: $(REPORT_DIR)/index.html)"

# The build records the SHA-256 of the params file and of every file it names (build.json); this stamp is
# touched when `energykit report --check-stale` says they changed, wherever those files live (make's own
# times see only data/). It only reads and touches the stamp, so it runs under make -n too (+).
REPORT_STAMP := reports/.$(notdir $(REPORT_DIR)).inputs
$(REPORT_STAMP): FORCE | $(VENV)/.core
	+@mkdir -p reports
	+@$(BIN)/python -m energykit report --params $(PARAMS) --out $(REPORT_DIR) --check-stale || touch $@
	+@[ -e $@ ] || touch -d @0 $@

# one process: loads and fits once, runs every notebook in one kernel; reruns when anything it reads changed
$(REPORT_DIR)/index.html: $(NOTEBOOKS) $(PARAMS) $(SRC) $(DATA) $(REPORT_STAMP) | $(VENV)/.core
	$(BIN)/python -m energykit report --params $(PARAMS) --out $(REPORT_DIR) --rendered-by "make report PARAMS=$(PARAMS)"

# make test: the fast suite (≤ 5 min on 2 cores, no wall-clock limits): every test but the slow end-to-end
# and fault-injection ones, of which one representative each (marker smoke) stays. make test-all: every test (CI).
test: $(VENV)/.dev ## run the fast tests (slow end-to-end ones: one representative each)
	$(BIN)/python -m pytest -q -m "not slow or smoke"

test-all: $(VENV)/.dev ## run every test, the slow end-to-end and fault-injection ones included (CI)
	$(BIN)/python -m pytest -q

bench: $(VENV)/.dev ## time the fits and the default report build (benchmarks/; prints both)
	$(BIN)/python benchmarks/bench_fit.py

# jupytext's default viewer: double-clicking a notebook's .py source opens it as a notebook
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
$(LAB_OVERRIDES): jupyter/lab-overrides.json | $(VENV)/.core
	@mkdir -p $(dir $@) && cp $< $@

lab: $(VENV)/.core $(LAB_OVERRIDES) ## open JupyterLab on the notebooks (double-click a .py source: it opens as a notebook)
	@echo "JupyterLab: open the http://127.0.0.1:... URL it prints below (with its token); Ctrl-C stops it"
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ALLOW_ROOT) $(LAB_ARGS)

measure: $(VENV)/.core ## run a measurement sweep: make measure PARAMS=params/measure_cpu_tiny.yaml
	@case "$(PARAMS)" in params/report.yaml) echo "make measure needs PARAMS=params/measure_<name>.yaml" >&2; exit 2;; esac
	$(BIN)/python -m energykit measure $(PARAMS)

lint: $(VENV)/.core ## check the notebook sources (jupytext scripts, defaults = params/report.yaml, no outputs)
	$(BIN)/python tools/check_notebooks.py notebooks/*.py

clean: ## remove reports and caches (keeps .venv)
	rm -rf reports .pytest_cache .benchmarks
	find . -name __pycache__ -not -path './.venv/*' -exec rm -rf {} +
