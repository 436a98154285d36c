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


# ---- item 9: the image name a container shows ----------------------------------------

@pytest.mark.parametrize("given,shown", [
    ("localhost/other:2", "localhost/other:2"),
    ("other:2", "localhost/other:2"),            # a short name, resolved to its full name
    ("busy:1", "localhost/busy:1"),
    ("ID", "localhost/busy:1"),                   # by ID: its first name, as podman shows
])
def test_a_container_shows_the_image_name_it_was_run_with(containers, engine, given, shown):
    image = engine.images.get("busy:1")
    with engine.db.write() as conn:   # a second name, as a load of a twice-tagged archive gives
        conn.execute("INSERT INTO image_names (name, image_id) VALUES (?, ?)", ("localhost/other:2", image.id))
    container = containers.create(RunOptions(image=image.id if given == "ID" else given, name="web"))
    assert container.config.image == shown
    assert containers.get("web").config.image == shown
