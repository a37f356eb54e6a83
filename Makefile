# The two commands of the README: `make run` (set up, then the whole pipeline on the embedded data)
# and `make test` (set up, then the test suite). Both create .venv on first use.
# Then `make loop` (monitor, drift verdict, gated retrain) and `make report` (reports/index.html).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test loop report

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile --upgrade pip==25.3
	# torch first and alone: pip takes the CPU build from this machine's disk, nothing else pulls CUDA.
	$(BIN)/pip install --quiet --no-compile torch==2.13.0
	$(BIN)/pip install --quiet --no-compile -c requirements/constraints.txt -e '.[test]'
	# Bytecode on every core, leaving out the packages' own tests and plotly's 15,000 validator modules, which
	# nothing here imports at start (pip compiles everything on one core: 198 s -> 91 + 49 s here). Like pip,
	# pass over the few files that do not compile (Python 2 fixtures): compileall's exit 1 is no failed install.
	$(BIN)/python -m compileall -qq -j 0 -x '/(tests?|plotly/validators)/' $(VENV)/lib > /dev/null || true
	touch $(STAMP)

setup: $(STAMP)

run: setup
	dvc repro

test: setup
	pytest -q

# The continual loop on the live window that split.time.cutoff cuts (2018 of the embedded data), after
# `make run`: the drift monitor and its verdict, a continual fine-tune of the champion gated against it
# (promoted only if better), then the reports index. The deployed loop (`recloop deploy`) retrains only
# on the monitor's drift event; here the retrain always runs, so that the gate is shown.
loop: run
	recloop monitor
	recloop retrain
	recloop report

# reports/index.html: links to every report written so far and the commands of the UIs.
report: setup
	recloop report
