# Two commands on a fresh clone: `make run` (set-up + quickstart job), `make test` (set-up + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test unit integration bench lint clean

setup: $(STAMP)

# Reinstall only when pyproject.toml changed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/reprlab ingest mnist5k
	$(BIN)/reprlab run jobs/quickstart.yaml

test: $(STAMP)
	$(BIN)/ruff check platform tests benchmarks
	$(BIN)/ruff format --check platform tests benchmarks
	$(BIN)/pytest -q tests

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/python benchmarks/data_pipeline.py

lint: $(STAMP)
	$(BIN)/ruff check platform tests benchmarks
	$(BIN)/ruff format --check platform tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
