# Two commands: `make dev` (the whole stack in the sandbox) and `make test` (the suite).
# Both create .venv and install what is missing first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed

.PHONY: install lock compose-check browser dev lint test test-postgres fuzz bench bench-day bench-parked bench-receivables faults clean

install: $(STAMP)

# the versions pinned (with hashes) in requirements-dev.lock, then the project itself without dependencies
$(STAMP): pyproject.toml requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Regenerate the lock files from pyproject.toml with uv: requirements.lock (the image's dependencies)
# and requirements-dev.lock (those and the dev extra: `make install`). Versions already pinned are
# kept while they still fit; `make lock LOCK_ARGS=--upgrade` moves everything to the newest.
UV_VERSION := 0.13.9
LOCK = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command 'make lock' $(LOCK_ARGS)
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/uv --version 2>/dev/null | grep -qx 'uv $(UV_VERSION)' || $(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(LOCK) -o requirements.lock
	$(LOCK) --extra dev -c requirements.lock -o requirements-dev.lock

# docker-compose.yml validated offline with Debian's docker-compose (installed with apt-get if
# missing) and an env file made from .env.example; building and starting it needs a Docker engine
compose-check:
	@command -v docker-compose >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "install docker-compose"; exit 1; }; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq docker-compose; }
	@f=$$(mktemp) && trap 'rm -f "$$f"' EXIT && \
	  sed -E 's/^([A-Z0-9_]+)=$$/\1=compose-check/' .env.example > "$$f" && \
	  docker-compose --env-file "$$f" --profile sandbox config -q && \
	  echo "docker-compose.yml is valid (docker-compose config, every empty value of .env.example filled in)"
	@! docker-compose --env-file .env.example config -q 2>/dev/null || { echo "an .env with empty secrets was accepted"; exit 1; }
	@echo "an .env with empty secrets is refused"

# The app's browser tests drive Debian's Chromium; Chinese text needs a CJK font.
browser:
	@command -v chromium >/dev/null && fc-list :lang=zh | grep -q . || { \
	  command -v apt-get >/dev/null || { echo "install chromium and a CJK font (fonts-noto-cjk)"; exit 1; }; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-noto-cjk; }

dev: install
	$(BIN)/python devconsole.py

# the format, the lint rules and the types (pyproject.toml configures all three); part of `make test`
lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy .

# the suite on TEST_WORKERS processes (pytest-xdist), a test file per process at a time; each
# process has its own Temporal dev server and database. TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: install lint browser
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-postgres: install lint browser
	YHF_TEST_DATABASE_URL=$${YHF_TEST_DATABASE_URL:-postgresql+asyncpg://root@127.0.0.1/test} \
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# schemathesis over every operation with each key and none (also part of `make test`), its figures printed
fuzz: install
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest tests/api/test_fuzz.py -q -s $(PYTEST_ARGS)

# the ratio benchmark (issue 12): raw Temporal, then the product on SQLite (and on PostgreSQL with
# YHF_TEST_DATABASE_URL), at 8 and 32 visits in flight: a table, bench/results/<stamp>.json and .png;
# RATIO_ARGS=... for its options (`python -m bench.ratio --help`)
bench: install
	PATH="$(BIN):$$PATH" $(BIN)/python -m bench.ratio $(RATIO_ARGS)

# a 20,000-visit hospital day compressed into minutes (DAY_ARGS="--minutes 10 --sample 0.02"):
# ack latency by hour, visits settled, each process's memory, visit workflows parked on timers
bench-day: install
	PATH="$(BIN):$$PATH" $(BIN)/python -m bench.hospital_day $(DAY_ARGS)

# the product's load on an empty stack and on one with 5,000 visits parked on their payment timers
bench-parked: install
	PATH="$(BIN):$$PATH" $(BIN)/python -m bench.parked $(PARKED_ARGS)

# receivables by age and by department on 100,000 visits in a throwaway PostgreSQL database: p50/p95, plans, indexes
bench-receivables: install
	YHF_TEST_DATABASE_URL=$${YHF_TEST_DATABASE_URL:-postgresql+asyncpg://root@127.0.0.1/test} \
	$(BIN)/python -m bench.receivables $(BENCH_ARGS)

# kill -9 of the worker, the API and Temporal under load; prints what was lost, doubled or sanctioned
faults: install
	PATH="$(BIN):$$PATH" $(BIN)/python -m bench.faults $(FAULTS_ARGS)

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
