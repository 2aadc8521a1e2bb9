# The README's commands. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo params test test-all lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# The main job: the parameter budget of every sharing strategy on the demo and base models.
demo: install
	$(BIN)/tiedharness-params model=small
	$(BIN)/tiedharness-params model=base vocab_size=37000

params: demo

# The default test run (under 10 minutes on 2 cores); slow and GPU tests excluded.
test: install
	$(BIN)/python -m pytest

# Everything but GPU tests, slow ones included.
test-all: install
	$(BIN)/python -m pytest -m 'not gpu'

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
