"""run's host config flags (-m, --cpus, --ulimit, --cap-add/--cap-drop,
--privileged, --read-only, --tmpfs, --mount, --ipc): their values parsed as
podman parses them, the typed record refusing what a forged archive could
hold, the runtime spec built from it, and the restore rule for privileges."""

from __future__ import annotations

import pytest

from ferry.engine import hostconfig as hc
from ferry.engine.checkpoints import check_privileges
from ferry.engine.config import ContainerConfig
from ferry.engine.containers import RunOptions, _check_destinations, _host_config, _host_spec
from ferry.engine.hostconfig import DEFAULT_HOST, HostConfig, TmpfsMount
from ferry.runtime import spec
from ferry.util import hostspec
from ferry.util.errors import FerryError, RuntimeRefused, UsageError

CONFIG = ContainerConfig(
    image="localhost/busybox:latest", image_digest="sha256:" + "a" * 64, args=("sleep", "100"),
    command=("sleep", "100"), env=(), workdir="/", user="", hostname="h", network="ferry", ip="", mac="",
    ports=(), volumes=(), stop_signal="SIGTERM", rm=False, tty=False, interactive=False)


# ---- values ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, size", [
    ("512m", 512 << 20), ("1g", 1 << 30), ("1024k", 1 << 20), ("1048576", 1 << 20), ("1.5g", 3 << 29),
    ("2GB", 2 << 30), ("64MiB", 64 << 20), ("0", 0), ("100b", 100),
])
def test_memory_units_are_podmans(text, size):
    assert hc.parse_memory(text) == size


@pytest.mark.parametrize("text", ["foo", "512x", "-1", "", "1e9", "m"])
def test_bad_memory_is_refused_in_podmans_words(text):
    with pytest.raises(ValueError, match="invalid value for memory: invalid size"):
        hc.parse_memory(text)


def test_cpus_become_nano_cpus_and_a_quota_over_podmans_period():
    assert hc.parse_cpus("1.5") == 1_500_000_000
    assert HostConfig(nano_cpus=hc.parse_cpus("1.5")).cpu_quota() == 150_000
    assert HostConfig(nano_cpus=hc.parse_cpus("0.01")).cpu_quota() == 1000
    assert hc.parse_cpus("0") == hc.parse_cpus("-1") == 0   # podman: no limit
    with pytest.raises(ValueError, match="less than 1ms"):
        hc.parse_cpus("0.001")
    for bad in ("abc", "nan", "inf", ""):
        with pytest.raises(ValueError, match='for "--cpus" flag'):
            hc.parse_cpus(bad)


def test_ulimits_parse_like_podmans():
    assert hc.parse_ulimit("nofile=500:600") == ("nofile", 500, 600)
    assert hc.parse_ulimit("nproc=100") == ("nproc", 100, 100)
    assert hc.parse_ulimit("core=-1") == ("core", hc.RLIM_INFINITY, hc.RLIM_INFINITY)
    assert hc.merge_ulimits(["nofile=1:2", "core=0", "nofile=3:4"]) == (("core", 0, 0), ("nofile", 3, 4))
    for bad, needle in (("nofile=abc", "invalid syntax"), ("bogus=1:2", "invalid ulimit type: bogus"),
                        ("nofile=10:5", "soft limit must be less than or equal to hard limit: 10 > 5"),
                        ("nofile", "invalid ulimit argument"), ("nofile=1:2:3", "too many"),
                        ("nofile=-2", "out of range")):
        with pytest.raises(ValueError, match=needle):
            hc.parse_ulimit(bad)


def test_capabilities_with_or_without_cap_any_case_or_all():
    assert hc.parse_capabilities(["net_admin", "CAP_SYS_PTRACE", "Sys_Time,chown", "net_admin"]) == (
        "CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_TIME", "CAP_CHOWN")
    assert hc.parse_capabilities(["all"]) == ("ALL",)
    with pytest.raises(ValueError, match='"CAP_BOGUS": unknown capability'):
        hc.parse_capabilities(["bogus"])


