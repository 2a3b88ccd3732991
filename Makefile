# Every target creates .venv and installs the project into it on first use (and again when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-unit test-integration lint format bench soak broker-start broker-stop clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(BIN)/ics2 demo

test: install
	$(BIN)/ruff check streams tests bench
	$(BIN)/pytest

test-unit: install
	$(BIN)/pytest tests/unit

test-integration: install
	$(BIN)/pytest tests/integration

lint: install
	$(BIN)/ruff check streams tests bench
	$(BIN)/ruff format --check streams tests bench

format: install
	$(BIN)/ruff format streams tests bench
	$(BIN)/ruff check --fix streams tests bench

bench: install
	$(BIN)/python -m bench

broker-start: install
	$(BIN)/ics2 broker start

broker-stop: install
	$(BIN)/ics2 broker stop

clean:
	-$(BIN)/ics2 broker stop
	rm -rf .state .pytest_cache .ruff_cache .hypothesis
