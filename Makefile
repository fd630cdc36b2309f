# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extras installed with the package (see pyproject.toml).
EXTRAS ?= dev,train,cluster
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install run test ui lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the pins change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(STAMP)

run: install
	$(BIN)/snakemake --cores all

# Two pytest-xdist workers: most tests wait on one Snakemake job at a time, so two keep both
# cores of a small machine busy (tests/conftest.py sends each module, and every user of the
# shared tiny run, whole to one worker).
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# The MLflow UI on results/mlflow.db, on 127.0.0.1:$(PORT); it prints the URL to open.
PORT ?= 5000
ui: install
	$(BIN)/pneumoflow ui --port $(PORT)

lint: install
	$(BIN)/ruff check src scripts tests benchmarks
	$(BIN)/ruff format --check src scripts tests benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src scripts tests benchmarks
	$(BIN)/snakefmt Snakefile rules

clean:
	rm -rf results logs .snakemake