def test_capability_sets_are_podmans():
    host = frozenset(hostspec.CAPABILITIES) - {"CAP_SYS_RESOURCE"}   # this host's bounding set
    default = HostConfig().capabilities(host)
    assert default == spec.DEFAULT_CAPABILITIES
    added = HostConfig(cap_add=("CAP_NET_ADMIN",), cap_drop=("CAP_CHOWN",)).capabilities(host)
    assert "CAP_NET_ADMIN" in added and "CAP_CHOWN" not in added and len(added) == 11
    everything = HostConfig(cap_add=("ALL",)).capabilities(host)
    assert len(everything) == 40 and "CAP_SYS_RESOURCE" not in everything
    assert HostConfig(cap_add=("ALL",), cap_drop=("CAP_NET_RAW",)).capabilities(host) == tuple(
        c for c in everything if c != "CAP_NET_RAW")
    assert HostConfig(cap_drop=("ALL",), cap_add=("CAP_CHOWN",)).capabilities(host) == ("CAP_CHOWN",)
    assert HostConfig(privileged=True).capabilities(host) == everything


def test_tmpfs_and_its_options():
    mount = hc.parse_tmpfs("/scratch:size=10m,mode=1777")
    assert mount == TmpfsMount("/scratch", ("size=10m", "mode=1777"))
    assert mount.mount_options() == ["size=10m", "mode=1777", "rw", "rprivate", "nosuid", "nodev", "tmpcopyup"]
    assert TmpfsMount("/x", ("ro", "exec", "suid", "notmpcopyup")).mount_options() == [
        "ro", "exec", "suid", "notmpcopyup", "rprivate", "nodev"]
    assert hc.parse_tmpfs("/x/../y").destination == "/y"   # podman cleans it too
    with pytest.raises(ValueError, match='invalid container path .relative., must be an absolute path'):
        hc.parse_tmpfs("relative")
    for bad in ("/x:bogus=1", "/x:context=foo", "/x:size=abc", "/x:mode=999", "/x:uid=99999999999"):
        with pytest.raises(ValueError):
            hc.parse_tmpfs(bad)
    with pytest.raises(ValueError, match="cannot be mounted at /"):
        hc.parse_tmpfs("/")
    for reserved in ("/proc", "/proc/sys", "/sys/fs/cgroup", "/dev", "/etc/hosts", "/run/.containerenv"):
        with pytest.raises(ValueError, match="a path ferry mounts itself"):
            hc.parse_tmpfs(reserved)
    assert hc.parse_tmpfs("/dev/shm:size=1g").destination == "/dev/shm"


def test_mount_syntax_maps_onto_volumes_and_tmpfs():
    assert hc.parse_mount("type=bind,src=/srv/a,dst=/a,ro").volume == "/srv/a:/a:ro"
    assert hc.parse_mount("type=bind,source=/srv/a,target=/a,readonly=false").volume == "/srv/a:/a"
    assert hc.parse_mount("type=volume,source=data,destination=/data").volume == "data:/data"
    assert hc.parse_mount("type=tmpfs,dst=/t,tmpfs-size=5m,tmpfs-mode=700").tmpfs == TmpfsMount(
        "/t", ("size=5m", "mode=700"))
    assert hc.parse_mount("type=tmpfs,target=/t,ro").tmpfs == TmpfsMount("/t", ("ro",))
    for bad, needle in (("dst=/x", "incorrect mount format"), ("type=foo,dst=/x", "invalid filesystem type"),
                        ("type=tmpfs", "must set volume destination"),
                        ("type=tmpfs,dst=/x,bogus=1", "bogus: invalid mount option"),
                        ("type=bind,dst=/x", "needs src="), ("type=volume,dst=/x", "anonymous"),
                        ("type=bind,src=rel,dst=/x", "absolute host path"),
                        ("type=tmpfs,dst=/x,tmpfs-size=abc", "not one ferry allows"),
                        ("type=bind,src=/a,dst=rel", "must be an absolute path"),
                        ("type=bind,src=/a,dst=/x,dst=/y", "given twice")):
        with pytest.raises(ValueError, match=needle):
            hc.parse_mount(bad)


def test_ipc_modes():
    assert hc.parse_ipc("host") == "host"
    assert hc.parse_ipc("private") == hc.parse_ipc("shareable") == "private"
    with pytest.raises(ValueError, match="unrecognized namespace mode bogus passed"):
        hc.parse_ipc("bogus")
    with pytest.raises(ValueError, match="ferry supports"):
        hc.parse_ipc("container:other")


