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
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks tools
	$(BIN)/ruff format src tests benchmarks tools

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

# The offline bundle for a GPU node without internet (docs/gpu.md): .bundle/, for CPython $(BUNDLE_PY) on
# manylinux x86_64 by default; BUNDLE_ARGS passes more options (python -m tools.bundle.make_bundle --help).
# The tool has no limits of its own; these are the GPU job system this project uses: a job carries at most
# 64 MiB (the bundle stays under 60), runs 9 minutes (520 s for the job, the rest for transfers) and returns
# at most 8 files of 16 MiB, 64 MiB in all. BUNDLE_DATA: CIFAR-10 to carry (default: the checkout's data/ when it
# has anything, else the development copy beside the checkout where there is one).
BUNDLE_PY ?= 3.12
BUNDLE_DATA ?= $(if $(wildcard data/*),data,$(wildcard ../shared/data/cifar10))
BUNDLE_LIMITS ?= --max-mib 60 --budget 520 --max-files 8 --max-file-mib 16 --max-total-mib 64
bundle: $(STAMP)
	$(BIN)/python -m tools.bundle.make_bundle --python-version $(BUNDLE_PY) $(if $(BUNDLE_DATA),--data $(BUNDLE_DATA)) \
		$(BUNDLE_LIMITS) $(BUNDLE_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
