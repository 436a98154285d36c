from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest


def _mounts(base: str) -> set[str]:
    with open("/proc/self/mountinfo") as f:
        fields = (line.split() for line in f)
        return {f"{root} {point}" for _, _, _, root, point, *_ in fields if point.startswith(base)}


def _ferry_netns_of_tests(name: str, base: str) -> bool:
    """A ferry-made netns belongs to this test run when its container lives under
    the run's temp dir; other roots (a benchmark running beside) are not ours."""
    short = name.removeprefix("ferry-")[:12]   # ferry-ID, or ferry-ID-ROOTTAG when adopted
    if glob.glob(os.path.join(base, "**", "containers", short + "*"), recursive=True):
        return True
    for lease in glob.glob("/run/ferry/networks/*/leases/*"):
        try:
            with open(lease) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if data.get("container_id", "").startswith(short) and data.get("root", "").startswith(base):
            return True
    return False


# podman (CNI/netavark) names its namespaces netns-<uuid>; the benchmark runs
# podman beside the tests, and neither ferry nor its tests ever use that prefix.
FOREIGN_NETNS_PREFIX = "netns-"


def _netns(base: str) -> set[str]:
    names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return {n for n in names if not n.startswith(FOREIGN_NETNS_PREFIX)
            and (not n.startswith("ferry-") or _ferry_netns_of_tests(n, base))}


@pytest.fixture(autouse=True)
def no_leaks(tmp_path_factory):
    """Every integration test must leave no mount and no netns behind."""
    base = str(tmp_path_factory.getbasetemp())
    mounts, netns = _mounts(base), _netns(base)
    yield
    assert _mounts(base) - mounts == set(), "test leaked mounts"
    assert _netns(base) - netns == set(), "test leaked network namespaces"


@pytest.fixture
def ferry_cli():
    """Run the ferry CLI of this checkout as a real subprocess."""
    def run(*args: str, check: bool = False, env: dict | None = None, prefix: tuple = ()):
        cmd = [*prefix, sys.executable, "-m", "ferry", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, **(env or {})})
        if check and done.returncode != 0:
            raise AssertionError(f"{cmd} failed {done.returncode}: {done.stderr}")
        return done
    return run
