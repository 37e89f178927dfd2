# All set-up lives here: `make demo` and `make test` create .venv on a fresh machine.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench venv clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hyperbayes run toy-regression --out results/toy-regression

test: $(STAMP)
	$(VENV)/bin/ruff check hyperbayes tests benchmarks notebooks
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

bench: $(STAMP)
	$(PY) benchmarks/svi_step.py --out results/benchmarks/svi_step.json
	$(PY) benchmarks/metaprior_step.py --out results/benchmarks/metaprior_step.json
	$(PY) benchmarks/bbh_step.py --out results/benchmarks/bbh_step.json

clean:
	rm -rf $(VENV) results