def test_run_options_become_the_record_with_usage_errors():
    host, mounted = _host_config(RunOptions(
        image="busybox", memory="512m", cpus="1.5", ulimits=("nofile=500:600",), cap_add=("net_admin",),
        cap_drop=("CAP_CHOWN",), read_only=True, tmpfs=("/scratch:size=10m",),
        mounts=("type=tmpfs,dst=/t2,tmpfs-size=5m", "type=bind,src=/srv,dst=/srv,ro"), ipc="host"))
    assert host == HostConfig(memory=512 << 20, nano_cpus=1_500_000_000, ulimits=(("nofile", 500, 600),),
                              cap_add=("CAP_NET_ADMIN",), cap_drop=("CAP_CHOWN",), read_only=True,
                              tmpfs=(TmpfsMount("/scratch", ("size=10m",)), TmpfsMount("/t2", ("size=5m",))),
                              ipc="host")
    assert mounted == ("/srv:/srv:ro",)
    assert _host_config(RunOptions(image="busybox")) == (DEFAULT_HOST, ())
    with pytest.raises(UsageError, match="invalid size") as caught:
        _host_config(RunOptions(image="busybox", memory="lots"))
    assert "--memory" in caught.value.hint
    with pytest.raises(UsageError, match="two tmpfs"):
        _host_config(RunOptions(image="busybox", tmpfs=("/a",), mounts=("type=tmpfs,dst=/a",)))
    with pytest.raises(UsageError, match="/a: duplicate mount destination"):
        from ferry.engine.volumes import VolumeSpec
        _check_destinations([VolumeSpec("volume", "v", "/a")], HostConfig(tmpfs=(TmpfsMount("/a"),)))


def test_a_ulimit_above_the_hosts_hard_limit_is_refused_as_podmans_runc_refuses_it():
    allowed = hostspec.host_hard_limit("RLIMIT_NOFILE")
    if allowed is None:
        pytest.skip("this host sets no hard limit on RLIMIT_NOFILE")
    with pytest.raises(RuntimeRefused, match=f"at most {allowed}"):
        _host_config(RunOptions(image="busybox", ulimits=(f"nofile=10:{allowed + 1}",)))
    _host_config(RunOptions(image="busybox", ulimits=(f"nofile=10:{allowed}",)))


# ---- the record --------------------------------------------------------------------------------

FULL = HostConfig(memory=1 << 29, nano_cpus=1_500_000_000, ulimits=(("nofile", 10, 20), ("core", 0, hc.RLIM_INFINITY)),
                  cap_add=("CAP_NET_ADMIN",), cap_drop=("ALL",), privileged=True, read_only=True,
                  read_only_tmpfs=False, tmpfs=(TmpfsMount("/t", ("size=1m", "mode=700")),), ipc="host")


def test_only_non_defaults_are_written_and_read_back():
    assert "host" not in CONFIG.to_dict()
    limited = CONFIG._replace(host=HostConfig(memory=1 << 20))
    assert limited.to_dict()["host"] == {"memory": 1 << 20}
    full = CONFIG._replace(host=FULL)
    assert ContainerConfig.from_json(full.to_json()) == full
    assert set(full.to_dict()["host"]) == set(HostConfig._fields)


def test_a_tmpfs_where_a_volume_is_mounted_is_refused():
    data = dict(CONFIG.to_dict(), host={"tmpfs": [{"destination": "/data", "options": []}]},
                volumes=[{"kind": "volume", "source": "v", "destination": "/data", "readonly": False}])
    with pytest.raises(ValueError, match="same destination"):
        ContainerConfig.from_dict(data)


