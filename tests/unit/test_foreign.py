"""podman's and CRI-O's checkpoint archives: recognised by their layout,
unpacked by an allowlist within a budget, and their config.dump and spec.dump
read within bounds into typed fields that become a ferry container."""

import io
import json
import tarfile
from types import SimpleNamespace

import pytest

from ferry.checkpoint.archive import ArchiveReader, ForeignHead
from ferry.checkpoint.foreign import parse_config, read_config, read_spec
from ferry.checkpoint.foreign_layout import MAX_RECORD
from ferry.engine import foreign as engine_foreign
from ferry.engine.config import PODMAN_PROFILE, SpecProfile, config_from_foreign
from ferry.engine.volumes import VolumeSpec
from ferry.network.ports import PortMapping
from ferry.util.errors import BadArchive, NotFound

ID = "3" * 64
IMAGE = "f" * 64
SPEC = {
    "process": {"user": {"uid": 0, "gid": 0}, "args": ["httpd", "-f"], "env": ["PATH=/bin", "container=podman"],
                "cwd": "/", "capabilities": {"bounding": ["CAP_SYS_ADMIN"]}},
    "hostname": "6929668d39ed",
    "mounts": [{"destination": d, "type": t, "source": "/var/lib/containers/x", "options": o} for d, t, o in (
        ("/proc", "proc", []), ("/dev", "tmpfs", []), ("/sys", "sysfs", ["ro"]),
        ("/data", "bind", ["rw", "rbind"]), ("/dev/shm", "bind", ["bind", "nosuid"]),
        ("/etc/hosts", "bind", ["bind"]), ("/run/.containerenv", "bind", ["bind"]),
        ("/sys/fs/cgroup", "cgroup", ["ro"]))],
    "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}, {"type": "ipc"},
                             {"type": "uts"}, {"type": "mount"}], "seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}},
}
PODMAN = {"id": ID, "name": "web", "rootfsImageID": IMAGE, "rootfsImageName": "localhost/busybox:latest",
          "command": ["httpd", "-f"], "stopSignal": 15, "shmSize": 65536000, "userVolumes": ["/data"],
          "newPortMappings": [{"host_ip": "", "container_port": 80, "host_port": 8080, "range": 2,
                               "protocol": "tcp"}],
          "namedVolumes": [{"volumeName": "web-data", "dest": "/data", "options": ["rw", "rbind"]}],
          "spec": SPEC, "createdTime": "2026-11-30T02:26:46.92029127Z"}
CRIO = {"id": ID, "name": "k8s_web", "rootfsImage": "quay.io/x/web:1", "rootfsImageRef": IMAGE,
        "rootfsImageName": "quay.io/x/web:1", "runtime": "runc", "createdTime": "2026-11-30T01:30:34Z",
        "checkpointedTime": "2026-11-30T01:40:00Z"}
CRIO_SPEC = {**SPEC, "mounts": [m for m in SPEC["mounts"] if m["destination"] not in ("/data", "/run/.containerenv")],
             "linux": {"namespaces": SPEC["linux"]["namespaces"] + [{"type": "cgroup"}]}}


def _dump(value) -> bytes:
    return json.dumps(value).encode()


# ---- config.dump and spec.dump ---------------------------------------------------

def test_podman_s_config_names_its_container_and_image():
    found = read_config(_dump(PODMAN))
    assert (found.engine, found.id, found.name, found.image_id, found.image_name) == \
        ("podman", ID, "web", IMAGE, "localhost/busybox:latest")
    assert found.describe() == ("podman's checkpoint of container 'web' (image localhost/busybox:latest, "
                                "ffffffffffff)")


def test_cri_o_s_metadata_names_its_container_and_image():
    found = read_config(_dump(CRIO))
    assert (found.engine, found.name, found.image_id, found.podman) == ("CRI-O", "k8s_web", IMAGE, None)


