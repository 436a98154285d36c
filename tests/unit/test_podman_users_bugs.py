"""Bugs podman users met (issue 15), on the fake host (tests/unit/fakehost.py)."""

from __future__ import annotations

import pytest

from ferry.engine.containers import RunOptions
from ferry.util.errors import UsageError
from tests.unit.fakehost import containers, engine, host  # noqa: F401  (fixtures)


# ---- item 4: several --network options ------------------------------------------

@pytest.mark.parametrize("network", ["blue,red", ("blue", "red"), ("ferry", "blue")])
def test_several_networks_are_all_joined_not_one_silently_dropped(containers, engine, network):
    engine.networks.create("blue", "10.93.0.0/24")
    engine.networks.create("red", "10.94.0.0/24")
    names = [n for text in ([network] if isinstance(network, str) else network) for n in text.split(",")]
    container = containers.create(RunOptions(image="busy:1", name="web", network=network))
    assert [link.network for link in container.config.joined] == names
    assert sorted(r.network for r in engine.networks.reservations()) == sorted(names)


def test_several_networks_with_one_ip_are_refused(containers, engine):
    engine.networks.create("blue", "10.93.0.0/24")
    with pytest.raises(UsageError, match="--ip can only be set for a single network"):
        containers.create(RunOptions(image="busy:1", name="web", network=("ferry", "blue"), ip="10.93.0.9"))
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


# ---- item 10: image creation times with nanoseconds and offsets -----------------------

@pytest.mark.parametrize("created", [
    "2024-01-02T03:04:05.123456789Z",        # podman save, registries (Go's RFC3339Nano)
    "2024-01-02T04:04:05.1+01:00",
    "2024-01-02T08:34:05.123456789+05:30",   # a half-hour offset: its minutes count
    "2024-01-01T22:04:05.123456789-05:00",
    "2024-01-02t03:04:05z",
    "2024-01-02T03:04:05Z",
])
def test_images_reads_rfc3339_with_up_to_nine_fractional_digits_and_any_offset(created):
    from types import SimpleNamespace

    from ferry.cli.images import ImageExtra, human_age, image_json
    image = SimpleNamespace(id="a" * 64, names=("localhost/x:1",), digest="sha256:" + "b" * 64,
                            created=created, size=1)
    assert image_json(image, ImageExtra((), 0))["Created"] == 1704164645      # 2024-01-02T03:04:05Z
    assert human_age(created) != "unknown"


@pytest.mark.parametrize("created", ["", "yesterday", "2024-01-02T03:04:05.1234567890Z", "2024-01-02T03:04:05"])
def test_a_time_that_is_not_rfc3339_is_unknown(created):
    from ferry.cli.images import human_age
    assert human_age(created) == "unknown"


# ---- item 11: where a copy-up reads from ---------------------------------------------

def test_copy_up_reads_inside_the_root_filesystem_whatever_its_symlinks_say(tmp_path):
    from ferry.engine.volumes import path_in_rootfs
    root = tmp_path / "rootfs"
    (root / "srv" / "www").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "var" / "www").symlink_to("/srv/www")          # absolute: from the container's /
    (root / "var" / "up").symlink_to("../../../../etc")     # cannot climb out of the rootfs
    (root / "loop").symlink_to("loop")
    assert path_in_rootfs(str(root), "/var/www") == str(root / "srv" / "www")
    assert path_in_rootfs(str(root), "/var/up") == str(root / "etc")
    assert path_in_rootfs(str(root), "/loop/x") is None


def test_nocopy_is_kept_for_named_volumes_and_refused_for_host_paths():
    from ferry.engine.volumes import VolumeSpec, parse_volume
    spec = parse_volume("data:/www:ro,nocopy")
    assert spec.nocopy and spec.readonly
    assert VolumeSpec.from_dict(spec.to_dict()) == spec
    assert "nocopy" not in parse_volume("data:/www").to_dict()   # older records keep their shape
    with pytest.raises(UsageError, match="nocopy applies to named volumes only"):
        parse_volume("/srv:/www:nocopy")


# ---- item 16: a start whose network is not really there --------------------------------

def test_a_start_whose_process_is_not_on_its_network_is_undone_in_one_line(containers, engine, host,
                                                                           monkeypatch):
    """Launched, but its netns lost its mount or eth0 (seen after /run/netns
    mounts vanished): not reported `Up`; the process goes and so does all the start made."""
    from ferry.engine.listing import CREATED
    from ferry.network import link
    from ferry.util.errors import FerryError
    container = containers.create(RunOptions(image="busy:1", name="web"))
    attached = link.netns_problem
    monkeypatch.setattr(link, "netns_problem", lambda name, ifname, ip, pid=None:
                        "eth0 with 10.90.0.2 is missing" if pid else attached(name, ifname, ip))
    with pytest.raises(FerryError, match=r"has no working network: eth0 with 10.90.0.2 is missing"):
        containers.start("web")
    assert host.leftovers(container.id) == [] and containers.get("web").state == CREATED
