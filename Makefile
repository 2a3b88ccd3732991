# Every target creates .venv and installs the project into it on first use (and again when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install demo test test-unit test-integration lint format bench soak scaling broker-start broker-stop clean browser fuzz

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# DEMO_ARGS="--port 29092" starts the embedded broker on another port (so does ICS2_BOOTSTRAP_SERVERS).
demo: install
	@$(BIN)/ics2 demo $(DEMO_ARGS)

test: install browser
	$(BIN)/ruff check streams tests bench
	$(BIN)/mypy
	$(BIN)/pytest

test-unit: install
	$(BIN)/pytest tests/unit

test-integration: install browser
	$(BIN)/pytest tests/integration

fuzz: install
	ICS2_FUZZ_EXAMPLES=$${ICS2_FUZZ_EXAMPLES:-5000} $(BIN)/pytest tests/unit/test_fuzz_decoders.py -q

lint: install
	$(BIN)/ruff check streams tests bench
	$(BIN)/ruff format --check streams tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format streams tests bench
	$(BIN)/ruff check --fix streams tests bench

# Every baseline and measure of issue 12 in one run on one broker (a few minutes; `--quick` for a smoke run).
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# Not in CI: a day of a large forwarder's bookings through a worker and the simulator (5-10 minutes).
# Issue 12's soak, 50 bookings/s for 10 minutes with the audit on: make soak SOAK_ARGS="--bookings 30000 --rate 50"
soak: install
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# Not in CI: the same bookings through one worker, then two in one group (a few minutes).
scaling: install
	$(BIN)/python -m bench.scaling $(SCALING_ARGS)

broker-start: install
	$(BIN)/ics2 broker start

broker-stop: install
	$(BIN)/ics2 broker stop

# The dashboard test drives Debian's headless Chromium; install it only when missing (CI runs as root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		($(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver)

clean:
	-$(BIN)/ics2 broker stop
	rm -rf .state .pytest_cache .ruff_cache .mypy_cache .hypothesis