@pytest.mark.parametrize("forged, why", [
    (b"[]", "not a JSON object"), (b"not json", "JSON"), (b"{}", "id"),
    (_dump({**PODMAN, "id": "../../etc"}), "id"), (_dump({**PODMAN, "name": 7}), "name"),
    (_dump({**PODMAN, "name": "a\nb"}), "name"), (_dump({**PODMAN, "rootfsImageID": "sha256:" + IMAGE}), "rootfsImageID"),
    (_dump({**CRIO, "rootfsImageRef": ["x"]}), "rootfsImageRef"), (b"[" * 100000, "nest"),
    (_dump({**PODMAN, "pad": "x" * MAX_RECORD}), "larger"),
    (_dump({**PODMAN, "newPortMappings": [{"container_port": 80, "host_port": 70000}]}), "host_port"),
    (_dump({**PODMAN, "namedVolumes": [{"volumeName": "v", "dest": "relative"}]}), "dest"),
    (_dump({**PODMAN, "stopSignal": True}), "stopSignal"),
    (b'{"id": "%s", "id": "%s", "name": "web"}' % (ID.encode(), IMAGE.encode()), "appears twice"),
])
def test_a_forged_config_is_refused_naming_the_field(forged, why):
    with pytest.raises(ValueError, match=why):
        read_config(forged)
    assert parse_config(forged) is None


@pytest.mark.parametrize("change, why", [
    (lambda s: s["process"].update(args=[]), "args"),
    (lambda s: s["process"].update(args="sh"), "args"),
    (lambda s: s["process"]["user"].update(uid=-1), "uid"),
    (lambda s: s["process"].update(cwd="../x"), "cwd"),
    (lambda s: s["process"].update(env=["A=\0"]), "env"),
    (lambda s: s["linux"]["namespaces"].append({"type": "nonsense"}), "type"),
    (lambda s: s["mounts"].append(dict(s["mounts"][0])), "two things at one destination"),
    (lambda s: s.pop("process"), "process"),
])
def test_a_forged_spec_is_refused(change, why):
    spec = json.loads(json.dumps(SPEC))
    change(spec)
    with pytest.raises(ValueError, match=why):
        read_spec(_dump(spec))


def _config(found=PODMAN, spec=SPEC):
    return config_from_foreign(read_config(_dump(found)), read_spec(_dump(spec)), image="localhost/busybox:latest",
                               image_digest="sha256:" + "a" * 64, network="ferry")


def test_podman_s_container_becomes_a_ferry_config_in_podman_s_shape():
    config = _config()
    assert config.args == ("httpd", "-f") and config.command == ("httpd", "-f")
    assert config.env == ("PATH=/bin", "container=podman") and config.hostname == "6929668d39ed"
    assert config.ports == (PortMapping("", 8080, 80, "tcp"), PortMapping("", 8081, 81, "tcp"))
    assert config.volumes == (VolumeSpec("volume", "web-data", "/data"),)
    assert (config.stop_signal, config.network, config.ip, config.mac) == ("SIGTERM", "ferry", "", "")
    assert config.profile == PODMAN_PROFILE     # no cgroup namespace, /dev/shm bound, .containerenv
    assert config.from_dict(config.to_dict()) == config   # and it is kept so in ferry's records


def test_what_the_foreign_spec_grants_is_not_taken():
    """Capabilities, seccomp and the rest are ferry's own: only the shape comes across."""
    assert "capabilities" not in json.dumps(_config().to_dict())


def test_a_host_bind_becomes_a_bind_volume_that_the_restore_must_be_granted():
    spec = json.loads(json.dumps(SPEC))
    spec["mounts"].append({"destination": "/srv", "type": "bind", "source": "/etc", "options": ["rbind", "ro"]})
    assert VolumeSpec("bind", "/etc", "/srv", True) in _config(spec=spec).volumes


