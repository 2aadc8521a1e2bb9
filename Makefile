# The README's commands. Every target first installs the package (editable, with its dev
# extra) into the Python that `python3` is: your virtualenv when one is active, else the
# user's Python, so that `tiedharness-*` commands land on PATH.
PYTHON ?= python3
# One stamp per interpreter, so switching virtualenvs reinstalls.
PREFIX_ID := $(shell $(PYTHON) -c 'import hashlib, sys; print(hashlib.sha1(sys.prefix.encode()).hexdigest()[:10])')
STAMP := .make/installed-$(PREFIX_ID)
SCRIPTS := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))')

.PHONY: install demo test test-all lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@# pyenv only sees new console scripts after a rehash
	@if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
	@mkdir -p .make && touch $@

# The main job: the parameter budget of every sharing strategy on the demo and base models.
demo: install
	$(SCRIPTS)/tiedharness-params model=small
	$(SCRIPTS)/tiedharness-params model=base vocab_size=37000

# The default test run (about 2 minutes on 2 cores); slow and GPU tests excluded.
test: install
	$(PYTHON) -m pytest

# Everything but GPU tests, slow ones included.
test-all: install
	$(PYTHON) -m pytest -m 'not gpu'

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: install
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

clean:
	rm -rf .make .pytest_cache .ruff_cache
