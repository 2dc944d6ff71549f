# audiolime — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
MODEL_DIR ?= models
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint install models proto bench images images-test clean

## Set everything up (venv with only what the demo needs, models) and explain a real song.
demo: $(VENV)/.demo
	$(BIN)/audiolime demo --model-dir $(MODEL_DIR) --out out/demo

## Set everything up and run the test suite.
test: models
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The fast tier: unit and in-process tests (no models, servers, browser or chart tools), < 2 min.
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## Linters: ruff (style, imports, bugbear) and mypy (types), as CI runs them.
lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench scripts deploy
	$(BIN)/mypy

install: $(VENV)/.installed

# The demo's environment: the package and its `ml` extra (TensorFlow, Spleeter), no dev tools, no
# PyTorch; `pip check` is clean. The development install below is a superset and satisfies it too.
$(VENV)/.demo: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[ml]'
	$(BIN)/python -m pip check
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip 'setuptools>=77.0.3'
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@# PyTorch only converts the FCN checkpoint (never serves). TF 2.12 declares typing_extensions<4.6
	@# while torch 2.13 needs >=4.10; both work with 4.1x (the test suite covers TF and torch), so
	@# torch goes in without dependency resolution, and `pip check` here reports exactly that one
	@# conflict (tensorflow's typing-extensions cap); the demo's environment has none.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps torch==2.13.0 filelock fsspec 'typing_extensions>=4.10'
	touch $@ $(VENV)/.demo

## Download (pinned, checksummed) and export the pretrained models into $(MODEL_DIR).
models: $(VENV)/.installed
	$(BIN)/audiolime setup --model-dir $(MODEL_DIR)

## Regenerate the Python gRPC stubs from proto/ (tests fail when they drift).
proto: $(VENV)/.installed
	$(BIN)/python -m audiolime.protogen

bench: models
	$(BIN)/python bench/bench_tagger.py --model-dir $(MODEL_DIR)
	$(BIN)/python bench/bench_explain.py --model-dir $(MODEL_DIR)

## Every image (explainer, models, tagger, separator) with podman on a Debian machine without a
## registry: installs podman/runc/debootstrap, makes local Debian and Python bases, builds each
## Dockerfile unchanged (deploy/oci/images.py). Docker elsewhere: make -C deploy images.
images:
	nice -n 15 python3 deploy/oci/images.py

## Build every image, then run the rendered chart's pods from them and check them end to end
## (deploy/oci/stack.py: health, the init container, non-root/read-only, a real explanation, helm
## test, graceful stop). Log: out/oci/images-test.log.
images-test: $(VENV)/.installed
	mkdir -p out/oci
	set -o pipefail; { nice -n 15 python3 deploy/oci/images.py && $(BIN)/python deploy/oci/stack.py; } 2>&1 | tee out/oci/images-test.log

clean:
	rm -rf $(VENV) out .pytest_cache node_modules
