# hjepa: one command for the tests (`make test`) and one for the main job (`make demo`).
# Both create the virtual environment and install everything on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
export PYTHONHASHSEED := 0

.PHONY: install system-deps check test docs readme demo bench results clean

$(STAMP): setup.py settings.ini
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	$(BIN)/jupyter lab build --minimize=False >/dev/null 2>&1 || true
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the browser tests (they skip with a reason where it cannot be installed).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: browser tests will skip"; \
	  else echo "chromium is not installed (needs root and apt-get): browser tests will skip"; fi; }

# Notebooks must be clean and the package in sync with them (what CI checks).
check: install
	@before=$$(cat nbs/*.ipynb nbs/experiments/*.ipynb 2>/dev/null | md5sum); $(BIN)/nbdev_clean; \
	 after=$$(cat nbs/*.ipynb nbs/experiments/*.ipynb 2>/dev/null | md5sum); \
	 [ "$$before" = "$$after" ] || { echo "FAIL: nbdev_clean changed notebooks; they are clean now, commit them"; exit 1; }
	@before=$$(find hjepa -name '*.py' | sort | xargs cat | md5sum); $(BIN)/nbdev_export; \
	 after=$$(find hjepa -name '*.py' | sort | xargs cat | md5sum); \
	 [ "$$before" = "$$after" ] || { echo "FAIL: nbdev_export changed hjepa/; the package was out of sync with nbs/"; exit 1; }
	@echo "notebooks clean, package in sync"

test: install system-deps check
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --durations=15 $(PYTEST_ARGS) tests

# The docs site in _docs/. With Quarto: nbdev_docs on an executed copy of nbs/ (the notebooks are committed
# without outputs, so figures need execution). Without Quarto (as in CI): tools/build_docs.py renders the same
# pages offline (executes the notebooks 2 at a time, skipping #| slow/#| gpu cells; show_doc output, figures,
# sidebar). DOCS_ARGS: e.g. "--only 00_config,08_eval" or "--no-exec" for a quick look.
DOCS_ARGS ?=
NBDEV_YML = $(PY) -c "from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar; refresh_quarto_yml(); nbdev_sidebar.__wrapped__()"
docs: install
	@$(NBDEV_YML)
	@if command -v quarto >/dev/null 2>&1; then \
	  OMP_NUM_THREADS=1 $(PY) tools/build_docs.py --exec-to _exec/nbs $(DOCS_ARGS) && $(BIN)/nbdev_docs --path _exec/nbs; \
	else \
	  echo "quarto not found: building the docs offline with tools/build_docs.py"; \
	  OMP_NUM_THREADS=1 $(PY) tools/build_docs.py $(DOCS_ARGS); \
	fi

# README.md from nbs/index.ipynb: nbdev_readme with Quarto, else the offline markdown export.
readme: install
	@if command -v quarto >/dev/null 2>&1; then $(BIN)/nbdev_readme; else $(PY) tools/build_docs.py --readme; fi

demo: install
	OMP_NUM_THREADS=2 $(PY) -m hjepa.experiments demo

clean:
	rm -rf _docs _proc _exec .pytest_cache

# The train-step benchmark suite (set IJEPA_SRC to a checkout of the official I-JEPA code for the baseline).
bench: install
	$(PY) benchmarks/bench.py --out benchmarks/results.json
