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
	$(PYTHON) -m pytest tests bench/tests

test-unit: setup
	$(PYTHON) -m pytest tests/unit

test-integration: setup
	$(PYTHON) -m pytest tests/integration

clean:
	rm -rf --one-file-system $(VENV) build src/*.egg-info

# Benchmarks against podman (bench/, results in bench/results, report in docs/benchmarks.md).
# As root. podman comes from Debian (setup installs it), matplotlib from PyPI into the venv.
.PHONY: bench bench-quick
bench: setup
	@command -v podman >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman; }
	@$(PYTHON) -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/pip install -q matplotlib
	$(PYTHON) -m bench.run

bench-quick: setup
	@command -v podman >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman; }
	@$(PYTHON) -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/pip install -q matplotlib
	$(PYTHON) -m bench.run --quick
