from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {" ".join(line.split()[3:5]) for line in f}


def _netns() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


@pytest.fixture(autouse=True)
def no_leaks():
    """Every integration test must leave no mount and no netns behind."""
    mounts, netns = _mounts(), _netns()
    yield
    assert _mounts() - mounts == set(), "test leaked mounts"
    assert _netns() - netns == set(), "test leaked network namespaces"


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
