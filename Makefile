# fednode: every check goes through `make test`; the main job is `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PY_SOURCES := node ledger protocols/generate.py tests seeds deploy
MYPY_SOURCES := node ledger protocols/generate.py deploy/healthcheck.py

.PHONY: help setup demo test lint typecheck protocheck unit integration multihost bench proto clean

help: ## Show this help.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install fednode with its dev tools.

demo: $(STAMP) ## Run the whole federation demo from seeds/ on this machine.
	$(BIN)/fednode demo --workdir demo-run

lint: $(STAMP) ## ruff lint and format check.
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)

typecheck: $(STAMP) ## mypy --strict on the hand-written code.
	$(BIN)/mypy --strict $(MYPY_SOURCES)

protocheck: $(STAMP) ## Fail if the committed protobuf code differs from the protos.
	$(BIN)/python protocols/generate.py --check

proto: $(STAMP) ## Regenerate the protobuf code.
	$(BIN)/python protocols/generate.py

test: lint typecheck protocheck ## Lint, type-check, proto drift check, then every test but benchmarks.
	$(BIN)/pytest -m "not benchmark" --timeout=600 -q --durations=15

unit: $(STAMP) ## Unit tests only.
	$(BIN)/pytest tests/unit -q

integration: $(STAMP) ## Integration tests with real node processes.
	$(BIN)/pytest tests/integration -q

multihost: $(STAMP) ## Network-namespace tests (needs root).
	$(BIN)/pytest tests/multihost -q

bench: $(STAMP) ## Benchmarks: medians and ratios, printed, never pass/fail on time.
	$(BIN)/pytest tests/benchmarks -m benchmark -s -q

clean: ## Remove the virtualenv, caches and demo output.
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo-run
