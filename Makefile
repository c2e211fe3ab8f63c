# Two entry points (see README): `make demo` and `make test`. Both create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dard-installed

.PHONY: setup demo test test-ecosystem lint bench bundle clean

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

# --durations: the slowest tests, printed by every run, so that growth past the suite's ~4 minutes on 2 cores shows.
# -n auto: one pytest-xdist worker per core, each running dard on one thread (tests/conftest.py); worksteal, since a
# few end-to-end tests take 10-30 s and the rest well under one. PYTEST_DISABLE_PLUGIN_AUTOLOAD and the plugins
# named with -p: pytest marks every module of an autoloaded plugin's distribution for assertion rewriting, so the
# controller and each worker rewrote all of hypothesis (~70 modules, 1.5-2 s of CPU each, cached nowhere where
# PYTHONDONTWRITEBYTECODE is set); a plugin named is its module alone
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/mypy
	PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $(BIN)/python -m pytest -p xdist.plugin -p xdist.looponfail \
	  -p _hypothesis_pytestplugin -q --durations=15 -n auto --dist worksteal

# The real timm and robustbench (tests marked `ecosystem`, docs/ecosystem.md) in a venv of their own: both import
# torchvision, and PyPI's torchvision does not import beside the CPU torch 2.13.0 of $(VENV) ("operator
# torchvision::nms does not exist"). torch 2.14.1 with torchvision 0.29.1 is a pair that imports and runs on the
# CPU (a CUDA build, about 5.5 GB; this machine has both on disk for Python 3.11, elsewhere pip downloads them).
ECO_VENV ?= .venv-ecosystem
ECO_BIN := $(ECO_VENV)/bin
ECO_STAMP := $(ECO_VENV)/.dard-installed
ECO_TORCH := torch==2.14.1 torchvision==0.29.1

$(ECO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(ECO_VENV)
	# the pair first, then named again beside the extras so that no requirement of theirs (robustbench 1.1.1:
	# torch>=1.7.1, torchvision>=0.8.2, timm==1.0.9) makes pip swap either for another build. No --no-deps is
	# needed: robustbench's pins (timm 1.0.9, gdown 5.1.0, Jinja2 3.1, pyautoattack) resolve from PyPI beside
	# this torch; the extra adds setuptools<82 (robustbench imports pkg_resources), and its `import autoattack`
	# (a git-only package) is met by pyautoattack inside dard (dard/models/robustbench.py)
	$(ECO_BIN)/python -m pip install -q $(ECO_TORCH)
	$(ECO_BIN)/python -m pip install -q -e '.[test,timm,robustbench]' $(ECO_TORCH)
	# robustbench's wheel also installs its own test suite as a top-level package `tests`, which would hide
	# dard's tests/ (a regular package wins over a folder without __init__.py): remove those files, which
	# robustbench never imports, by its own file list
	$(ECO_BIN)/python -c "import importlib.metadata as m, pathlib, shutil; \
	files = [f for f in m.distribution('robustbench').files if f.parts[0] == 'tests']; \
	folders = {pathlib.Path(f.locate()).parents[len(f.parts) - 2] for f in files}; \
	[shutil.rmtree(d) for d in folders if d.is_dir()]"
	# both import (robustbench as dard imports it), or the venv is not made
	$(ECO_BIN)/python -c "import torch, torchvision, timm; from dard.models.robustbench import weight_paths; \
	weight_paths('Standard', 'cifar10', 'Linf'); \
	print('ecosystem venv: torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
	touch $(ECO_STAMP)

# The tests of the real packages (pytest -m ecosystem; in `make test` they skip, naming this target), then dard's
# model and attack tests under this other torch.
test-ecosystem: $(ECO_STAMP)
	DARD_ECOSYSTEM=1 $(ECO_BIN)/python -m pytest -q -m ecosystem
	$(ECO_BIN)/python -m pytest -q tests/test_ecosystem_attacks.py tests/test_ecosystem_robustbench.py \
	  tests/test_ecosystem_timm.py tests/test_ecosystem_wrap.py tests/test_models.py tests/test_user_models.py \
	  tests/test_attacks.py tests/test_attack_calls.py tests/test_attack_mode.py tests/test_attack_rules.py \
	  tests/test_attack_strength.py

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
	rm -rf $(VENV) $(ECO_VENV) runs .pytest_cache .mypy_cache
