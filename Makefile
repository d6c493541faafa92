# One-command entry points for a fresh machine (see README.md).
#   make run    set up .venv and start `scalemon run --depth 4 --backend gloo`
#   make test   set up .venv, lint (ruff, import-linter, mypy) and run the test suite
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test test-long lint pytest fuzz bench clean

setup: $(STAMP)

# torch is installed first, pinned, so the package's `torch>=2.4` requirement is
# already met and pip never resolves a fresh torch with its CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/scalemon run --depth 4 --backend gloo

# The checkout is the package: scalemon/tui and scalemon/probes are symlinks to tui/ and
# probes/, so import-linter and mypy read the source tree itself.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint pytest

# The suite plus the long cases (tests marked `long`: more bucket shapes for sync's truth).
test-long: lint
	$(BIN)/pytest -q -m ""

# The property-based tests with fresh random examples, many of them (tests/conftest.py);
# `make fuzz FUZZ_EXAMPLES=50000` to search longer. `make test` replays a fixed set.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),5000) $(BIN)/pytest -q -p no:cacheprovider \
		$(shell grep -l '^from hypothesis' tests/*/test_*.py)

# One table of every figure (bench/suite.py); `make bench QUICK=1` for a short smoke run.
bench: $(STAMP)
	$(BIN)/pip install -q -e ".[test,bench]"
	$(BIN)/python bench/suite.py $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) build *.egg-info
