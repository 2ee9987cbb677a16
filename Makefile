# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create the virtual environment .venv on first use; the demo installs
# what it runs (sb_prune with Flower), the tests add their own tools.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.sb_prune_demo_installed
TEST_STAMP := $(VENV)/.sb_prune_test_installed

.PHONY: demo test lint clean

$(BIN)/pip:
	$(PYTHON) -m venv $(VENV)

$(DEMO_STAMP): setup.py | $(BIN)/pip
	$(BIN)/pip install --quiet -e ".[federated]"
	touch $@

$(TEST_STAMP): setup.py | $(BIN)/pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(DEMO_STAMP)
	$(BIN)/sb-prune demo

test: $(TEST_STAMP)
	$(BIN)/ruff check sb_prune recipes tests benchmarks
	$(BIN)/pytest -n 2 --durations=15

lint: $(TEST_STAMP)
	$(BIN)/ruff check sb_prune recipes tests benchmarks
	$(BIN)/ruff format --check sb_prune recipes tests benchmarks

clean:
	rm -rf $(VENV) results data benchmarks/out
