# walletsvc: `make run` and `make test` are all a newcomer needs (see README.md).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export WALLETSVC_DATA_DIR ?= .walletsvc
# Test processes (pytest-xdist): one per core. The suite is CPU-bound (argon2, signing, the
# kernel) and every test owns its database and data directory, so the workers never share state.
# `make test` ends with the 25 slowest tests: where to start when the suite nears CI's 30 min.
PYTEST_WORKERS ?= auto

.PHONY: run test test-fast fuzz lint bench setup clean-data help

help:
	@echo "make run    set up and start walletsvc on the embedded regtest chain (127.0.0.1:8000)"
	@echo "make test   set up and run the whole test suite"
	@echo "make test-fast  the inner loop: SQLite only, without kernel-chain and slow tests"
	@echo "make fuzz   a long contract run: generated requests against the OpenAPI document"
	@echo "make lint   ruff, mypy and the import-linter architecture contracts"
	@echo "make bench  signing, derivation, intake and theft-shield benchmarks (prints figures)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "walletsvc needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/walletsvc migrate
	$(BIN)/walletsvc dev bootstrap
	WALLETSVC_DEVCHAIN_MINE_INTERVAL_S=$${WALLETSVC_DEVCHAIN_MINE_INTERVAL_S:-5} $(BIN)/walletsvc serve

# pytest exits 5 when it collected nothing: that is not a failure of the code under test.
test: $(STAMP)
	@if [ -z "$$WALLETSVC_TEST_POSTGRES_URL" ]; then \
	  echo "note: WALLETSVC_TEST_POSTGRES_URL is not set; PostgreSQL variants will be skipped"; fi
	$(BIN)/pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --durations=25 $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

# The inner loop: service tests on the in-memory chain, SQLite only (PostgreSQL deselected).
test-fast: $(STAMP)
	WALLETSVC_TEST_POSTGRES_URL= $(BIN)/pytest -p no:cacheprovider -n $(PYTEST_WORKERS) -m "not kernel and not slow" -k "not postgresql" $(PYTEST_ARGS); \
	  rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

# The contract test (tests/api/test_contract.py) with many more generated cases per operation
# than `make test` runs; FUZZ_EXAMPLES sets how many, on SQLite (FUZZ_K=postgresql for PostgreSQL).
FUZZ_EXAMPLES ?= 1000
fuzz: $(STAMP)
	WALLETSVC_CONTRACT_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -p no:cacheprovider -n $(PYTEST_WORKERS) tests/api/test_contract.py -k "$${FUZZ_K:-sqlite}" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check walletsvc tests bench alembic
	$(BIN)/ruff format --check walletsvc tests bench alembic
	$(BIN)/mypy walletsvc
	$(BIN)/lint-imports

# Intake measures PostgreSQL when WALLETSVC_TEST_POSTGRES_URL (or WALLETSVC_BENCH_POSTGRES_URL)
# is set, else SQLite; BENCH_INTAKE_ARGS="--backend both" for both, "--quick" for a short run.
bench: $(STAMP)
	$(BIN)/python bench/bench_signing.py
	$(BIN)/python bench/bench_signer_socket.py
	$(BIN)/python bench/bench_intake.py $(BENCH_INTAKE_ARGS)
	$(BIN)/python bench/bench_shield.py

clean-data:
	rm -rf $(WALLETSVC_DATA_DIR)
