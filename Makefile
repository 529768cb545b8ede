# Set-up is part of every target: the virtual environment is created on first use.
# torch is installed first, pinned to the CPU wheel, and constraints.txt keeps it pinned, so
# set-up never downloads CUDA packages.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUN_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test test-all lint clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## the main job: a real search on the bundled digits data, then the winner trained and tested
	$(VENV)/bin/nasforge search configs/demo.yaml --run-dir $(RUN_DIR)

test: $(STAMP)  ## the test suite (slow tests excluded; `make test-all` runs them too)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check nasforge tests benchmarks

clean-venv:
	rm -rf $(VENV)
