# Two entry points (see README): `make demo` and `make test`. Both create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dard-installed

.PHONY: setup demo test lint bench bundle clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: the version the tests, benchmarks and committed results were made with, and the
	# CPU build this machine has on disk (pyproject.toml asks for torch>=2.2, which on its own could pull a
	# multi-GB CUDA build from PyPI); installed on its own so dard's install keeps that build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/dard demo --out runs/demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks bundle
	$(BIN)/ruff format --check src tests benchmarks bundle
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks bundle
	$(BIN)/ruff format src tests benchmarks bundle

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

# The offline bundle for a GPU node without internet (docs/gpu.md): .bundle/, for CPython $(BUNDLE_PY) on
# manylinux x86_64 by default; BUNDLE_ARGS passes more options (python bundle/make_bundle.py --help).
BUNDLE_PY ?= 3.12
bundle: $(STAMP)
	$(BIN)/python bundle/make_bundle.py --python-version $(BUNDLE_PY) $(BUNDLE_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache
