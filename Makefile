# Two entry points for a fresh Debian 12 machine, as root: `make demo`, `make test`.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python
# Debian's interpreter when there is one, as `make setup` uses.
BASE_PYTHON := $(firstword $(wildcard /usr/bin/python3) python3)

.PHONY: setup venv demo test test-unit test-integration clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

# The light path, for `make test-unit`: .venv with ferry and its Python
# dependencies only (no CRIU build, no pycriu, no root). The unit tests that
# decode CRIU images skip, saying so, without pycriu. `make setup` replaces a
# .venv it did not make with its full one.
venv: $(VENV)/.ferry-venv

$(VENV)/.ferry-venv: pyproject.toml
	@test -x $(PYTHON) || $(BASE_PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

# Everything runs: pycriu's tests must not skip here.
test: setup
	@$(PYTHON) -c 'import pycriu' || { echo "make test: pycriu is not importable from $(VENV)" >&2; exit 1; }
	$(PYTHON) -m pytest tests bench/tests

test-unit: venv
	$(PYTHON) -m pytest tests/unit

test-integration: setup
	$(PYTHON) -m pytest tests/integration

clean:
	rm -rf --one-file-system $(VENV) build src/*.egg-info

# Benchmarks against podman (bench/, results in bench/results, report in docs/benchmarks.md).
# As root. podman comes from Debian (setup installs it), matplotlib from PyPI into the venv.
# `make bench` also runs the migration benchmarks (bench/migration.py: ferry migrate,
# migrate --lazy, podman's export + cp + import and the bare runc + CRIU lazy recipe);
# both run even if the first fails, and the target fails if either did.
.PHONY: bench bench-quick bench-migration bench-migration-quick bench-tools
bench: setup bench-tools
	@status=0; $(PYTHON) -m bench.run || status=$$?; $(PYTHON) -m bench.migration || status=$$?; exit $$status

bench-migration: setup bench-tools
	$(PYTHON) -m bench.migration

bench-migration-quick: setup bench-tools
	$(PYTHON) -m bench.migration --quick

bench-tools:
	@command -v podman >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman; }
	@command -v nft >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables; }
	@$(PYTHON) -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/pip install -q matplotlib

bench-quick: setup bench-tools
	$(PYTHON) -m bench.run --quick
