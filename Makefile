# The README's two commands: `make run` (main job) and `make test` (test suite).
# Each creates the virtual environment and installs the package on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test data speed clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

data:
	@bash scripts/ensure_fashion_mnist.sh

run: $(STAMP) data
	$(PY) experiments/sweep.py --preset quick

test: $(STAMP)
	$(PY) -m pytest

speed: $(STAMP) data
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) results runs
