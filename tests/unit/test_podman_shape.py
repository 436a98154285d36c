"""The podman-shaped members of a checkpoint archive: the fields podman 4.3's
`container restore --import` reads, in its JSON names and types."""

from __future__ import annotations

import json

import pytest

from ferry.checkpoint.foreign import parse_config
from ferry.checkpoint.podman_shape import PODMAN_RLIMITS, podman_config_dump, podman_spec_dump

CID = "1c" * 32
IMAGE = "8a" * 32
ROOT = "/var/lib/ferry/containers/" + CID


def ferry_spec() -> dict:
    bind = ["rbind", "rprivate"]
    return {
        "ociVersion": "1.0.2",
        "process": {"args": ["httpd", "-f"], "env": ["PATH=/bin"], "cwd": "/",
                    "user": {"uid": 0, "gid": 0},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000},
                                {"type": "RLIMIT_NPROC", "hard": 96551, "soft": 96551}]},
        "root": {"path": ROOT + "/rootfs", "readonly": False},
        "hostname": CID[:12],
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": []},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["size=67108864"]},
            {"destination": "/etc/hosts", "type": "bind", "source": ROOT + "/hosts", "options": bind},
            {"destination": "/etc/hostname", "type": "bind", "source": ROOT + "/hostname", "options": bind},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": ROOT + "/resolv.conf", "options": bind},
            {"destination": "/data", "type": "bind", "source": "/var/lib/ferry/volumes/web-data/_data",
             "options": bind},
            {"destination": "/src", "type": "bind", "source": "/home/me/src", "options": bind + ["ro"]},
        ],
        "annotations": {"io.ferry.name": "web", "org.criu.config": ROOT + "/criu.conf", "keep": "me"},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/ferry-x"}],
                  "cgroupsPath": "/ferry/" + CID},
    }


def config(**overrides) -> dict:
    values = dict(container_id=CID, name="web", image_id=IMAGE, image_name="localhost/busybox:latest",
                  created="2026-11-30T02:28:02.754771Z", spec=ferry_spec(),
                  ports=[("", 8080, 80, "tcp")], volumes=[("web-data", "/data")],
                  command=["httpd", "-f"])
    values.update(overrides)
    return json.loads(podman_config_dump(**values))


# ---- config.dump --------------------------------------------------------------

def test_config_dump_carries_what_podman_checks_and_uses():
    data = config()
    assert data["id"] == CID and data["name"] == "web"
    assert data["rootfsImageID"] == IMAGE and data["rootfsImageName"] == "localhost/busybox:latest"
    # cmd/podman/root.go compares this string with --runtime: "" was today's refusal.
    assert data["runtime"] == "runc"
    assert data["createNetNS"] is True and data["networkMode"] == "bridge"
    assert data["newNetworks"] == {"podman": {"interface_name": "eth0"}}
    assert data["newPortMappings"] == [{"host_ip": "", "container_port": 80, "host_port": 8080,
                                        "range": 1, "protocol": "tcp"}]
    assert data["namedVolumes"] == [{"volumeName": "web-data", "dest": "/data",
                                     "options": ["rw", "rprivate", "rbind"]}]
    assert data["shmSize"] == 65536000 and data["stopSignal"] == 15 and data["stopTimeout"] == 10
    assert data["logDriver"] == "k8s-file" and data["command"] == ["httpd", "-f"]
    assert data["createdTime"] == "2026-11-30T02:28:02.754771Z"
    assert data["spec"]["hostname"] == CID[:12]
    assert "user" not in data


def test_config_dump_is_what_ferry_itself_reads_as_podmans():
    found = parse_config(podman_config_dump(container_id=CID, name="web", image_id=IMAGE,
                                            image_name="localhost/busybox:latest",
                                            created="2026-11-30T02:28:02Z", spec={}))
    assert found is not None and found.engine == "podman"
    assert (found.id, found.name, found.image_id) == (CID, "web", IMAGE)


def test_config_dump_leaves_out_empty_ports_and_volumes_and_keeps_a_user():
    data = config(ports=(), volumes=(), user="redis", network="other", runtime="crun")
    assert "newPortMappings" not in data and "namedVolumes" not in data
    assert data["user"] == "redis" and data["runtime"] == "crun"
    assert data["newNetworks"] == {"other": {"interface_name": "eth0"}}


@pytest.mark.parametrize("signal, number", [("SIGTERM", 15), ("TERM", 15), ("9", 9), (2, 2), ("sigquit", 3)])
def test_config_dump_stop_signal_is_a_number(signal, number):
    assert config(stop_signal=signal)["stopSignal"] == number


@pytest.mark.parametrize("overrides", [
    {"container_id": "1c" * 31}, {"container_id": "1C" * 32}, {"image_id": "sha256:" + IMAGE},
    {"name": ""}, {"runtime": ""}, {"ports": [("", 8080, 80, "icmp")]}, {"ports": [("", 0, 80, "tcp")]},
    {"ports": [("", 8080, 70000, "tcp")]}, {"stop_signal": "SIGNOPE"},
])
def test_config_dump_refuses_what_podman_would_not_restore(overrides):
    with pytest.raises(ValueError):
        config(**overrides)


# ---- spec.dump ----------------------------------------------------------------

def test_spec_dump_points_named_volumes_at_podmans_copy_and_keeps_binds():
    spec = ferry_spec()
    out = json.loads(podman_spec_dump(spec, volumes=[("web-data", "/data")],
                                      volume_dir="/tmp/pm/root/volumes"))
    mounts = {m["destination"]: m for m in out["mounts"]}
    assert mounts["/data"]["source"] == "/tmp/pm/root/volumes/web-data/_data"
    assert mounts["/data"]["options"] == ["rbind", "rprivate"]
    assert mounts["/src"]["source"] == "/home/me/src"
    assert spec["mounts"][5]["source"] == "/var/lib/ferry/volumes/web-data/_data"   # input untouched


def test_spec_dump_default_volume_dir_is_podmans():
    out = json.loads(podman_spec_dump(ferry_spec(), volumes=[("web-data", "/data")]))
    assert {m["destination"]: m["source"] for m in out["mounts"]}["/data"] == \
        "/var/lib/containers/storage/volumes/web-data/_data"


def test_spec_dump_drops_the_mounts_podman_makes_and_ferrys_annotations():
    out = json.loads(podman_spec_dump(ferry_spec()))
    destinations = [m["destination"] for m in out["mounts"]]
    assert destinations == ["/proc", "/data", "/src"]
    assert out["annotations"] == {"keep": "me"}
    # What CRIU must find again is left as it was.
    assert out["linux"] == ferry_spec()["linux"] and out["hostname"] == CID[:12]
    assert out["process"]["rlimits"] == ferry_spec()["process"]["rlimits"]


def test_spec_dump_replaces_rlimits_when_asked():
    out = json.loads(podman_spec_dump(ferry_spec(), rlimits=PODMAN_RLIMITS))
    assert out["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024},
                                         {"type": "RLIMIT_NPROC", "soft": 1000, "hard": 1000}]
