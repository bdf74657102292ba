# Two commands for a newcomer: `make run` serves, `make test` runs every check.
# Both create the virtualenv and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
PORT ?= 8000
STAMP = $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit postgres sandbox-tools bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	# Bytecode as a wheel install would have it: sandboxed workers see isp read-only and
	# would otherwise compile it on every start (PYTHONDONTWRITEBYTECODE changes nothing here).
	$(BIN)/python -m compileall -q isp
	touch $(STAMP)

## Serve on http://127.0.0.1:8000 (PORT=P: another port) with SQLite and ./data
run: $(STAMP)
	$(BIN)/isp serve --host 127.0.0.1 --port $(PORT)

## Lint, type-check and run the whole suite on SQLite and PostgreSQL
test: $(STAMP) postgres sandbox-tools lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check isp tests plugins

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

## PostgreSQL server binaries from Debian's packages, when missing (the suite starts
## and stops its own throw-away cluster on 127.0.0.1).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "$$ISP_TEST_POSTGRES_URL" ]; then \
		echo "PostgreSQL: found"; \
	elif [ "$$(id -u)" = "0" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	else \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	fi

## bubblewrap, which sandboxed plugins run under, from Debian's packages when missing.
sandbox-tools:
	@if command -v bwrap >/dev/null 2>&1; then \
		echo "bubblewrap: found"; \
	elif [ "$$(id -u)" = "0" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null; \
	else \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null; \
	fi

## Benchmarks (not part of the test suite)
bench: $(STAMP)
	@command -v wrk >/dev/null || { if [ "$$(id -u)" = "0" ]; then apt-get install -y -qq wrk >/dev/null; \
		else sudo apt-get install -y -qq wrk >/dev/null; fi; }
	$(BIN)/python tests/bench/dispatch.py
	$(BIN)/python tests/bench/http.py --postgres
	$(BIN)/python tests/bench/lists.py
	$(BIN)/python tests/bench/sandbox.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
