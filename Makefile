# ATOM Partner Portal — the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint format bench install dist clean

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
	$(BIN)/pytest -n auto --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check portal tests
	$(BIN)/ruff format --check portal tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix portal tests
	$(BIN)/ruff format portal tests

## Performance benchmarks over HTTP under gunicorn, beside a bare-Flask floor (not part of `make test`)
# Writes docs/benchmarks/ (results.md, results.json, latency.png). Knobs (tests/benchmarks/settings.py):
# BENCH_SCALE (1), BENCH_SEED (1), BENCH_DATABASE_URL (PostgreSQL instead of SQLite), BENCH_ROUNDS (30),
# BENCH_SECONDS (10), BENCH_WORKERS, BENCH_CLIENTS, BENCH_IMPORT_LINES (200000 at scale 1), BENCH_OUTPUT.
# A quick run: BENCH_SCALE=0.01 BENCH_ROUNDS=5 BENCH_SECONDS=2 make bench
bench: $(STAMP)
	$(BIN)/pytest tests/benchmarks -p no:cacheprovider -o addopts="" -s -q

## The release: a wheel (with templates, static files and migrations) and an sdist in dist/
dist: $(STAMP)
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
