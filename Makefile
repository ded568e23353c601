# The README's two commands: `make run` (the service) and `make test` (the test suite).
# Each creates the virtual environment and installs what it needs when missing, then acts.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Tests and CI read the MNIST copy beside the checkout; a user's `train` downloads it.
TEST_DATA_DIR ?= $(abspath ../shared/datasets)

.PHONY: run test lint format train evaluate browser clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's Chromium for the browser tests (Playwright's own browser download needs the internet).
browser:
	@command -v chromium >/dev/null || { \
		echo "Installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

## Start everything: a private Redis (unless REDIS_URL is set), one worker, the web server on :8000.
## Options go in RUN_ARGS, e.g. `make run RUN_ARGS="--port 9000 --workers 2"`.
RUN_ARGS ?=
run: $(STAMP)
	DIGITS_DEBUG=$${DIGITS_DEBUG:-1} $(PY) manage.py runstack $(RUN_ARGS)

## Run the whole test suite (real Redis, real Celery worker, real ASGI server, real Chromium).
test: $(STAMP) browser
	DIGITS_DATA_DIR=$${DIGITS_DATA_DIR:-$(TEST_DATA_DIR)} $(PY) -m pytest

## Style (ruff) and the architecture's import contracts (import-linter, in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=. $(VENV)/bin/lint-imports --no-cache

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

train: $(STAMP)
	$(PY) manage.py train

evaluate: $(STAMP)
	$(PY) manage.py evaluate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
