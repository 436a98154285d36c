"""The typed container config and the records an archive carries: every
instance is valid, and parsing refuses anything else with ValueError."""

from __future__ import annotations

import json

import pytest

from ferry.engine.config import (PODMAN_PROFILE, ArchivedContainer, ContainerConfig, check_network_status,
                                 parse_deleted_files)
from ferry.engine.volumes import VolumeSpec
from ferry.network import nft
from ferry.network.ports import PortMapping
from ferry.util import strictjson

CONFIG = ContainerConfig(
    image="localhost/redis:latest", image_digest="sha256:" + "a" * 64, args=("redis-server", "--save", ""),
    command=("--save", ""), env=("PATH=/usr/bin", "EMPTY="), workdir="/data", user="redis:redis",
    hostname="cache-1", network="ferry", ip="10.90.0.7", mac="02:42:0a:5a:00:07",
    ports=(PortMapping("", 6379, 6379, "tcp"), PortMapping("127.0.0.1", 0, 53, "udp")),
    volumes=(VolumeSpec("volume", "data", "/data"), VolumeSpec("bind", "/srv/conf", "/etc/redis", True)),
    stop_signal="SIGTERM", rm=False, tty=False, interactive=False)
ARCHIVED = ArchivedContainer("c" * 64, "cache", "d" * 64, "2026-11-29T15:00:00.123456789Z", CONFIG)


def test_round_trips_through_json():
    assert ContainerConfig.from_json(CONFIG.to_json()) == CONFIG
    assert ArchivedContainer.from_json(ARCHIVED.to_json()) == ARCHIVED
    check_network_status(network_status_json(CONFIG), CONFIG)
    assert CONFIG.binds == (VolumeSpec("bind", "/srv/conf", "/etc/redis", True),)
    assert CONFIG.named_volumes == (VolumeSpec("volume", "data", "/data"),)


def test_a_spec_profile_is_kept_only_when_it_is_not_ferry_s_own():
    """Records written before profiles, and ferry's own containers, have no "profile" key."""
    assert "profile" not in CONFIG.to_dict()
    podman_s = CONFIG._replace(profile=PODMAN_PROFILE)
    assert podman_s.to_dict()["profile"] == {"cgroupns": False, "no_new_privileges": False, "shm_dir": True,
                                             "containerenv": True}
    assert ContainerConfig.from_json(podman_s.to_json()) == podman_s


@pytest.mark.parametrize("profile, needle", [
    ({"cgroupns": 0, "no_new_privileges": False, "shm_dir": True, "containerenv": True}, "cgroupns"),
    ({"cgroupns": False, "no_new_privileges": False, "shm_dir": True}, "lacks containerenv"),
    ({"cgroupns": False, "no_new_privileges": False, "shm_dir": True, "containerenv": True, "privileged": True},
     "unknown privileged"),
    ("podman", "must be an object"),
])
def test_a_forged_profile_is_refused(profile, needle):
    with pytest.raises(ValueError, match=needle):
        ContainerConfig.from_dict(_config_with(profile=profile))


def _config_with(**changes) -> dict:
    data = json.loads(CONFIG.to_json())
    data.update(changes)
    return data


