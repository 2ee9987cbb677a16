# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create the virtual environment .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sb_prune_installed

.PHONY: demo test lint clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sb-prune demo

test: $(STAMP)
	$(BIN)/ruff check sb_prune recipes tests benchmarks
	$(BIN)/pytest -n 2 --durations=15

lint: $(STAMP)
	$(BIN)/ruff check sb_prune recipes tests benchmarks
	$(BIN)/ruff format --check sb_prune recipes tests benchmarks

clean:
	rm -rf $(VENV) results data benchmarks/out
