# The two commands a newcomer needs: `make run` and `make test`.
# Everything else here is what those two depend on.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8

.PHONY: run test lint format setup clean-stack

# Python environment from the pinned lock file (reproducible installs).
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

# The main job: the local Kafka + ClickHouse stack, the ClickHouse schema, then
# the producer endpoint, a stream worker and the sink in the foreground.
# Ctrl-C stops all of it.
run: setup
	$(BIN)/eventsieve run

# The whole test suite: unit tests, then integration tests against the real
# Kafka broker and ClickHouse server (provisioned on first use).
test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Regenerate the lock file after changing dependencies in pyproject.toml.
lock: setup
	$(BIN)/uv pip compile pyproject.toml --extra dev -p 3.11 \
		--python-platform x86_64-unknown-linux-gnu -q -o requirements.lock