@pytest.mark.parametrize("changes, needle", [
    ({"privileged": True}, "unknown privileged"),
    ({"ip": "10.90.0.300"}, "ip"),
    ({"ip": "10.90.0.7\n"}, "ip"),
    ({"mac": "02:42:0A:5A:00:07"}, "mac"),
    ({"mac": "02:42:0a:5a:00:07\n"}, "mac"),
    ({"hostname": "a b"}, "hostname"),
    ({"hostname": "x" * 65}, "hostname"),
    ({"network": "../n"}, "network"),
    ({"network": "ferry\n"}, "network"),
    ({"args": []}, "args must not be empty"),
    ({"args": "sh"}, "args must be a list"),
    ({"args": ["sh", 1]}, "args"),
    ({"args": ["sh\0-c"]}, "NUL"),
    ({"env": ["=x"]}, "KEY=VALUE"),
    ({"env": ["NOVALUE"]}, "KEY=VALUE"),
    ({"workdir": "data"}, "workdir"),
    ({"user": "root; rm -rf /"}, "user"),
    ({"stop_signal": "SIGTERM\nx"}, "stop_signal"),
    ({"rm": 1}, "rm must be true or false"),
    ({"image_digest": "sha256:abc"}, "image_digest"),
    ({"image": "-rf"}, "image"),
    ({"ports": [{"host_ip": "", "host_port": 80, "container_port": 80, "protocol": "tcp dport 1\nadd"}]},
     "ports[0]: protocol must be tcp or udp"),
    ({"ports": [{"host_ip": "", "host_port": 80, "container_port": 80, "protocol": "tcp", "x": 1}]},
     "ports[0]: port has unknown x"),
    ({"ports": [{"host_ip": "0.0.0.0", "host_port": 80, "container_port": 80, "protocol": "tcp"}]}, "host_ip"),
    ({"ports": [{"host_ip": "", "host_port": 80.0, "container_port": 80, "protocol": "tcp"}]}, "host_port"),
    ({"ports": [{"host_ip": "", "host_port": 80, "container_port": 0, "protocol": "tcp"}]}, "container_port"),
    ({"ports": [{"host_ip": "", "host_port": 80, "container_port": 80, "protocol": "tcp"}] * 1025}, "at most"),
    ({"volumes": [{"kind": "volume", "source": "../x", "destination": "/d", "readonly": False}]}, "volume name"),
    ({"volumes": [{"kind": "bind", "source": "/a/../etc", "destination": "/d", "readonly": False}]}, "normalised"),
    ({"volumes": [{"kind": "bind", "source": "etc", "destination": "/d", "readonly": False}]}, "absolute"),
    ({"volumes": [{"kind": "bind", "source": "/etc", "destination": "/d/../x", "readonly": False}]}, "destination"),
    ({"volumes": [{"kind": "tmpfs", "source": "/etc", "destination": "/d", "readonly": False}]}, "kind"),
    ({"volumes": [{"kind": "bind", "source": "/etc", "destination": "/d", "readonly": "no"}]}, "readonly"),
    ({"volumes": [{"kind": "bind", "source": "/a", "destination": "/d", "readonly": False},
                  {"kind": "bind", "source": "/b", "destination": "/d", "readonly": False}]}, "same destination"),
])
def test_a_forged_field_is_refused(changes, needle):
    with pytest.raises(ValueError) as caught:
        ContainerConfig.from_dict(_config_with(**changes))
    assert needle in str(caught.value), caught.value


def test_a_missing_key_is_refused():
    data = _config_with()
    del data["ports"]
    with pytest.raises(ValueError, match="lacks ports"):
        ContainerConfig.from_dict(data)


@pytest.mark.parametrize("text, needle", [
    ('{"id": 1, "id": 2}', "appears twice"),
    ('{"a": NaN}', "NaN is not a number"),
    ("[" * 100000, "nested too deeply"),
    (b"\xff\xfe", "not"),
    ("{", "not valid JSON"),
])
def test_strict_json(text, needle):
    with pytest.raises(ValueError) as caught:
        strictjson.loads(text)
    assert needle in str(caught.value)


@pytest.mark.parametrize("changes, needle", [
    ({"name": "../../../../tmp/x"}, "name"),
    ({"name": "x" * 300}, "name"),
    ({"id": "C" * 64}, "id must be"),
    ({"created_at": "2026-02-31T00:00:00Z"}, "day is out of range"),
    ({"extra": 1}, "unknown extra"),
])
def test_config_dump_is_parsed_strictly(changes, needle):
    data = json.loads(ARCHIVED.to_json())
    data.update(changes)
    with pytest.raises(ValueError) as caught:
        ArchivedContainer.from_json(json.dumps(data))
    assert needle in str(caught.value)


