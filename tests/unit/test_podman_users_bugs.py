"""Bugs podman users met (issue 15), on the fake host (tests/unit/fakehost.py)."""

from __future__ import annotations

import pytest

from ferry.engine.containers import RunOptions
from ferry.util.errors import UsageError
from tests.unit.fakehost import containers, engine, host  # noqa: F401  (fixtures)


# ---- item 4: several --network options ------------------------------------------

@pytest.mark.parametrize("network", ["blue,red", ("blue", "red"), ("ferry", "blue")])
def test_several_networks_are_refused_not_one_silently_dropped(containers, engine, network):
    engine.networks.create("blue", "10.93.0.0/24")
    engine.networks.create("red", "10.94.0.0/24")
    with pytest.raises(UsageError, match=r"joining several networks \(.*\) is not supported yet"):
        containers.create(RunOptions(image="busy:1", name="web", network=network))
    assert containers.list(all_states=True) == []
    assert engine.networks.reservations() == []


def test_the_same_network_named_twice_is_one(containers, engine):
    engine.networks.create("blue", "10.93.0.0/24")
    container = containers.create(RunOptions(image="busy:1", name="web", network=("blue", "blue")))
    assert container.config.network == "blue"
