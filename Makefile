# All set-up lives here: `make demo` and `make test` create .venv on a fresh machine.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
# laplace-torch (the Laplace approximation's curvature) and its curvature backends, installed
# without their declared dependencies: those ask for torchvision, with which pip replaces the
# pinned CPU torch by a CUDA build of several GB; no code path used here imports torchvision.
LAPLACE_SPEC ?= laplace-torch==0.3 curvlinops-for-pytorch==3.0.1 backpack-for-pytorch==1.7.1 \
	asdfghjkl==0.1a4 torchmetrics==1.9.0 lightning-utilities==0.15.3 linear_operator==0.6.1 \
	einconv==0.1.0 einops==0.8.2 unfoldNd==0.2.3
# pytest-xdist workers for `make test` (one per core of CI's 2-core machine; each uses one
# torch thread, see tests/conftest.py)
TEST_WORKERS ?= 2
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-all lint bench venv clean fashion-mnist chromium docs notebooks

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps $(LAPLACE_SPEC)
	touch $(STAMP)

venv: $(STAMP)

# Fashion-MNIST (the ood task's first set) is Debian's dataset-fashion-mnist; where apt-get or
# root is missing the tests that need it skip, saying how to get it.
fashion-mnist:
	@test -d $(FASHION_MNIST) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  dataset-fashion-mnist >/dev/null; } || \
	  echo "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): its tests skip"

# The docs test opens the built site in Debian's chromium (headless); where apt-get or root is
# missing that test skips, saying how to get it.
chromium:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  chromium >/dev/null; } || \
	  echo "chromium not installed (apt-get install chromium): the browser test skips"

# The documentation site (Sphinx): docs/_build/html/index.html. Warnings are errors.
docs: $(STAMP)
	rm -rf docs/_build
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs built: docs/_build/html/index.html"

# Runs the four notebooks at full settings and saves them with their outputs (commit them).
notebooks: $(STAMP)
	$(PY) notebooks/sync.py --execute

demo: $(STAMP)
	$(VENV)/bin/hyperbayes run toy-regression --out results/toy-regression

test: $(STAMP) fashion-mnist chromium
	$(VENV)/bin/ruff check hyperbayes tests benchmarks notebooks docs/conf.py docs/_ext
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

test-all: $(STAMP) fashion-mnist chromium
	$(PY) -m pytest -q -m "" -n $(TEST_WORKERS) --dist loadgroup

bench: $(STAMP)
	$(PY) benchmarks/svi_step.py --out results/benchmarks/svi_step.json
	$(PY) benchmarks/metaprior_step.py --out results/benchmarks/metaprior_step.json
	$(PY) benchmarks/bbh_step.py --out results/benchmarks/bbh_step.json
	$(PY) benchmarks/torchnet.py --out results/benchmarks/torchnet.json
	$(PY) benchmarks/nuts.py --out results/benchmarks/nuts.json
	$(PY) benchmarks/baselines.py --out results/benchmarks/baselines.json
	$(PY) benchmarks/scale.py --out results/benchmarks/scale.json

clean:
	rm -rf $(VENV) results docs/_build docs/_generated
