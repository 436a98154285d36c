"""Shared test policy: integration tests need root, and each skip states the
probe result that caused it (the same probes `ferry system check` uses)."""

from __future__ import annotations

import os

import pytest

from ferry.host import probes


def require(key: str) -> None:
    """Skip unless host probe `key` is ok; the reason quotes the probe."""
    check = probes.cached(key)
    if check.status != probes.OK:
        pytest.skip(f"host lacks {key}: {check.detail}")


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root (real runc, CRIU, namespaces)")
    for item in items:
        if "integration" in item.nodeid.split(os.sep):
            item.add_marker(skip)
