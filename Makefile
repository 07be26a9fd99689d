# Two commands on a fresh clone: `make run` (set-up + quickstart job), `make test` (set-up + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test unit integration test-cluster bench bench-tune bench-retrieval zoo lint clean

setup: $(STAMP)

# Reinstall only when pyproject.toml changed; pip's output goes to a log, shown on failure.
$(STAMP): pyproject.toml
	@echo "installing reprlab and its dependencies into $(VENV) (a few minutes; log: $(VENV)/install.log)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -e '.[dev]' > $(VENV)/install.log 2>&1 || { tail -30 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

run: $(STAMP)
	@$(BIN)/reprlab ingest mnist5k
	@$(BIN)/reprlab run jobs/quickstart.yaml

test: $(STAMP)
	$(BIN)/ruff check platform tests benchmarks
	$(BIN)/ruff format --check platform tests benchmarks
	$(BIN)/pytest -q --durations=25 tests

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

test-cluster: $(STAMP)
	$(BIN)/pytest -q -m cluster tests/cluster

bench: $(STAMP)
	$(BIN)/python benchmarks/data_pipeline.py
	$(BIN)/python benchmarks/view_stream.py
	$(BIN)/python benchmarks/train_overhead.py
	$(BIN)/python benchmarks/global_bn.py
	$(BIN)/python benchmarks/worker_imports.py

# ASHA against a full grid of 12 SimCLR temperatures, in epochs (~30 minutes on 2 cores).
bench-tune: $(STAMP)
	$(BIN)/python benchmarks/tune_efficiency.py

# Every method's mnist5k job end to end (~2 hours on 2 cores); rewrites the README's zoo table.
zoo: $(STAMP)
	$(BIN)/python benchmarks/zoo.py --readme README.md

# Glyphs retrieval of unseen characters, every metric-learning loss over 3 seeds (~2-3 hours).
bench-retrieval: $(STAMP)
	$(BIN)/python benchmarks/retrieval_glyphs.py --readme README.md

lint: $(STAMP)
	$(BIN)/ruff check platform tests benchmarks
	$(BIN)/ruff format --check platform tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