@pytest.mark.parametrize("mount", [
    {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["context=x"]},
    {"destination": "/", "type": "tmpfs", "source": "tmpfs"},
    {"destination": "/dev/sda", "type": "devtmpfs", "source": "udev"},
])
def test_a_mount_ferry_cannot_give_is_refused(mount):
    spec = json.loads(json.dumps(SPEC))
    spec["mounts"].append(mount)
    with pytest.raises(ValueError, match=f"at {mount['destination']}, which ferry cannot give"):
        _config(spec=spec)


def test_a_tmpfs_and_a_read_only_root_become_the_host_config_run_would_record():
    from ferry.engine.hostconfig import HostConfig, TmpfsMount
    spec = json.loads(json.dumps(SPEC))
    spec["root"] = {"path": "/merged", "readonly": True}
    spec["mounts"].append({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                           "options": ["size=10m", "rw", "rprivate", "nosuid", "nodev", "tmpcopyup"]})
    assert _config(spec=spec).host == HostConfig(read_only=True, read_only_tmpfs=False, tmpfs=(
        TmpfsMount("/run", ("size=10m", "rw", "nosuid", "nodev", "tmpcopyup")),))
    assert _config().host == HostConfig()


def test_a_relative_bind_source_is_refused():
    spec = json.loads(json.dumps(SPEC))
    spec["mounts"].append({"destination": "/srv", "type": "bind", "source": "etc", "options": []})
    with pytest.raises(ValueError, match="bind source"):
        _config(spec=spec)


def test_cri_o_s_container_keeps_its_cgroup_namespace_and_takes_its_command_from_the_spec():
    config = _config(CRIO, CRIO_SPEC)
    assert config.command == config.args == ("httpd", "-f")
    assert config.profile == SpecProfile(cgroupns=True, no_new_privileges=False, shm_dir=True, containerenv=False)
    assert config.ports == () and config.volumes == ()


# ---- the archive's layout ---------------------------------------------------------

def _tar(path, members) -> str:
    with tarfile.open(str(path), "w") as tar:
        for name, data, *kind in members:
            info = tarfile.TarInfo(name)
            if kind:
                info.type = kind[0]
                info.linkname = "/etc/shadow" if kind[0] in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
                tar.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, fileobj=io.BytesIO(data))
    return str(path)


def _podman_members(config=PODMAN, spec=SPEC):
    return [("artifacts/", None), ("devshm-checkpoint.tar", b"\0" * 1024), ("config.dump", _dump(config)),
            ("spec.dump", _dump(spec)), ("network.status", b"{}"), ("stats-dump", b"x"), ("ctr.log", b"log\n"),
            ("checkpoint/", None), ("checkpoint/inventory.img", b"inv"), ("checkpoint/pages-1.img", b"p" * 4096),
            ("checkpoint/descriptors.json", b"[]"), ("rootfs-diff.tar", b"\0" * 1024),
            ("deleted.files", b'["/etc/group"]'), ("volumes/web-data.tar", b"\0" * 1024)]


def _extract(path, dest, budget=1 << 30):
    with ArchiveReader(path) as reader:
        head = reader.head()
        assert isinstance(head, ForeignHead) and head.size_bound is None
        return reader.extract(str(dest), budget=budget)


def test_a_podman_archive_unpacks_what_ferry_uses_and_skips_the_rest(tmp_path):
    contents = _extract(_tar(tmp_path / "web.tar", _podman_members()), tmp_path / "dest")
    names = {m.name for m in contents.members}
    assert "stats-dump" not in names and not (tmp_path / "dest" / "artifacts").exists()
    assert {"config.dump", "spec.dump", "checkpoint/pages-1.img", "volumes/web-data.tar", "deleted.files",
            "devshm-checkpoint.tar"} <= names
    assert (contents.signed, contents.verified) == (False, False)
    found, spec, deleted = engine_foreign.read_records(str(tmp_path / "dest"), contents, lambda name: True)
    assert (found.name, spec.process.args, deleted) == ("web", ["httpd", "-f"], ("etc/group",))


