# The README's two commands: `make run` (main job) and `make test` (test suite).
# Each creates the virtual environment and installs the package on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements.lock

.PHONY: run test data speed lock clean mutation

# The exact versions of requirements.lock, every file checked against its hash, then this
# package itself without resolving anything anew (setuptools comes from the lock too).
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Deliberate update of the lock: re-resolves pyproject.toml's dependencies (with the dev
# extra) and the pins in requirements.in to the newest versions they allow, with hashes.
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet 'pip-tools>=7.4'
	CUSTOM_COMPILE_COMMAND="make lock" $(PY) -m piptools compile --upgrade --extra dev --generate-hashes \
		--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml requirements.in

data:
	@bash scripts/ensure_fashion_mnist.sh

# One run per core on a local Ray instance (--workers 1: all in this process, without Ray).
run: $(STAMP) data
	$(PY) experiments/sweep.py --preset quick

test: $(STAMP)
	$(PY) -m pytest

speed: $(STAMP) data
	$(PY) benchmarks/speed.py

# Mutation testing (mutmut, the dev extra) of the methods' modules, one module at a time against the
# tests that name it; writes docs/mutation/<module>.json and docs/testing.md. Hours on 2 cores for the
# whole scope: MODULE=functional/quantization (or a folder: MODULE=functional) runs a part.
mutation: $(STAMP)
	nice -n 15 $(PY) scripts/mutation.py run $(if $(MODULE),--module $(MODULE),)

clean:
	rm -rf $(VENV) results runs .mutation
