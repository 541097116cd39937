# ATOM Partner Portal — the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint format bench install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	@touch $(STAMP)

install: $(STAMP)

## Start the portal with demo data, demo identity provider and mail sink on http://127.0.0.1:5000
run: $(STAMP)
	$(BIN)/python -m portal.dev.server

## Lint, type-check, and run the whole test suite
test: lint
	$(BIN)/pytest -n auto

lint: $(STAMP)
	$(BIN)/ruff check portal tests
	$(BIN)/ruff format --check portal tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix portal tests
	$(BIN)/ruff format portal tests

## Performance benchmarks (not part of `make test`)
bench: $(STAMP)
	$(BIN)/pytest tests/benchmarks -p no:cacheprovider -o addopts="" -s

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
