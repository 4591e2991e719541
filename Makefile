# The two commands a newcomer needs: `make run` and `make test`.
# Everything else here is what those two depend on.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SDK_CLIENTS := tests/sdk_clients
UV_VERSION := 0.13.8

.PHONY: run test lint format setup clean-stack

# Python environment from the pinned lock file (reproducible installs), and the
# official JavaScript clients the integration tests drive (tests/sdk_clients,
# pinned by its package-lock.json) where Node.js is installed.
setup: $(VENV)/.installed $(SDK_CLIENTS)/node_modules/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

$(SDK_CLIENTS)/node_modules/.installed: $(SDK_CLIENTS)/package.json $(SDK_CLIENTS)/package-lock.json
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		cd $(SDK_CLIENTS) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else \
		echo "node/npm not found: skipping the npm clients (their integration tests will be skipped)"; \
	fi

# The main job: the local Kafka + ClickHouse stack, the ClickHouse schema, then
# the producer endpoint, a stream worker and the sink in the foreground.
# Ctrl-C stops all of it.
run: setup
	$(BIN)/eventsieve run

# The whole test suite: unit tests, then integration tests against the real
# Kafka broker and ClickHouse server (provisioned on first use).
test: setup
	$(BIN)/pytest

# The gate CI runs before the tests: ruff, then mypy (configured in pyproject.toml).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Regenerate the lock file after changing dependencies in pyproject.toml.
lock: setup
	$(BIN)/uv pip compile pyproject.toml --extra dev -p 3.11 \
		--python-platform x86_64-unknown-linux-gnu -q -o requirements.lock