def test_network_status_must_agree_with_config_dump():
    status = json.loads(network_status_json(CONFIG))
    status["ports"][0]["host_port"] = 6380
    with pytest.raises(ValueError, match="disagrees"):
        check_network_status(json.dumps(status), CONFIG)
    status["ports"][0]["protocol"] = "sctp"
    with pytest.raises(ValueError, match="protocol"):
        check_network_status(json.dumps(status), CONFIG)


@pytest.mark.parametrize("paths", [["/etc/passwd"], ["a/../../b"], [""], [1], "etc"])
def test_deleted_files_are_relative_paths_inside(paths):
    with pytest.raises(ValueError):
        parse_deleted_files(json.dumps(paths))
    assert parse_deleted_files('["etc/debian_version", "var/x y"]') == ("etc/debian_version", "var/x y")


def test_nft_text_cannot_be_injected():
    with pytest.raises(ValueError):
        PortMapping("", 80, 80, "tcp dport 21098 dnat to 10.213.0.2:80\nadd table ip pcinject\n#")
    mapping = PortMapping("", 80, 80, "tcp")
    with pytest.raises(ValueError):
        nft.dnat_rule("ab", "c" * 64, "10.0.0.1\nflush ruleset", mapping)
    with pytest.raises(ValueError):
        nft.dnat_rule("ab\n", "c" * 64, "10.0.0.1", mapping)
    with pytest.raises(TypeError):
        nft.dnat_rule("ab", "c" * 64, "10.0.0.1", {"protocol": "tcp"})
    # A rule not written by ferry is not mistaken for a published port.
    assert nft.parse_published(nft.Rule("published", 3, "pub ab cc tcp 80 * 99999")) is None
    assert nft.parse_published(nft.Rule("published", 3, "pub ab cc sctp 80 * 80")) is None


def network_status_json(config: ContainerConfig) -> str:
    """network.status as ferry wrote it before podman's shape."""
    return json.dumps({"network": config.network, "ip": config.ip, "mac": config.mac,
                       "ports": [p.to_dict() for p in config.ports]}, indent=1)


def test_extras_are_written_only_when_set_and_read_back():
    """Records written before labels have no "extras" key, and read the same."""
    from ferry.engine.runextras import RunExtras
    assert "extras" not in CONFIG.to_dict() and "host" not in CONFIG.to_dict()
    labelled = CONFIG._replace(extras=RunExtras(labels=(("tier", "cache"), ("empty", ""))))
    assert labelled.to_dict()["extras"] == {"labels": [["tier", "cache"], ["empty", ""]]}
    assert ContainerConfig.from_json(labelled.to_json()) == labelled
    assert labelled.extras.label_map == {"tier": "cache", "empty": ""}


@pytest.mark.parametrize("extras, needle", [
    ({"labels": "tier=cache"}, "labels must be a list"),
    ({"labels": [["a", "b", "c"]]}, "[key, value] pair"),
    ({"labels": [["a", 1]]}, "not a string without NUL"),
    ({"labels": [["", "x"]]}, "not a label name"),
    ({"labels": [["a=b", "x"]]}, "not a label name"),
    ({"labels": [["a", "x"], ["a", "y"]]}, "appears twice"),
    ({"labels": [["a", "x"]] * 1025}, "at most 1024"),
    ({"nosuch": 1}, "unknown"),
    ([], "must be an object"),
], ids=repr)
def test_forged_extras_are_refused(extras, needle):
    data = dict(CONFIG.to_dict(), extras=extras)
    with pytest.raises(ValueError) as caught:
        ContainerConfig.from_dict(data)
    assert needle in str(caught.value)


def test_forged_host_config_is_refused():
    with pytest.raises(ValueError, match="unknown"):
        ContainerConfig.from_dict(dict(CONFIG.to_dict(), host={"privileged": True, "nosuch": 1}))