@pytest.mark.parametrize("host, needle", [
    ({"memory": -1}, "host.memory"), ({"memory": "1g"}, "host.memory"), ({"memory": True}, "host.memory"),
    ({"memory": 1 << 63}, "host.memory"), ({"nano_cpus": 1.5}, "host.nano_cpus"),
    ({"nano_cpus": 5}, "below 1 ms"),
    ({"ulimits": [["nofile", 5, 1]]}, "soft <= hard"), ({"ulimits": [["bogus", 1, 1]]}, "not [name"),
    ({"ulimits": [["nofile", -1, 1]]}, "not [name"), ({"ulimits": [["nofile", 1, 1 << 64]]}, "not [name"),
    ({"ulimits": [["nofile", 1, 1], ["nofile", 2, 2]]}, "twice"), ({"ulimits": "nofile=1"}, "must be a list"),
    ({"ulimits": [["nofile", 1, 1]] * 17}, "at most 16"),
    ({"cap_add": ["CAP_BOGUS"]}, "not a capability"), ({"cap_add": ["net_admin"]}, "not a capability"),
    ({"cap_drop": ["CAP_CHOWN", "CAP_CHOWN"]}, "twice"), ({"cap_add": ["CAP_CHOWN"] * 43}, "at most"),
    ({"privileged": 1}, "true or false"), ({"read_only": "yes"}, "true or false"),
    ({"tmpfs": [{"destination": "rel", "options": []}]}, "absolute"),
    ({"tmpfs": [{"destination": "/a/../etc", "options": []}]}, "normalised"),
    ({"tmpfs": [{"destination": "/", "options": []}]}, "below /"),
    ({"tmpfs": [{"destination": "/a", "options": ["exec,suid"]}]}, "not one ferry allows"),
    ({"tmpfs": [{"destination": "/a", "options": ["context=x"]}]}, "not one ferry allows"),
    ({"tmpfs": [{"destination": "/a", "options": ["size=1m\n"]}]}, "not one ferry allows"),
    ({"tmpfs": [{"destination": "/a", "options": ["bind"]}]}, "not one ferry allows"),
    ({"tmpfs": [{"destination": "/a", "options": ["mode=1777"] * 17}]}, "at most 16"),
    ({"tmpfs": [{"destination": "/a", "options": []}] * 2}, "same destination"),
    ({"tmpfs": [{"destination": f"/t{i}", "options": []} for i in range(65)]}, "at most 64"),
    ({"tmpfs": [{"destination": "/a"}]}, "tmpfs"),
    ({"ipc": "container:x"}, "host.ipc"), ({"ipc": "none"}, "host.ipc"),
    ({"nosuch": 1}, "unknown"), ([], "must be an object"),
], ids=repr)
def test_forged_host_configs_are_refused(host, needle):
    with pytest.raises(ValueError) as caught:
        ContainerConfig.from_dict(dict(CONFIG.to_dict(), host=host))
    assert needle in str(caught.value)


# ---- the runtime spec --------------------------------------------------------------------------

@pytest.fixture
def no_seccomp_file(monkeypatch):
    monkeypatch.setattr(spec, "seccomp_profile", lambda caps: {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []})


def built(host: HostConfig, **more) -> dict:
    return spec.build(spec.ContainerSpec(container_id="c" * 64, hostname="h", rootfs="/r",
                                         process=spec.ProcessSpec(args=("sh",)), **_host_spec(host), **more))


