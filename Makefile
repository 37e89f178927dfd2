# All set-up lives here: `make demo` and `make test` create .venv on a fresh machine.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-all lint bench venv clean fashion-mnist

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Fashion-MNIST (the ood task's first set) is Debian's dataset-fashion-mnist; where apt-get or
# root is missing the tests that need it skip, saying how to get it.
fashion-mnist:
	@test -d $(FASHION_MNIST) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  dataset-fashion-mnist >/dev/null; } || \
	  echo "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): its tests skip"

demo: $(STAMP)
	$(VENV)/bin/hyperbayes run toy-regression --out results/toy-regression

test: $(STAMP) fashion-mnist
	$(VENV)/bin/ruff check hyperbayes tests benchmarks notebooks
	$(PY) -m pytest -q

test-all: $(STAMP) fashion-mnist
	$(PY) -m pytest -q -m ""

bench: $(STAMP)
	$(PY) benchmarks/svi_step.py --out results/benchmarks/svi_step.json
	$(PY) benchmarks/metaprior_step.py --out results/benchmarks/metaprior_step.json
	$(PY) benchmarks/bbh_step.py --out results/benchmarks/bbh_step.json
	$(PY) benchmarks/torchnet.py --out results/benchmarks/torchnet.json
	$(PY) benchmarks/nuts.py --out results/benchmarks/nuts.json

clean:
	rm -rf $(VENV) results