def test_a_cri_o_archive_reads_the_same_way(tmp_path):
    members = [m for m in _podman_members(CRIO, CRIO_SPEC) if not m[0].startswith("volumes/")]
    contents = _extract(_tar(tmp_path / "k8s.tar", members), tmp_path / "dest")
    found, spec, _ = engine_foreign.read_records(str(tmp_path / "dest"), contents, lambda name: True)
    image = SimpleNamespace(id=IMAGE, digest="sha256:" + IMAGE, names=("quay.io/x/web:1",))
    archived = engine_foreign.archived_container(found, spec, image, "ferry")
    assert (archived.name, archived.image_id, archived.config.image) == ("k8s_web", IMAGE, "quay.io/x/web:1")


@pytest.mark.parametrize("extra, why", [
    (("../../etc/passwd", b"x"), "unsafe path"),
    (("/etc/passwd", b"x"), "absolute path"),
    (("checkpoint/../../x", b"x"), "unsafe path"),
    (("checkpoint/dev", None, tarfile.CHRTYPE), "device"),
    (("checkpoint/link", None, tarfile.SYMTYPE), "symlink"),
    (("checkpoint/hard", None, tarfile.LNKTYPE), "link"),
    (("checkpoint/deep/x.img", b"x"), "has no place in a podman checkpoint"),
    (("volumes/../x.tar", b"x"), "unsafe path"),
    (("volumes/web-data.tar", b"again"), "appears twice"),
    (("notes.txt", b"x"), "has no place in a podman checkpoint"),
    (("etc/", None), "has no place in a podman checkpoint"),
])
def test_bad_input_in_a_podman_archive_is_refused_and_nothing_is_left(tmp_path, extra, why):
    path = _tar(tmp_path / "web.tar", _podman_members() + [extra])
    with pytest.raises(BadArchive, match=why):
        _extract(path, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_a_podman_archive_that_unpacks_past_the_budget_is_refused(tmp_path):
    with pytest.raises(BadArchive, match="unpacks to more than"):
        _extract(_tar(tmp_path / "web.tar", _podman_members()), tmp_path / "dest", budget=4096)
    assert not (tmp_path / "dest").exists()


def test_verify_key_is_refused_for_an_archive_that_carries_no_signature(tmp_path):
    from ferry.checkpoint.signing import PublicKey
    path = _tar(tmp_path / "web.tar", _podman_members())
    with ArchiveReader(path) as reader, pytest.raises(BadArchive, match="carry no signature"):
        reader.extract(str(tmp_path / "dest"), verify_key=PublicKey(b"k" * 32), budget=1 << 30)
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("missing", ["config.dump", "spec.dump", "checkpoint/inventory.img"])
def test_an_archive_without_its_records_is_refused(tmp_path, missing):
    members = [m for m in _podman_members() if m[0] != missing]
    contents = _extract(_tar(tmp_path / "web.tar", members), tmp_path / "dest")
    with pytest.raises(BadArchive, match=f"has no {missing}"):
        engine_foreign.read_records(str(tmp_path / "dest"), contents, lambda name: True)


def test_an_image_not_named_as_criu_names_them_is_refused(tmp_path):
    contents = _extract(_tar(tmp_path / "web.tar", _podman_members()), tmp_path / "dest")
    with pytest.raises(BadArchive, match="not named as CRIU names"):
        engine_foreign.read_records(str(tmp_path / "dest"), contents, lambda name: name != "pages-1.img")


def test_a_missing_image_is_named_with_where_to_get_it():
    class Images:
        def get(self, ref):
            raise NotFound(ref)
    with pytest.raises(NotFound) as caught:
        engine_foreign.find_image(Images(), read_config(_dump(PODMAN)), None)
    assert "image localhost/busybox:latest (ffffffffffff), which podman's checkpoint of container 'web'" in \
        caught.value.message
    assert "podman save -o image.tar localhost/busybox:latest" in caught.value.hint
    assert "--image-archive" in caught.value.hint and "ferry pull" in caught.value.hint
