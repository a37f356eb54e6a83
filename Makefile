# The two commands of the README: `make run` (set up, then the whole pipeline on the embedded data)
# and `make test` (set up, then the test suite). Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	# torch first and alone: pip takes the CPU build from this machine's disk, nothing else pulls CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	dvc repro

test: setup
	pytest -q
