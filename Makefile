# Two commands: `make dev` (the whole stack in the sandbox) and `make test` (the suite).
# Both create .venv and install what is missing first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed

.PHONY: install browser dev test test-postgres bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The app's browser tests drive Debian's Chromium; Chinese text needs a CJK font.
browser:
	@command -v chromium >/dev/null && fc-list :lang=zh | grep -q . || { \
	  command -v apt-get >/dev/null || { echo "install chromium and a CJK font (fonts-noto-cjk)"; exit 1; }; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-noto-cjk; }

dev: install
	$(BIN)/python devstack.py

test: install browser
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: install browser
	YHF_TEST_DATABASE_URL=$${YHF_TEST_DATABASE_URL:-postgresql+asyncpg://root@127.0.0.1/test} \
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	PATH="$(BIN):$$PATH" $(BIN)/python -m bench.run

clean:
	rm -rf .data .pytest_cache
