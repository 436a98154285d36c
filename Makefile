# Two entry points for a fresh Debian 12 machine, as root: `make demo`, `make test`.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python

.PHONY: setup demo test test-unit test-integration clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	$(PYTHON) -m pytest tests

test-unit: setup
	$(PYTHON) -m pytest tests/unit

test-integration: setup
	$(PYTHON) -m pytest tests/integration

clean:
	rm -rf --one-file-system $(VENV) build src/*.egg-info