def test_default_host_config_changes_nothing_in_the_spec(no_seccomp_file):
    assert _host_spec(DEFAULT_HOST) == {}
    made = built(DEFAULT_HOST)
    assert made["root"]["readonly"] is False
    assert made["linux"]["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    assert {"type": "ipc"} in made["linux"]["namespaces"]
    assert made["linux"]["maskedPaths"] and made["linux"]["readonlyPaths"] and made["linux"]["seccomp"]


def test_limits_and_the_read_only_root_in_the_spec(no_seccomp_file):
    host = HostConfig(memory=512 << 20, nano_cpus=1_500_000_000, ulimits=(("nofile", 500, 600), ("core", 0, 0)),
                      read_only=True)
    made = built(host)
    assert made["linux"]["resources"]["memory"] == {"limit": 512 << 20, "swap": 1024 << 20}
    assert made["linux"]["resources"]["cpu"] == {"quota": 150000, "period": 100000}
    limits = {r["type"]: (r["soft"], r["hard"]) for r in made["process"]["rlimits"]}
    assert limits["RLIMIT_NOFILE"] == (500, 600) and limits["RLIMIT_CORE"] == (0, 0)
    assert "RLIMIT_NPROC" in limits   # ferry's default stays
    assert made["root"]["readonly"] is True


def test_rlimits_asked_are_clamped_to_this_hosts_hard_limit():
    allowed = hostspec.host_hard_limit("RLIMIT_NOFILE")
    if allowed is None:
        pytest.skip("this host sets no hard limit on RLIMIT_NOFILE")
    (nofile,) = [r for r in spec.clamped_rlimits(asked=(("RLIMIT_NOFILE", 5, allowed + 10),))
                 if r["type"] == "RLIMIT_NOFILE"]
    assert (nofile["soft"], nofile["hard"]) == (5, allowed)


def test_capabilities_ipc_host_and_privileged_in_the_spec(no_seccomp_file):
    made = built(HostConfig(cap_add=("CAP_NET_ADMIN",), ipc="host"), shm_source="/dev/shm")
    assert "CAP_NET_ADMIN" in made["process"]["capabilities"]["bounding"]
    assert made["process"]["capabilities"]["effective"] == made["process"]["capabilities"]["bounding"]
    assert "ipc" not in [n["type"] for n in made["linux"]["namespaces"]]
    (shm,) = [m for m in made["mounts"] if m["destination"] == "/dev/shm"]
    assert shm["source"] == "/dev/shm" and shm["type"] == "bind"
    privileged = built(HostConfig(privileged=True))
    linux = privileged["linux"]
    assert "seccomp" not in linux and "maskedPaths" not in linux and "readonlyPaths" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    sys_mounts = {m["destination"]: m["options"] for m in privileged["mounts"]}
    assert "ro" not in sys_mounts["/sys"] and "ro" not in sys_mounts["/sys/fs/cgroup"]
    assert len(privileged["process"]["capabilities"]["bounding"]) >= 11


def test_a_tmpfs_at_dev_shm_replaces_ferrys(no_seccomp_file):
    host = HostConfig(tmpfs=(TmpfsMount("/dev/shm", ("size=1g",)),))
    made = built(host, mounts=(spec.Mount("/dev/shm", "tmpfs", "tmpfs", tuple(host.tmpfs[0].mount_options())),),
                 shm_source="/some/dir")
    (shm,) = [m for m in made["mounts"] if m["destination"] == "/dev/shm"]
    assert shm["type"] == "tmpfs" and "size=1g" in shm["options"]


def test_read_only_adds_podmans_tmpfs_unless_told_not_to():
    assert [t.destination for t in HostConfig(read_only=True).tmpfs_mounts()] == ["/run", "/tmp", "/var/tmp"]
    assert HostConfig(read_only=True, read_only_tmpfs=False).tmpfs_mounts() == ()
    own = HostConfig(read_only=True, tmpfs=(TmpfsMount("/tmp", ("size=1m",)),)).tmpfs_mounts()
    assert [t.destination for t in own] == ["/tmp", "/run", "/var/tmp"] and own[0].options == ("size=1m",)
    assert HostConfig(tmpfs=(TmpfsMount("/t"),)).tmpfs_mounts() == (TmpfsMount("/t"),)


# ---- restore ------------------------------------------------------------------------------------

@pytest.mark.parametrize("host, asked", [
    (HostConfig(privileged=True), "--privileged"),
    (HostConfig(cap_add=("CAP_NET_ADMIN", "CAP_SYS_ADMIN")), "--cap-add CAP_NET_ADMIN,CAP_SYS_ADMIN"),
    (HostConfig(cap_add=("ALL",)), "--cap-add ALL"),
    (HostConfig(ipc="host"), "--ipc host"),
])
def test_a_restore_grants_privileges_only_when_allowed(host, asked):
    config = CONFIG._replace(host=host)
    with pytest.raises(FerryError) as caught:
        check_privileges(config, False)
    assert asked in caught.value.message and "--allow-privileges" in caught.value.hint
    with pytest.raises(FerryError) as caught:
        check_privileges(config, False, migration=True)
    assert "agent" in caught.value.hint
    check_privileges(config, True)


def test_the_hosts_network_is_a_privilege_too():
    config = CONFIG._replace(network="host", network_mode="host")
    with pytest.raises(FerryError, match="--network host"):
        check_privileges(config, False)
    check_privileges(config, True)


def test_limits_and_dropped_capabilities_restore_as_archived():
    for host in (HostConfig(memory=1 << 20, nano_cpus=10**9, ulimits=(("nofile", 1, 2),), read_only=True,
                            tmpfs=(TmpfsMount("/t"),)),
                 HostConfig(cap_drop=("ALL",), cap_add=("CAP_CHOWN",)), HostConfig(cap_add=("CAP_CHOWN",))):
        assert host.grants() == []
        check_privileges(CONFIG._replace(host=host), False)
