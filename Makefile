# The README's two commands: `make run` (the service) and `make test` (the test suite).
# Each creates the virtual environment and installs what it needs when missing, then acts.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Tests and CI read the MNIST copy beside the checkout; a user's `train` downloads it.
TEST_DATA_DIR ?= $(abspath ../shared/datasets)

.PHONY: run test lint format train evaluate browser fonts clean

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

# The fonts whose letters the not-a-digit head learns and the tests draw (classifier/ml/training/alphabets.py
# names each family's package): Debian's, so tests and `train_detector` see the same alphabets on
# every machine rather than whatever happens to be installed.
FONT_PACKAGES := fonts-dejavu-core fonts-noto-core fonts-nanum fonts-ipafont-gothic fonts-ipafont-mincho
fonts:
	@missing=$$(for p in $(FONT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing the fonts the tests draw letters from: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## Start everything: a private Redis (unless REDIS_URL is set), one worker, the web server on :8000.
## Options go in RUN_ARGS, e.g. `make run RUN_ARGS="--port 9000 --workers 2"`.
RUN_ARGS ?=
run: $(STAMP)
	DIGITS_DEBUG=$${DIGITS_DEBUG:-1} $(PY) manage.py runstack $(RUN_ARGS)

## Run the whole test suite (real Redis, real Celery worker, real ASGI server, real Chromium).
test: $(STAMP) browser fonts
	DIGITS_DATA_DIR=$${DIGITS_DATA_DIR:-$(TEST_DATA_DIR)} $(PY) -m pytest

## Style (ruff), the architecture's import contracts (import-linter) and types (mypy), all
## configured in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=. $(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## The shipped weights' recipe (docs/model.md): the network on MNIST and the training writers' pen
## digits, then its "not a digit" head on real and generated non-digits; at most 40 minutes on two
## CPU cores. The weights land in $(TRAIN_DIR)/digits-cnn.safetensors; `python manage.py models`
## or a copy to classifier/weights/ ships them.
TRAIN_DIR      ?= build/train
TRAIN_DATA_DIR ?= $${DIGITS_DATA_DIR:-$(TEST_DATA_DIR)}
train: $(STAMP)
	$(PY) manage.py train --epochs 12 --architecture digits-cnn-v1 --real-per-batch 32 \
		--page-share 0.3 --number-share 0.15 --threads 2 --no-progress --data-dir $(TRAIN_DATA_DIR) \
		--output $(TRAIN_DIR)/network/digits-cnn.safetensors --serve
	$(PY) manage.py train_detector --real --page-copies 1 --symbols-weight 0.5 \
		--outlier-pool 24000 --drawn-pool 10000 \
		--mnist-digits 30000 --epochs 20 --threads 2 --data-dir $(TRAIN_DATA_DIR) \
		--base-weights $(TRAIN_DIR)/network/digits-cnn.safetensors \
		--output $(TRAIN_DIR)/digits-cnn.safetensors

evaluate: $(STAMP)
	$(PY) manage.py evaluate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
