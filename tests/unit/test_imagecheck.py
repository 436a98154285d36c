"""CRIU images checked against the restored container's spec (no root needed).

Each test builds a small image set with pycriu from dicts: a root task `init`
(pid 1) and a two-threaded `worker` (pid 7, threads 7 and 8) in a container
made by ferry's own spec.build(), shaped like a real ferry dump (busybox,
nginx, redis on this host: see tests/integration/test_imagecheck.py). A test
forges one field the way an attacker would and expects one refusal line that
names the image, the task and the field.
"""

from __future__ import annotations

import base64
import copy
import gzip
import io
import os
import platform
import random
import struct
import tarfile

import pytest

pycriu = pytest.importorskip("pycriu", reason="pycriu is installed by 'make setup'")

from ferry.checkpoint import imagecheck  # noqa: E402
from ferry.checkpoint.imagecheck import HostFacts, check_images, root_mode  # noqa: E402
from ferry.runtime import spec as spec_module  # noqa: E402
from ferry.util.errors import BadArchive  # noqa: E402

SOURCE_ID = "a" * 64
CGROUP = f"ferry/{SOURCE_ID}"
FERRY_CAPS = [0x800405fb, 0]          # ferry's default capability list, as CRIU stores it
SYS_ADMIN = 1 << 21
INF = (1 << 64) - 1
ROOT_IDS = dict(vm_id=1, files_id=1, fs_id=1, sighand_id=1, pid_ns_id=1, net_ns_id=2, ipc_ns_id=3,
                uts_ns_id=4, mnt_ns_id=6, user_ns_id=7, cgroup_ns_id=8, time_ns_id=5)
TASK_NS = dict(pid_ns_id=9, net_ns_id=10, ipc_ns_id=11, uts_ns_id=12, mnt_ns_id=13, user_ns_id=7,
               cgroup_ns_id=14, time_ns_id=5)
EXISTING = {"/proc/keys", "/proc/acpi", "/proc/sys", "/sys/firmware"}   # what "this kernel" has
# As a real nginx dump holds them (CPU .. RTTIME), under the spec's NOFILE and NPROC.
RLIMITS = [(INF, INF)] * 3 + [(8 << 20, INF), (0, INF), (INF, INF), (1000, 1000), (1024, 1024), (8 << 20, 8 << 20),
                              (INF, INF), (INF, INF), (96551, 96551), (819200, 819200), (0, 0), (0, 0), (INF, INF)]
NOSUID, NODEV, NOEXEC, RDONLY, STRICTATIME, RELATIME = 0x2, 0x4, 0x8, 0x1, 1 << 24, 1 << 21


PROFILE = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": [
    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": []},
    {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
]}
X86_64, I386 = 0xc000003e, 0x40000003
ALLOW, ERRNO_ENOSYS, KILL = 0x7fff0000, 0x50026, 0x80000000


def bpf(*instructions) -> bytes:
    return b"".join(struct.pack("<HBBI", code, jt, jf, k) for code, jt, jf, k in instructions)


LD_NR, LD_ARCH, LD_ARG0 = (0x20, 0, 0, 0), (0x20, 0, 0, 4), (0x20, 0, 0, 16)


def ret(action):
    return (0x06, 0, 0, action)


# The profile as libseccomp would compile it: x86_64 only (no x32), read and write.
FILTER = bpf(LD_ARCH, (0x15, 0, 6, X86_64), LD_NR, (0x35, 4, 0, 0x40000000), (0x15, 2, 0, 0), (0x15, 1, 0, 1),
             ret(ERRNO_ENOSYS), ret(ALLOW), ret(KILL))


def encoded(program: bytes) -> str:
    return base64.b64encode(program).decode()


@pytest.fixture(autouse=True)
def seccomp_names_cache(tmp_path_factory, monkeypatch):
    """The seccomp check's cache of libseccomp's names in a directory of this test's, not /run/ferry."""
    monkeypatch.setattr(imagecheck, "SECCOMP_NAMES_CACHE", str(tmp_path_factory.mktemp("run") / "seccomp-names.json"))


@pytest.fixture
def spec(monkeypatch):
    monkeypatch.setattr(spec_module, "seccomp_profile", lambda caps: copy.deepcopy(PROFILE))
    return spec_module.build(spec_module.ContainerSpec(
        container_id="b" * 64, hostname="h", rootfs="/nonexistent/rootfs",
        process=spec_module.ProcessSpec(args=("init",)), netns_path="/run/netns/ferry-bbbbbbbbbbbb",
        mounts=(spec_module.Mount("/etc/hosts", "/state/hosts"),
                spec_module.Mount("/data", "/state/volumes/v1", options=("rbind", "rprivate", "ro")))))


@pytest.fixture
def host():
    return HostFacts(
        cgroup_hierarchies=frozenset({frozenset({"pids"}), frozenset({"name=systemd"}), frozenset({""})}),
        cgroup2_options=frozenset({"rw", "nsdelegate"}),
        rlimit_hard={n: INF for n in range(16)} | {7: 1 << 20, 6: 1 << 22, 13: 0, 14: 0},   # NICE, RTPRIO 0
        oom_score_adj=0, socket_buffer_max=(4 << 20, 6 << 20), exists=lambda path: path in EXISTING)


def creds(uid=0, caps=FERRY_CAPS, **extra):
    return dict(uid=uid, gid=uid, euid=uid, egid=uid, suid=uid, sgid=uid, fsuid=uid, fsgid=uid,
                cap_inh=[0, 0], cap_prm=list(caps), cap_eff=list(caps), cap_bnd=list(FERRY_CAPS),
                cap_amb=[0, 0], secbits=0, no_new_privs=1, **extra)


def core(comm, cg_set, filter_index, uid=0, leader=True, caps=FERRY_CAPS):
    thread_core = dict(futex_rla=0, futex_rla_len=24, sched_nice=0, sched_policy=0,
                       creds=creds(uid, caps), comm=comm, cg_set=cg_set)
    if filter_index is not None:
        thread_core.update(seccomp_mode="filter", seccomp_filter=filter_index)
    entry = dict(mtype="X86_64", thread_core=thread_core)
    if leader:
        entry["tc"] = dict(task_state=1, exit_code=0, personality=0, flags=0, blk_sigset=0, comm=comm,
                           loginuid=INF >> 32, oom_score_adj=0,
                           rlimits=dict(rlimits=[dict(cur=cur, max=hard) for cur, hard in RLIMITS]))
    return {"magic": "CORE", "entries": [entry]}


def mount(mnt_id, parent, fstype, root_dev, point, flags=0, root="/", source="", options="", **extra):
    return dict(fstype=fstype, mnt_id=mnt_id, root_dev=root_dev, parent_mnt_id=parent, flags=flags, root=root,
                mountpoint=point, source=source, options=options, shared_id=0, master_id=0, **extra)


KERNEL = NOSUID | NODEV | NOEXEC | RELATIME


def mounts():
    return [
        mount(100, 50, 17, 0x29, "/", source="overlay", options="lowerdir=/l,upperdir=/u,workdir=/w"),
        mount(101, 100, 1, 0x2d, "/proc", KERNEL, source="proc"),
        mount(102, 100, 5, 0x2e, "/dev", NOSUID | STRICTATIME, source="tmpfs", options="size=65536k,mode=755"),
        mount(103, 102, 6, 0x38, "/dev/pts", NOSUID | NOEXEC | RELATIME, source="devpts",
              options="gid=5,mode=620,ptmxmode=666,newinstance"),
        mount(104, 102, 5, 0x39, "/dev/shm", KERNEL, source="shm", options="size=65536k"),
        mount(105, 102, 14, 0x2c, "/dev/mqueue", KERNEL, source="mqueue"),
        mount(106, 100, 2, 0x3a, "/sys", KERNEL | RDONLY, source="sysfs", sb_flags=RDONLY),
        mount(107, 106, 5, 0x3b, "/sys/fs/cgroup", KERNEL, source="tmpfs", options="mode=755"),
        mount(108, 107, 12, 0x24, "/sys/fs/cgroup/pids", KERNEL | RDONLY, source="cgroup", options="pids"),
        mount(109, 107, 12, 0x25, "/sys/fs/cgroup/systemd", KERNEL | RDONLY, source="systemd",
              options="name=systemd"),
        mount(110, 101, 1, 0x2d, "/proc/sys", KERNEL | RDONLY, root="/sys", source="proc"),
        mount(111, 101, 5, 0x2e, "/proc/keys", NOSUID | STRICTATIME, root="/null", source="tmpfs",
              options="size=65536k,mode=755", ext_key="/dev/null"),
        mount(112, 101, 5, 0x3c, "/proc/acpi", RELATIME | RDONLY, source="tmpfs", sb_flags=RDONLY),
        mount(113, 106, 5, 0x3d, "/sys/firmware", RELATIME | RDONLY, source="tmpfs", sb_flags=RDONLY),
        mount(114, 100, 0, 0xfe00000, "/etc/hosts", RELATIME, root="/src/state/hosts", source="/dev/vda",
              options="discard", ext_key="/etc/hosts"),
        mount(115, 100, 0, 0xfe00000, "/data", RELATIME | RDONLY, root="/src/state/volumes/v1",
              source="/dev/vda", options="discard", ext_key="/data"),
    ]


def cgroup_dir(perms=0o40755):
    props = [dict(name="cgroup.procs", value="", perms=dict(mode=0o100644, uid=0, gid=0)),
             dict(name="freezer.state", value="THAWED", perms=dict(mode=11261184, uid=22041, gid=11261184))]
    return dict(dir_name=CGROUP, dir_perms=dict(mode=perms, uid=0, gid=0), properties=props)


def cgroup_img():
    controllers = [dict(cnames=[name], dirs=[cgroup_dir()]) for name in ("pids", "name=systemd", "")]
    ctls = [dict(name=name, path="/" + CGROUP, cgns_prefix=len(CGROUP) + 1) for name in ("pids", "name=systemd", "")]
    return {"magic": "CGROUP", "entries": [dict(sets=[dict(id=2, ctls=ctls), dict(id=3, ctls=copy.deepcopy(ctls))],
                                                controllers=controllers)]}


def opts(**extra):
    return dict(dict(so_sndbuf=16384, so_rcvbuf=131072, so_snd_tmo_sec=0, so_snd_tmo_usec=0, so_rcv_tmo_sec=0,
                     so_rcv_tmo_usec=0), **extra)


FOWN = dict(uid=0, euid=0, signum=0, pid_type=0, pid=0)


def inet(file_id, sock_type=1, **opt):
    return dict(type="INETSK", id=file_id, isk=dict(id=file_id, ino=83467, family=2, type=sock_type, proto=6,
                                                   state=10, src_port=80, dst_port=0, flags=2050, backlog=511,
                                                   src_addr=[0], dst_addr=[0], fown=FOWN, opts=opts(**opt)))


def tar_gz(members: list[tarfile.TarInfo]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return gzip.compress(raw.getvalue())


def tar_member(name, kind=tarfile.DIRTYPE, **attrs):
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


PAGE = imagecheck.PAGE_SIZE
PE_LAZY, PE_PRESENT = 2, 4


def run_of(vaddr, nr_pages, flags=PE_PRESENT | PE_LAZY):
    """A pagemap entry as CRIU 4 writes it (anonymous memory is marked lazy and present)."""
    return dict(vaddr=vaddr, compat_nr_pages=0, flags=flags, nr_pages=nr_pages)


def mm_img():
    fields = ("mm_start_code", "mm_end_code", "mm_start_data", "mm_end_data", "mm_start_stack", "mm_start_brk",
              "mm_brk", "mm_arg_start", "mm_arg_end", "mm_env_start", "mm_env_end")
    return {"magic": "MM", "entries": [dict(dict.fromkeys(fields, 0x400000), exe_file_id=3)]}


def fs_img():
    return {"magic": "FS", "entries": [dict(cwd_id=1, root_id=2)]}


def pagemap(pages_id, *runs):
    return {"magic": "PAGEMAP", "entries": [dict(pages_id=pages_id), *runs]}


def dev_tar(*extra):
    return tar_gz([tar_member("./"), tar_member("./null", tarfile.CHRTYPE, devmajor=1, devminor=3),
                   tar_member("./ptmx", tarfile.SYMTYPE, linkname="pts/ptmx"),
                   tar_member("./stdin", tarfile.SYMTYPE, linkname="/proc/self/fd/0"), *extra])


class Dump:
    """A clean image set as dicts; write() turns it into image files."""

    def __init__(self):
        self.images = {
            "inventory.img": {"magic": "INVENTORY", "entries": [dict(
                img_version=2, fdinfo_per_id=True, root_ids=ROOT_IDS, ns_per_id=True, root_cg_set=1,
                lsmtype="NO_LSM", network_lock_method=1)]},
            "pstree.img": {"magic": "PSTREE", "entries": [dict(pid=1, ppid=0, pgid=1, sid=1, threads=[1]),
                                                           dict(pid=7, ppid=1, pgid=1, sid=1, threads=[7, 8])]},
            "ids-1.img": {"magic": "IDS", "entries": [dict(vm_id=2, files_id=2, fs_id=2, sighand_id=2, **TASK_NS)]},
            "ids-7.img": {"magic": "IDS", "entries": [dict(vm_id=3, files_id=3, fs_id=3, sighand_id=3, **TASK_NS)]},
            "core-1.img": core("init", 2, 0),
            "core-7.img": core("worker", 3, 1, uid=33, caps=[0, 0]),
            # CRIU records seccomp only on the leader of a threaded task (a real redis dump)
            "core-8.img": core("worker-io", 3, None, uid=33, leader=False, caps=[0, 0]),
            "seccomp.img": {"magic": "SECCOMP", "entries": [dict(seccomp_filters=[
                dict(filter=encoded(FILTER), flags=1)] * 2)]},
            "mountpoints-13.img": {"magic": "MNTS", "entries": mounts()},
            "cgroup.img": cgroup_img(),
            "netns-10.img": {"magic": "NETNS", "entries": [dict(ext_key="extRootNetNS")]},
            "files.img": {"magic": "FILES", "entries": [inet(15)]},
            "fdinfo-2.img": {"magic": "FDINFO", "entries": [dict(id=15, flags=0, type="INETSK", fd=6)]},
            "mm-1.img": mm_img(), "mm-7.img": mm_img(), "fs-1.img": fs_img(), "fs-7.img": fs_img(),
            # a real busybox dump's shape: text, data, heap and stack runs
            "pagemap-1.img": pagemap(1, run_of(0x401000, 1, PE_PRESENT), run_of(0x5e0000, 5, PE_PRESENT),
                                     run_of(0x5e5000, 1), run_of(0x7ffd1b5f9000, 2)),
            "pagemap-7.img": pagemap(2, run_of(0x401000, 1, PE_PRESENT), run_of(0x7ffd1b5f9000, 3)),
        }
        self.raw = {"tmpfs-dev-46.tar.gz.img": dev_tar(), "descriptors.json": b"[]",
                    "pages-1.img": b"\x01" * 9 * PAGE, "pages-2.img": b"\x02" * 4 * PAGE}

    def entry(self, name: str, index: int = 0) -> dict:
        return self.images[name]["entries"][index]

    def creds(self, tid: int) -> dict:
        return self.entry(f"core-{tid}.img")["thread_core"]["creds"]

    def mount(self, point: str) -> dict:
        return next(m for m in self.entry_list("mountpoints-13.img") if m["mountpoint"] == point)

    def entry_list(self, name: str) -> list:
        return self.images[name]["entries"]

    def write(self, directory) -> str:
        os.makedirs(directory, exist_ok=True)
        for name, image in self.images.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(pycriu.images.dumps(image))
        for name, data in self.raw.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
        return str(directory)


@pytest.fixture
def dump():
    return Dump()


@pytest.fixture
def check(tmp_path, spec, host):
    """check(dump) -> None when the images pass, else the refusal's message."""
    def run(dump: Dump, spec_dict: dict | None = None, host_facts: HostFacts | None = None):
        directory = dump.write(tmp_path / f"images-{len(os.listdir(tmp_path))}")
        try:
            check_images(directory, spec_dict or spec, host=host_facts or host)
        except BadArchive as refusal:
            assert "\n" not in refusal.message and refusal.hint
            return refusal.message
        return None
    return run


def refused(message: str | None, *parts: str) -> bool:
    assert message is not None, "the forged images passed"
    for part in parts:
        assert part in message, (part, message)
    return True


# ---- a clean dump passes --------------------------------------------------------------------------

def test_clean_images_pass(dump, check):
    assert check(dump) is None


def test_spec_is_the_one_ferry_builds(spec):
    """The rules read what spec.build() writes; this pins the fields they use."""
    assert spec["process"]["noNewPrivileges"] is True
    assert spec["linux"]["seccomp"] is not None
    assert {n["type"] for n in spec["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount", "cgroup", "network"}
    assert spec["process"]["capabilities"]["bounding"] == list(spec_module.DEFAULT_CAPABILITIES)


# ---- capabilities, credentials ----------------------------------------------------------------

@pytest.mark.parametrize("field", ["cap_inh", "cap_prm", "cap_eff", "cap_bnd", "cap_amb"])
def test_sys_admin_in_any_capability_set_is_refused(dump, check, field):
    dump.creds(7)[field][0] |= SYS_ADMIN
    assert refused(check(dump), "CRIU image core-7.img: task 7 (worker) asks for capability CAP_SYS_ADMIN",
                   f"({field})", "does not grant")


def test_capability_in_the_second_word_is_refused(dump, check):
    dump.creds(8)["cap_eff"][1] |= 1 << (39 - 32)  # CAP_BPF
    assert refused(check(dump), "CRIU image core-8.img: task 7 (worker) thread 8 (worker-io) asks for capability "
                                "CAP_BPF (cap_eff)")


def test_capabilities_the_spec_grants_pass(dump, check, spec):
    spec["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    dump.creds(1)["cap_eff"][0] |= SYS_ADMIN
    dump.creds(1)["cap_prm"][0] |= SYS_ADMIN
    assert check(dump) is None


def test_zombie_passes(dump, check):
    """A child its parent never reaped: CRIU lists thread 0 and no ids for it, nor creds."""
    dump.entry_list("pstree.img").append(dict(pid=9, ppid=1, pgid=1, sid=1, threads=[0]))
    dump.images["core-9.img"] = {"magic": "CORE", "entries": [dict(mtype="X86_64", tc=dict(
        task_state=2, exit_code=0, personality=0, flags=0, blk_sigset=0, comm="sleep"))]}
    assert check(dump) is None


def test_thread_without_creds_is_refused(dump, check):
    del dump.entry("core-8.img")["thread_core"]["creds"]
    assert refused(check(dump), "core-8.img", "thread 8", "no creds", "CRIU's own root credentials")


def test_task_without_thread_core_is_refused(dump, check):
    del dump.entry("core-7.img")["thread_core"]
    assert refused(check(dump), "core-7.img", "task 7 (worker)", "no creds")


def test_no_new_privs_zero_is_refused(dump, check):
    dump.creds(1)["no_new_privs"] = 0
    assert refused(check(dump), "core-1.img: task 1 (init) has no_new_privs 0", "noNewPrivileges")


def test_no_new_privs_missing_is_refused(dump, check):
    del dump.creds(8)["no_new_privs"]
    assert refused(check(dump), "core-8.img", "no_new_privs 0")


def test_no_new_privs_zero_passes_when_the_spec_allows_it(dump, check, spec):
    spec["process"]["noNewPrivileges"] = False
    dump.creds(1)["no_new_privs"] = 0
    assert check(dump) is None


def test_uid_change_needs_setuid(dump, check, spec):
    assert check(dump) is None  # the worker runs as uid 33: the spec grants CAP_SETUID
    spec["process"]["capabilities"]["bounding"].remove("CAP_SETUID")
    spec["process"]["capabilities"]["bounding"].remove("CAP_SETGID")
    for tid in (7, 8):
        for field in ("cap_bnd",):
            dump.creds(tid)[field] = [FERRY_CAPS[0] & ~(1 << 7 | 1 << 6), 0]
    dump.creds(1)["cap_bnd"] = dump.creds(1)["cap_prm"] = dump.creds(1)["cap_eff"] = \
        [FERRY_CAPS[0] & ~(1 << 7 | 1 << 6), 0]
    assert refused(check(dump), "core-7.img: task 7 (worker) has uid 33, not the spec's 0", "CAP_SETUID")


def test_extra_group_needs_setgid(dump, check, spec):
    spec["process"]["capabilities"]["bounding"].remove("CAP_SETGID")
    for tid in (1, 7, 8):
        dump.creds(tid)["cap_bnd"] = [FERRY_CAPS[0] & ~(1 << 6), 0]
    dump.creds(1)["cap_prm"] = dump.creds(1)["cap_eff"] = [FERRY_CAPS[0] & ~(1 << 6), 0]
    for tid in (7, 8):
        dump.creds(tid).update(gid=0, egid=0, sgid=0, fsgid=0)
    dump.creds(1)["groups"] = [0, 4]
    assert refused(check(dump), "core-1.img: task 1 (init) has supplementary group 4 (groups)")


def test_securebits_need_setpcap(dump, check, spec):
    dump.creds(1)["secbits"] = 0x2f
    assert check(dump) is None  # ferry grants CAP_SETPCAP
    spec["process"]["capabilities"]["bounding"].remove("CAP_SETPCAP")
    for tid in (1, 7, 8):
        dump.creds(tid)["cap_bnd"] = [FERRY_CAPS[0] & ~(1 << 8), 0]
    dump.creds(1)["cap_prm"] = dump.creds(1)["cap_eff"] = [FERRY_CAPS[0] & ~(1 << 8), 0]
    assert refused(check(dump), "core-1.img: task 1 (init) has secbits 0x2f", "CAP_SETPCAP")


@pytest.mark.parametrize("label", ["unconfined", ""])
def test_no_or_unconfined_lsm_label_passes(dump, check, label):
    dump.creds(1)["lsm_profile"] = label
    assert check(dump) is None


def test_foreign_lsm_label_is_refused(dump, check):
    dump.creds(7)["lsm_profile"] = "system_u:system_r:kernel_t:s0"
    assert refused(check(dump), "core-7.img", "LSM label 'system_u:system_r:kernel_t:s0' (lsm_profile)")


def test_unconfined_is_refused_when_the_spec_names_a_profile(dump, check, spec):
    spec["process"]["apparmorProfile"] = "containers-default"
    dump.creds(1)["lsm_profile"] = "unconfined"
    assert refused(check(dump), "core-1.img", "'unconfined' (lsm_profile)", "containers-default")
    dump.creds(1)["lsm_profile"] = "containers-default (enforce)"
    assert check(dump) is None


def test_apparmor_policy_data_is_refused(dump, check):
    dump.creds(1)["apparmor_data"] = base64.b64encode(b"policy").decode()
    assert refused(check(dump), "core-1.img", "apparmor_data")


def test_apparmor_namespaces_are_refused(dump, check):
    dump.images["apparmor.img"] = {"magic": "APPARMOR", "entries": [dict(namespaces=[dict(name="evil")])]}
    assert refused(check(dump), "CRIU image apparmor.img holds AppArmor", "this host's kernel")


# ---- seccomp --------------------------------------------------------------------------------------

def test_seccomp_disabled_is_refused(dump, check):
    dump.entry("core-7.img")["thread_core"]["seccomp_mode"] = "disabled"
    assert refused(check(dump), "core-7.img: task 7 (worker) has seccomp_mode disabled", "seccomp filter")


def test_seccomp_mode_missing_on_a_leader_is_refused(dump, check):
    del dump.entry("core-1.img")["thread_core"]["seccomp_mode"]
    assert refused(check(dump), "core-1.img: task 1 (init) has seccomp_mode disabled")


def test_old_seccomp_mode_overrides_the_thread_mode(dump, check):
    dump.entry("core-1.img")["tc"]["old_seccomp_mode"] = "disabled"
    assert refused(check(dump), "core-1.img: task 1 (init) has seccomp_mode disabled")


def test_thread_without_seccomp_needs_the_leaders_tsync(dump, check):
    filters = dump.entry("seccomp.img")["seccomp_filters"]
    filters[1] = dict(filters[1], flags=0)
    assert refused(check(dump), "core-8.img: task 7 (worker) thread 8 (worker-io) has seccomp_mode disabled")


def test_strict_seccomp_passes(dump, check):
    dump.entry("core-7.img")["thread_core"]["seccomp_mode"] = "strict"
    dump.entry("core-8.img")["thread_core"]["seccomp_mode"] = "strict"
    assert check(dump) is None


@pytest.mark.parametrize("index", [2, 99])
def test_filter_index_outside_seccomp_img_is_refused(dump, check, index):
    dump.entry("core-1.img")["thread_core"]["seccomp_filter"] = index
    assert refused(check(dump), "core-1.img", f"seccomp filter {index}", "(seccomp_filter)")


def test_filter_chain_loop_is_refused(dump, check):
    filters = dump.entry("seccomp.img")["seccomp_filters"]
    filters[0] = dict(filters[0], prev=1)
    filters[1] = dict(filters[1], prev=0)
    assert refused(check(dump), "core-1.img", "seccomp filter")


def test_missing_seccomp_img_is_refused(dump, check):
    del dump.images["seccomp.img"]
    assert refused(check(dump), "core-1.img", "seccomp filter 0")


def test_filter_that_is_not_bpf_is_refused(dump, check):
    filters = dump.entry("seccomp.img")["seccomp_filters"]
    filters[0] = dict(filters[0], filter=base64.b64encode(b"abc").decode())
    assert refused(check(dump), "CRIU image seccomp.img has filter 0, which is not a BPF program")


needs_x86_64 = pytest.mark.skipif(platform.machine() != "x86_64", reason="the test filters are x86_64 BPF")


def set_filter(dump, program: bytes, index: int = 0, **fields) -> None:
    filters = dump.entry("seccomp.img")["seccomp_filters"]
    filters[index] = dict(filters[index], filter=encoded(program), **fields)


@needs_x86_64
@pytest.mark.parametrize("program,says", [
    (bpf(ret(ALLOW)), "lets syscall "),
    # bpf (321) let through for one argument value only: arguments are unknown, so it counts
    (bpf(LD_NR, (0x15, 0, 3, 321), LD_ARG0, (0x15, 0, 1, 1234), ret(ALLOW)) + FILTER, "syscall bpf (x86_64 321)"),
    # every syscall of 32-bit x86, which the spec does not list (int 0x80 from a 64-bit task)
    (bpf(LD_ARCH, (0x15, 0, 1, I386), ret(ALLOW)) + FILTER, "(x86 "),
    # an x32 number: the x86_64 arch with bit 30 set
    (bpf(LD_NR, (0x15, 0, 1, 0x40000000 + 165), ret(ALLOW)) + FILTER, "syscall mount (x32 0x400000a5)"),
    # the action comes from an argument, so it may be ALLOW
    (bpf(LD_ARG0, (0x16, 0, 0, 0)), "lets syscall "),
    # ALLOW stored in scratch memory and returned later
    (bpf((0x00, 0, 0, ALLOW), (0x02, 0, 0, 3), (0x00, 0, 0, 0), (0x60, 0, 0, 3), (0x16, 0, 0, 0)), "lets syscall "),
    # TRACE lets a tracer inside the container run the syscall
    (bpf(ret(0x7ff00000)), "lets syscall "),
])
def test_filter_that_lets_a_denied_syscall_through_is_refused(dump, check, program, says):
    set_filter(dump, program)
    assert refused(check(dump), "CRIU image seccomp.img: task 1 (init) has a seccomp filter that lets", says,
                   "which the container's spec denies")


@needs_x86_64
def test_the_seccomp_check_answers_the_same_from_its_cache(dump, check, monkeypatch):
    set_filter(dump, bpf(LD_NR, (0x15, 0, 1, 0x40000000 + 165), ret(ALLOW)) + FILTER)
    first = check(dump)   # resolves libseccomp's names and writes the cache
    assert os.path.exists(imagecheck.SECCOMP_NAMES_CACHE)
    monkeypatch.setattr(imagecheck, "_resolve_tables", lambda abis: pytest.fail("the cache was not read"))
    assert check(dump) == first and "syscall mount (x32 0x400000a5)" in first
    set_filter(dump, FILTER)
    assert check(dump) is None


@needs_x86_64
def test_filter_that_allows_less_passes(dump, check):
    set_filter(dump, bpf(ret(KILL)))
    set_filter(dump, bpf(LD_ARCH, (0x15, 0, 3, X86_64), LD_NR, (0x15, 0, 1, 0), ret(ALLOW), ret(ERRNO_ENOSYS)), 1)
    assert check(dump) is None


@needs_x86_64
def test_the_strictest_filter_of_a_chain_wins(dump, check):
    """A newer allow-everything filter on top of the spec's own leaves the spec's answer."""
    filters = dump.entry("seccomp.img")["seccomp_filters"]
    filters.append(dict(filter=encoded(bpf(ret(ALLOW))), flags=1, prev=0))
    dump.entry("core-1.img")["thread_core"]["seccomp_filter"] = 2
    assert check(dump) is None
    filters[2]["prev"] = 1
    filters[1] = dict(filters[1], filter=encoded(bpf(ret(ALLOW))))
    assert refused(check(dump), "task 1 (init) has a seccomp filter that lets syscall")


@needs_x86_64
@pytest.mark.parametrize("program,says", [
    (bpf((0x99, 0, 0, 0)), "instruction 0x99"),
    (bpf((0x05, 0, 0, 7), ret(ALLOW)), "a jump past the end"),
    (bpf((0x20, 0, 0, 64), ret(ALLOW)), "a load at offset 64"),
    (bpf(LD_NR), "a jump past the end"),   # falls off the end
])
def test_filter_the_kernel_would_not_load_is_refused(dump, check, program, says):
    set_filter(dump, program)
    assert refused(check(dump), "CRIU image seccomp.img holds a filter the kernel would not load", says)


def test_seccomp_disabled_passes_when_the_spec_has_none(dump, check, spec):
    del spec["linux"]["seccomp"]
    dump.entry("core-1.img")["thread_core"]["seccomp_mode"] = "disabled"
    assert check(dump) is None


# ---- scheduling, rlimits, oom, timers -----------------------------------------------------------

def test_real_time_priority_needs_sys_nice(dump, check):
    dump.entry("core-8.img")["thread_core"].update(sched_policy=1, sched_prio=99)
    assert refused(check(dump), "core-8.img", "real-time policy 1 priority 99 (sched_policy)", "CAP_SYS_NICE")


def test_negative_nice_needs_sys_nice(dump, check):
    dump.entry("core-1.img")["thread_core"]["sched_nice"] = -20
    assert refused(check(dump), "core-1.img", "nice -20 (sched_nice)", "CAP_SYS_NICE")


def test_rlimit_above_the_spec_is_refused(dump, check, spec):
    nofile = next(r["hard"] for r in spec["process"]["rlimits"] if r["type"] == "RLIMIT_NOFILE")
    dump.entry("core-7.img")["tc"]["rlimits"]["rlimits"][7] = dict(cur=nofile, max=nofile + 1)
    assert refused(check(dump), "core-7.img: task 7 (worker) asks for RLIMIT_NOFILE", "spec's hard limit",
                   "CAP_SYS_RESOURCE")


def test_rlimit_above_the_host_is_refused(dump, check, host):
    dump.entry("core-1.img")["tc"]["rlimits"]["rlimits"][8] = dict(cur=1, max=INF)
    limited = host._replace(rlimit_hard={**host.rlimit_hard, 8: 8 << 20})
    assert refused(check(dump, host_facts=limited), "RLIMIT_MEMLOCK 1/", "host's hard limit 8388608")


def test_lowered_oom_score_adj_is_refused(dump, check):
    dump.entry("core-1.img")["tc"]["oom_score_adj"] = -1000
    assert refused(check(dump), "core-1.img", "oom_score_adj -1000", "CAP_SYS_RESOURCE")


def test_alarm_timer_needs_wake_alarm(dump, check):
    zero = dict(isec=0, iusec=0, vsec=0, vusec=0)
    dump.entry("core-1.img")["tc"]["timers"] = dict(real=zero, virt=zero, prof=zero, posix=[dict(
        it_id=1, clock_id=9, si_signo=14, it_sigev_notify=0, sival_ptr=0, overrun=0, isec=0, insec=0,
        vsec=0, vnsec=0)])
    assert refused(check(dump), "core-1.img", "alarm clock 9", "CAP_WAKE_ALARM")


# ---- namespaces ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,field", [("mount", "mnt_ns_id"), ("pid", "pid_ns_id"), ("ipc", "ipc_ns_id"),
                                        ("uts", "uts_ns_id"), ("network", "net_ns_id"),
                                        ("cgroup", "cgroup_ns_id")])
def test_root_task_in_the_dumping_criu_namespace_is_refused(dump, check, kind, field):
    dump.entry("ids-1.img")[field] = ROOT_IDS[field]
    dump.entry("ids-7.img")[field] = ROOT_IDS[field]
    assert refused(check(dump), f"ids-1.img: task 1 (init) would stay in the host's {kind} namespace",
                   f"({field} {ROOT_IDS[field]}", "root_ids")


def test_root_task_without_a_namespace_id_is_refused(dump, check):
    del dump.entry("ids-1.img")["pid_ns_id"]
    del dump.entry("ids-7.img")["pid_ns_id"]
    assert refused(check(dump), "ids-1.img", "host's pid namespace (pid_ns_id 0")


def test_user_namespace_the_spec_does_not_create_is_refused(dump, check):
    dump.entry("ids-1.img")["user_ns_id"] = 99
    dump.entry("ids-7.img")["user_ns_id"] = 99
    assert refused(check(dump), "ids-1.img: task 1 (init) asks for a new user namespace (user_ns_id 99)")


def test_time_namespace_of_a_restored_container_passes(dump, check):
    """CRIU puts every restored tree in a time namespace: a second checkpoint shows its own."""
    dump.entry("ids-1.img")["time_ns_id"] = 99
    dump.entry("ids-7.img")["time_ns_id"] = 99
    assert check(dump) is None


def test_task_in_another_namespace_is_refused(dump, check):
    dump.entry("ids-7.img")["mnt_ns_id"] = 6
    assert refused(check(dump), "ids-7.img: task 7 (worker) is in another mount namespace (mnt_ns_id)")


def test_missing_root_ids_is_refused(dump, check):
    del dump.images["ids-1.img"]
    assert refused(check(dump), "CRIU image ids-1.img is missing for the root task 1")


def test_inventory_without_root_ids_is_refused(dump, check):
    del dump.entry("inventory.img")["root_ids"]
    assert refused(check(dump), "inventory.img", "root_ids")


def test_network_namespace_not_marked_external_is_refused(dump, check):
    dump.images["netns-10.img"]["entries"] = [dict()]
    assert refused(check(dump), "netns-10.img", "not marked external", "instead of joining")


def test_external_network_namespace_is_refused_when_the_spec_creates_one(dump, check, spec):
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"] + \
        [{"type": "network"}]
    assert refused(check(dump), "netns-10.img", "external network namespace", "spec creates one")


# ---- mounts ---------------------------------------------------------------------------------------

def add_mount(dump, **fields):
    entry = mount(999, fields.pop("parent_mnt_id", 100), fields.pop("fstype", 5), fields.pop("root_dev", 0x77),
                  fields.pop("point", "/mnt"), **fields)
    dump.entry_list("mountpoints-13.img").append(entry)
    return entry


@pytest.mark.parametrize("fields,says", [
    (dict(fstype=16, fsname="ext4", source="/dev/vda", root_dev=0xfe00000), "new mount of ext4 from /dev/vda"),
    (dict(fstype=0, source="/dev/vda", root_dev=0xfe00000), "on block device 254:0"),
    (dict(fstype=0, source="/dev/vda", root_dev=0xfe00000, ext_key="CRIU:EXTERNAL_DEV"),
     "external mount 'CRIU:EXTERNAL_DEV'"),
    (dict(fstype=0, root="/", source="/dev/vda", ext_key="CRIU:AUTOGENERATED"), "external mount 'CRIU:AUTO"),
    (dict(fstype=17, source="overlay", options="lowerdir=/,upperdir=/tmp/u,workdir=/tmp/w"), "new mount of overlay"),
    (dict(fstype=11, source="debugfs", point="/sys/kernel/debug", parent_mnt_id=106), "new mount of debugfs"),
    (dict(fstype=9, source="securityfs", point="/sys/kernel/security", parent_mnt_id=106),
     "new mount of securityfs"),
    (dict(fstype=4, source="binfmt_misc", point="/proc/sys/fs/binfmt_misc", parent_mnt_id=110),
     "new mount of binfmt_misc"),
    (dict(fstype=1, source="proc", point="/mnt"), "new mount of proc"),
    (dict(fstype=17, root="/link-to-host-root", root_dev=0x29), "bind of the container's root filesystem"),
    (dict(fstype=0, root="/src/state/volumes/v1/evil-link", root_dev=0xfe00000), "bound from external mount 115"),
    (dict(fstype=1, root="/self/root", root_dev=0x2d), "binds /self/root of proc"),
    (dict(fstype=5, root="/x", root_dev=0x2e), "bind of /x from a tmpfs"),
    (dict(ext_key="/data", point="/mnt"), "external mount '/data'"),
    (dict(ext_key="/state/volumes/v1"), "external mount '/state/volumes/v1'"),
    (dict(ext_key="/dev/null", point="/mnt"), "external mount '/dev/null'"),
])
def test_mount_the_spec_does_not_ask_for_is_refused(dump, check, fields, says):
    add_mount(dump, **fields)
    assert refused(check(dump), "CRIU image mountpoints-13.img: mount 999 at", says)


@pytest.mark.parametrize("root", ["/sys/../..", "/sys/../../../etc", "sys", "/sys/./x", "/sys//x"])
def test_bind_root_that_climbs_is_refused(dump, check, root):
    dump.mount("/proc/sys")["root"] = root
    assert refused(check(dump), "mount 110 at /proc/sys has root", "not a clean absolute path")


@pytest.mark.parametrize("point", ["/data/../etc", "/mnt/", "relative", "/proc//sys", "/mnt\0/proc"])
def test_unclean_mountpoint_is_refused(dump, check, point):
    add_mount(dump, point=point)
    assert refused(check(dump), "mountpoints-13.img: mount 999 at")


def test_second_mount_on_a_mountpoint_is_refused(dump, check):
    add_mount(dump, fstype=1, root_dev=0x99, point="/proc", parent_mnt_id=101)
    assert refused(check(dump), "mount 999 at /proc is mounted over another mount")


def test_parent_that_does_not_enclose_is_refused(dump, check):
    dump.mount("/proc/sys")["parent_mnt_id"] = 100   # would be mounted under, and hidden by, /proc
    assert refused(check(dump), "mount 110 at /proc/sys names parent 100 at /", "lies on the mount at /proc")


def test_readonly_path_made_writable_is_refused(dump, check):
    dump.mount("/proc/sys")["flags"] &= ~RDONLY
    assert refused(check(dump), "mount 110 at /proc/sys lacks ro")


def test_readonly_path_left_out_is_refused(dump, check):
    entries = dump.entry_list("mountpoints-13.img")
    entries.remove(dump.mount("/proc/sys"))
    assert refused(check(dump), "leaves /proc/sys writable", "read-only")


@pytest.mark.parametrize("point", ["/proc/keys", "/proc/acpi", "/sys/firmware"])
def test_mask_left_out_is_refused(dump, check, point):
    dump.entry_list("mountpoints-13.img").remove(dump.mount(point))
    assert refused(check(dump), f"leaves {point} unmasked")


def test_masks_of_paths_this_kernel_lacks_are_not_required(dump, check, spec):
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]   # EXISTING says this kernel has none
    assert check(dump) is None


def test_masked_directory_tmpfs_must_be_read_only(dump, check):
    dump.mount("/proc/acpi").update(flags=RELATIME, sb_flags=0)
    assert refused(check(dump), "mount 112 at /proc/acpi lacks ro", "masked path")


def test_masked_directory_tmpfs_with_other_options_is_refused(dump, check):
    dump.mount("/proc/acpi")["options"] = "mpol=bind:0"
    assert refused(check(dump), "mount 112 at /proc/acpi asks for tmpfs option 'mpol=bind:0'")


@pytest.mark.parametrize("point,flag", [("/sys", "ro"), ("/proc", "nosuid"), ("/dev/shm", "noexec"),
                                        ("/dev", "nosuid"), ("/sys/fs/cgroup/pids", "ro"), ("/data", "ro")])
def test_dropped_mount_flag_is_refused(dump, check, point, flag):
    entry = dump.mount(point)
    bit = {"ro": RDONLY, "nosuid": NOSUID, "noexec": NOEXEC}[flag]
    entry["flags"] &= ~bit
    entry["sb_flags"] = entry.get("sb_flags", 0) & ~bit
    assert refused(check(dump), f"at {point} lacks {flag}")


@pytest.mark.parametrize("options", ["size=100g", "mode=1777", "", "size=50%", "nr_blocks=999999999"])
def test_tmpfs_larger_than_the_spec_is_refused(dump, check, options):
    dump.mount("/dev/shm")["options"] = options
    assert refused(check(dump), "mount 104 at /dev/shm asks for a tmpfs of", "spec's 67108864 bytes")


@pytest.mark.parametrize("options,says", [
    ("pids,release_agent=/tmp/x", "cgroup options 'pids,release_agent=/tmp/x'"),
    ("cpu", "'cpu', which are not one of this host's cgroup hierarchies"),
    ("name=evil", "'name=evil'"),
])
def test_cgroup_mount_options_must_be_a_host_hierarchy(dump, check, options, says):
    dump.mount("/sys/fs/cgroup/pids")["options"] = options
    assert refused(check(dump), "mount 108 at /sys/fs/cgroup/pids", says)


def test_cgroup2_options_must_be_the_hosts(dump, check):
    add_mount(dump, fstype=23, point="/sys/fs/cgroup/unified", parent_mnt_id=107, flags=KERNEL | RDONLY,
              options="memory_recursiveprot")
    assert refused(check(dump), "cgroup2 option 'memory_recursiveprot'")
    dump.entry_list("mountpoints-13.img")[-1]["options"] = "nsdelegate"
    assert check(dump) is None


def test_propagation_is_refused(dump, check):
    dump.mount("/data")["shared_id"] = 3
    assert refused(check(dump), "mount 115 at /data asks for mount propagation")


@pytest.mark.parametrize("flag", ["with_plugin", "deleted", "ext_mount"])
def test_plugin_deleted_or_old_external_mounts_are_refused(dump, check, flag):
    dump.mount("/dev/mqueue")[flag] = True
    assert refused(check(dump), f"mount 105 at /dev/mqueue sets {flag}")


def test_console_bind_needs_a_terminal(dump, check, spec):
    add_mount(dump, fstype=6, root="/0", root_dev=0x38, point="/dev/console", parent_mnt_id=102,
              flags=NOSUID | NOEXEC, options="gid=5,mode=620,ptmxmode=666,newinstance")
    assert refused(check(dump), "mount 999 at /dev/console binds pty /0")
    spec["process"]["terminal"] = True
    assert check(dump) is None


def test_root_must_be_the_namespace_root(dump, check):
    dump.mount("/")["parent_mnt_id"] = 101
    assert refused(check(dump), "mount 100 at / is not the root of its mount namespace")


def test_missing_root_mount_is_refused(dump, check):
    dump.mount("/")["mountpoint"] = "/old-root"
    assert refused(check(dump), "mountpoints-13.img")


def test_missing_mountpoints_image_is_refused(dump, check):
    del dump.images["mountpoints-13.img"]
    assert refused(check(dump), "CRIU image mountpoints-13.img is missing or empty")


# ---- tmpfs contents -----------------------------------------------------------------------------

@pytest.mark.parametrize("member,says", [
    (tar_member("./sda", tarfile.BLKTYPE, devmajor=8, devminor=0), "is device b 8:0"),
    (tar_member("./mem", tarfile.CHRTYPE, devmajor=1, devminor=1), "is device c 1:1"),
    (tar_member("../../etc/cron.d/x", tarfile.REGTYPE), "climbs out of its mount"),
    (tar_member("/etc/passwd", tarfile.REGTYPE), "climbs out of its mount"),
    (tar_member("./shadow", tarfile.LNKTYPE, linkname="/etc/shadow"), "is a hard link to '/etc/shadow'"),
    (tar_member("./shadow", tarfile.LNKTYPE, linkname="../../etc/shadow"), "is a hard link"),
])
def test_tmpfs_contents_are_checked(dump, check, member, says):
    dump.raw["tmpfs-dev-46.tar.gz.img"] = dev_tar(member)
    assert refused(check(dump), "CRIU image tmpfs-dev-46.tar.gz.img: tmpfs member", says)


def test_tmpfs_contents_beyond_the_tmpfs_size_are_refused(dump, check):
    dump.raw["tmpfs-dev-46.tar.gz.img"] = dev_tar(tar_member("./big", tarfile.REGTYPE, size=66 << 20))
    assert refused(check(dump), "tmpfs-dev-46.tar.gz.img is not a gzip'd tar of at most 67108864 bytes")


def test_tmpfs_contents_that_are_not_a_tar_are_refused(dump, check):
    dump.raw["tmpfs-dev-46.tar.gz.img"] = b"\x1f\x8b garbage"
    assert refused(check(dump), "tmpfs-dev-46.tar.gz.img is not a gzip'd tar")


# ---- cgroups ------------------------------------------------------------------------------------

def cg(dump) -> dict:
    return dump.entry("cgroup.img")


@pytest.mark.parametrize("name", ["ferry/../..", "../ferry", "ferry//x", "./ferry", ""])
def test_cgroup_directory_that_climbs_is_refused(dump, check, name):
    cg(dump)["controllers"][0]["dirs"][0]["dir_name"] = name
    assert refused(check(dump), "cgroup.img: controller pids has directory", "not a clean relative path")


@pytest.mark.parametrize("path", ["/", "/ferry", "/ferry/other", f"/{CGROUP}/../x", f"/{CGROUP}x"])
def test_cgroup_set_outside_the_container_is_refused(dump, check, path):
    cg(dump)["sets"][1]["ctls"][0]["path"] = path
    assert refused(check(dump), "cgroup.img: set 3 puts tasks in", "outside the container's cgroup")


def test_cgroup_set_inside_the_container_passes(dump, check):
    cg(dump)["sets"][1]["ctls"][0]["path"] = f"/{CGROUP}/sub"
    cg(dump)["controllers"][0]["dirs"][0]["children"] = [dict(dir_name="sub", dir_perms=dict(
        mode=0o40755, uid=0, gid=0), properties=[dict(name="pids.max", value="10")])]
    assert check(dump) is None


def test_cgroup_namespace_prefix_must_be_the_container(dump, check):
    cg(dump)["sets"][0]["ctls"][1]["cgns_prefix"] = 7
    assert refused(check(dump), "cgroup.img: set 2 has cgns_prefix 7")


@pytest.mark.parametrize("name", ["../../../release_agent", "a/b", "..", "release_agent"])
def test_cgroup_property_names_are_plain(dump, check, name):
    cg(dump)["controllers"][0]["dirs"][0]["children"] = [dict(dir_name="x", properties=[dict(name=name, value="/x")])]
    assert refused(check(dump), f"cgroup.img: cgroup {CGROUP}/x",
                   "release_agent, which runs as root" if name == "release_agent" else "not a plain file name")


@pytest.mark.parametrize("child", ["..", "a/b", ".", ""])
def test_cgroup_child_names_are_plain(dump, check, child):
    cg(dump)["controllers"][1]["dirs"][0]["children"] = [dict(dir_name=child)]
    assert refused(check(dump), "cgroup.img", "not a plain name")


def test_cgroup_controller_this_host_lacks_is_refused(dump, check):
    cg(dump)["controllers"].append(dict(cnames=["devices"], dirs=[cgroup_dir()]))
    assert refused(check(dump), "cgroup.img: names cgroup controller 'devices'", "outside the container's cgroup")


def test_cgroup_controller_with_a_second_top_directory_is_refused(dump, check):
    cg(dump)["controllers"][0]["dirs"].append(dict(cgroup_dir(), dir_name="evil"))
    assert refused(check(dump), "controller pids has 2 top directories")


def test_writable_cgroup_permissions_are_refused(dump, check):
    cg(dump)["controllers"][0]["dirs"][0] = cgroup_dir(perms=0o40777)
    assert refused(check(dump), f"cgroup.img: cgroup {CGROUP} asks for owner 0:0 mode 777")


def test_root_task_in_criu_cgroup_set_keeps_the_host_cgroup_namespace(dump, check):
    dump.entry("core-1.img")["thread_core"]["cg_set"] = 1
    assert refused(check(dump), "core-1.img: task 1 (init) would stay in the host's cgroup namespace")


def test_cgroup_set_without_namespace_prefix_is_refused(dump, check):
    for ctl in cg(dump)["sets"][0]["ctls"]:
        del ctl["cgns_prefix"]
    assert refused(check(dump), "core-1.img", "host's cgroup namespace (cg_set 2 has no cgns_prefix)")


def test_unknown_cgroup_set_is_refused(dump, check):
    dump.entry("core-8.img")["thread_core"]["cg_set"] = 42
    assert refused(check(dump), "core-8.img", "thread 8", "cgroup set 42 (cg_set)")


# ---- open files ---------------------------------------------------------------------------------

def test_raw_socket_needs_net_raw(dump, check):
    dump.entry("files.img")["isk"]["type"] = 3
    assert refused(check(dump), "files.img: task 1 (init) fd 6 (file 15) is a raw socket", "CAP_NET_RAW")


def test_packet_socket_needs_net_raw(dump, check):
    dump.entry_list("files.img").append(dict(type="PACKETSK", id=16, psk=dict(
        id=16, type=3, protocol=768, flags=2, ifindex=0, fown=FOWN, opts=opts(), version=0, reserve=0,
        aux_data=False, orig_dev=False, vnet_hdr=False, loss=False, timestamp=0, copy_thresh=0)))
    assert refused(check(dump), "files.img: file 16, which no task holds, is a packet socket", "CAP_NET_RAW")


@pytest.mark.parametrize("option,says", [(dict(so_mark=7), "SO_MARK 7"), (dict(so_priority=7), "SO_PRIORITY 7"),
                                         (dict(so_sndbuf=1 << 30), "buffer (so_sndbuf)")])
def test_privileged_socket_options_need_net_admin(dump, check, option, says):
    dump.images["files.img"]["entries"] = [inet(15, **option)]
    assert refused(check(dump), "files.img: task 1 (init) fd 6", says, "CAP_NET_ADMIN")


def test_autotuned_tcp_buffers_pass(dump, check):
    """A busy established connection: TCP grew its buffers to tcp_wmem's maximum (a real redis dump)."""
    dump.images["files.img"]["entries"] = [inet(15, so_sndbuf=4 << 20, so_rcvbuf=3357434)]
    assert check(dump) is None


def test_socket_in_another_network_namespace_is_refused(dump, check):
    dump.entry("files.img")["isk"]["ns_id"] = 2
    assert refused(check(dump), "files.img", "network namespace 2, not the container's 10")


def test_tun_file_needs_net_admin(dump, check):
    dump.entry_list("files.img").append(dict(type="TUNF", id=17, tunf=dict(id=17, flags=2)))
    assert refused(check(dump), "files.img: file 17", "tun device", "CAP_NET_ADMIN")


def test_alarm_timerfd_needs_wake_alarm(dump, check):
    dump.entry_list("files.img").append(dict(type="TIMERFD", id=18, tfd=dict(
        id=18, flags=2, fown=FOWN, clockid=8, ticks=0, settime_flags=0, vsec=0, vnsec=0, isec=0, insec=0)))
    assert refused(check(dump), "files.img: file 18", "alarm clock 8", "CAP_WAKE_ALARM")


# ---- memory pages -------------------------------------------------------------------------------

def runs(dump, name="pagemap-1.img") -> list:
    return dump.entry_list(name)[1:]


@pytest.mark.parametrize("size,says", [
    (0, "is 0 bytes"), (9 * PAGE // 2, f"is {9 * PAGE // 2} bytes"), (9 * PAGE - 1, f"is {9 * PAGE - 1} bytes"),
    (10 * PAGE, f"is {10 * PAGE} bytes"),
])
def test_pages_image_of_another_size_than_its_pagemap_is_refused(dump, check, size, says):
    """A short pages image made CRIU's restorer spin forever on preadv's 0 at the end of the file."""
    dump.raw["pages-1.img"] = dump.raw["pages-1.img"].ljust(size, b"\0")[:size]
    assert refused(check(dump), f"CRIU image pages-1.img {says}, but pagemap-1.img puts 9 pages "
                                f"({9 * PAGE} bytes) of task 1 (init) in it (nr_pages)")


def test_pages_image_size_counts_only_present_runs_of_every_pagemap(dump, check):
    runs(dump, "pagemap-7.img")[1]["nr_pages"] = 4
    assert refused(check(dump), "pages-2.img is 16384 bytes", "puts 5 pages (20480 bytes) of task 7 (worker)")
    dump.raw["pages-2.img"] += b"\0" * PAGE
    assert check(dump) is None


def test_missing_pages_image_is_refused(dump, check):
    del dump.raw["pages-2.img"]
    assert refused(check(dump), "CRIU image pagemap-7.img: task 7 (worker) has its pages in pages-2.img "
                                "(pages_id 2), which is missing")


def test_pages_image_named_by_two_pagemaps_is_refused(dump, check):
    dump.entry("pagemap-7.img")["pages_id"] = 1
    assert refused(check(dump), "pagemap-7.img: task 7 (worker)", "pages-1.img (pages_id 1), which "
                                "pagemap-1.img names too")


@pytest.mark.parametrize("change", [dict(flags=1), dict(flags=PE_PRESENT | 1), dict(in_parent=True)])
def test_pages_in_a_parent_image_are_refused(dump, check, change):
    runs(dump)[2].update(change)
    assert refused(check(dump), "pagemap-1.img: task 1 (init) entry 2 at 0x5e5000 has its pages in a parent "
                                "image", "PE_PARENT", "no pre-dump")


def test_lazy_pages_without_their_content_are_refused(dump, check):
    runs(dump)[3]["flags"] = PE_LAZY
    dump.raw["pages-1.img"] = dump.raw["pages-1.img"][:7 * PAGE]
    assert refused(check(dump), "pagemap-1.img: task 1 (init) entry 3 at 0x7ffd1b5f9000: its pages are to come "
                                "from a page server (flags PE_LAZY without PE_PRESENT)", "has none")


@pytest.mark.parametrize("flags,says", [(0, "has no pages (flags 0)"), (PE_PRESENT | 8, "unknown flags 0xc"),
                                        (PE_PRESENT | 1 << 31, "unknown flags 0x80000004")])
def test_odd_pagemap_flags_are_refused(dump, check, flags, says):
    runs(dump)[0]["flags"] = flags
    assert refused(check(dump), "pagemap-1.img: task 1 (init) entry 0 at 0x401000", says)


def test_entries_without_flags_or_nr_pages_read_as_criu_reads_them(dump, check):
    """Older CRIUs wrote neither: CRIU takes such runs as present, of compat_nr_pages pages."""
    dump.entry_list("pagemap-1.img")[2] = dict(vaddr=0x5e0000, compat_nr_pages=5)
    assert check(dump) is None
    runs(dump)[1]["compat_nr_pages"] = 4   # the same dict
    assert refused(check(dump), "pages-1.img is 36864 bytes, but pagemap-1.img puts 8 pages")


@pytest.mark.parametrize("index,change,says", [
    (1, dict(nr_pages=0), "entry 1 at 0x5e0000 has nr_pages 0"),
    (1, dict(vaddr=0x5e0010), "entry 1 at 0x5e0010 is not page-aligned (vaddr)"),
    (2, dict(vaddr=0x5e4000), "entry 2 at 0x5e4000 starts below the end 0x5e5000 of the entry before it"),
    (1, dict(vaddr=0x400000), "entry 1 at 0x400000 starts below the end 0x402000"),
    (3, dict(vaddr=(1 << 47) - PAGE), "entry 3 at 0x7ffffffff000 ends at 0x800000001000, beyond a task's "
                                      "address space (0x7ffffffff000)"),
    (3, dict(vaddr=(1 << 64) - PAGE), "entry 3 at 0xfffffffffffff000 ends at 0x10000000000001000"),
    (3, dict(nr_pages=(1 << 64) - 1), "ends at"),
])
def test_pagemap_entries_out_of_bounds_order_or_alignment_are_refused(dump, check, index, change, says):
    runs(dump)[index].update(change)
    assert refused(check(dump), "CRIU image pagemap-1.img: task 1 (init)", says)


def test_five_level_paging_allows_higher_addresses(dump, check, host):
    high = (1 << 47) + 0x1000
    runs(dump)[3]["vaddr"] = high
    assert refused(check(dump), "beyond a task's address space (0x7ffffffff000)")
    assert check(dump, host_facts=host._replace(task_size=imagecheck.TASK_SIZE_56)) is None


def test_shared_memory_pagemaps_are_checked_too(dump, check):
    dump.images["pagemap-shmem-4242.img"] = pagemap(3, run_of(0, 2, PE_PRESENT), run_of(0x10000, 1, PE_PRESENT))
    dump.raw["pages-3.img"] = b"\x03" * 3 * PAGE
    assert check(dump) is None
    dump.raw["pages-3.img"] = b"\x03" * 2 * PAGE
    assert refused(check(dump), "pages-3.img is 8192 bytes, but pagemap-shmem-4242.img puts 3 pages "
                                "(12288 bytes) of shared memory 4242")


def test_pagemap_of_no_task_is_checked_and_named(dump, check):
    dump.images["pagemap-99.img"] = pagemap(3, run_of(0x1000, 1))
    assert refused(check(dump), "pagemap-99.img: pid 99, which pstree.img does not list, has its pages in "
                                "pages-3.img (pages_id 3), which is missing")


def test_pagemap_with_only_its_head_passes_with_an_empty_pages_image(dump, check):
    dump.images["pagemap-7.img"] = pagemap(2)
    dump.raw["pages-2.img"] = b""
    assert check(dump) is None


def test_pagemap_without_its_head_is_refused(dump, tmp_path, spec, host):
    directory = dump.write(tmp_path / "headless")
    with open(os.path.join(directory, "pagemap-7.img"), "rb") as f:
        magic = f.read(8)
    with open(os.path.join(directory, "pagemap-7.img"), "wb") as f:
        f.write(magic)
    with pytest.raises(BadArchive, match=r"CRIU image pagemap-7.img: task 7 \(worker\) has no pagemap_head"):
        check_images(directory, spec, host=host)


def test_pagemap_past_its_bound_is_refused_before_it_is_read(dump, tmp_path, spec, host):
    directory = dump.write(tmp_path / "huge")
    with open(os.path.join(directory, "pagemap-7.img"), "ab") as f:
        f.truncate(imagecheck.MAX_BYTES["PAGEMAP"] + 1)
    with pytest.raises(BadArchive, match=f"pagemap-7.img is {imagecheck.MAX_BYTES['PAGEMAP'] + 1} bytes, more than"):
        check_images(directory, spec, host=host)


def test_pages_refusals_say_the_images_are_damaged(dump, check, tmp_path, spec, host):
    dump.raw["pages-1.img"] = dump.raw["pages-1.img"][:PAGE]
    directory = dump.write(tmp_path / "short")
    with pytest.raises(BadArchive) as refusal:
        check_images(directory, spec, host=host)
    assert refusal.value.hint == imagecheck.DAMAGE_HINT and "hang" in refusal.value.hint


def test_host_task_size_follows_the_kernels_paging(monkeypatch):
    flags = "flags\t\t: fpu vme de pse la57 pcid\n"
    monkeypatch.setattr(imagecheck, "_read_text", lambda path: flags if path == "/proc/cpuinfo" else "")
    monkeypatch.setattr(imagecheck.os, "uname", lambda: os.uname_result(("Linux", "h", "6", "#1", "x86_64")))
    assert imagecheck._task_size() == imagecheck.TASK_SIZE_56
    flags = "flags\t\t: fpu vme de pse pcid\n"
    assert imagecheck._task_size() == imagecheck.TASK_SIZE_47 == (1 << 47) - 4096


# ---- hostile files ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["packetsk.img", "inetsk.img", "tunfile.img", "creds-1.img", "rlimit-7.img",
                                  "posix-timers-1.img", "binfmt-misc.img", "fanotify.img"])
def test_legacy_images_are_refused(dump, check, name):
    dump.raw[name] = b"\x00" * 8
    assert refused(check(dump), f"CRIU image {name} is a legacy image")


def test_missing_directory_is_refused(tmp_path, spec, host):
    with pytest.raises(BadArchive, match="cannot be read"):
        check_images(str(tmp_path / "absent"), spec, host=host)


@pytest.mark.parametrize("name", ["pstree.img", "inventory.img", "core-7.img", "core-8.img"])
def test_missing_image_is_refused(dump, check, name):
    del dump.images[name]
    assert refused(check(dump), name)


@pytest.mark.parametrize("name", ["mm-1.img", "mm-7.img", "fs-1.img", "fs-7.img"])
def test_missing_memory_or_fs_image_of_a_live_task_is_refused(dump, check, name):
    """CRIU took the missing image for an empty one and crashed on the entry it lacked (SIGSEGV)."""
    del dump.images[name]
    pid = name[3:-4]
    assert refused(check(dump), f"CRIU image {name} is missing for task {pid} ({'init' if pid == '1' else 'worker'})")


def test_symlinked_image_is_refused(dump, tmp_path, spec, host):
    directory = dump.write(tmp_path / "images")
    os.unlink(os.path.join(directory, "core-7.img"))
    os.symlink("/etc/passwd", os.path.join(directory, "core-7.img"))
    with pytest.raises(BadArchive, match="core-7.img is not a regular file"):
        check_images(directory, spec, host=host)


@pytest.mark.parametrize("name", ["pages-1.img", "tcp-stream-31abb.img", "sub"])
def test_any_link_or_odd_file_in_the_directory_is_refused(dump, tmp_path, spec, host, name):
    """CRIU follows them: a pages image linked to /etc/shadow becomes the task's memory."""
    directory = dump.write(tmp_path / "images")
    path = os.path.join(directory, name)
    if name == "sub":
        os.mkdir(path)
        says = "CRIU image sub is not a regular file"
    elif name.startswith("pages"):
        os.unlink(path)
        os.symlink("/etc/shadow", path)
        says = "CRIU image pages-1.img is not a regular file"
    else:
        os.link(os.path.join(directory, "pstree.img"), path)
        says = "has 2 hard links"
    with pytest.raises(BadArchive, match=says):
        check_images(directory, spec, host=host)


def test_fifo_image_is_refused(dump, tmp_path, spec, host):
    directory = dump.write(tmp_path / "images")
    os.unlink(os.path.join(directory, "pstree.img"))
    os.mkfifo(os.path.join(directory, "pstree.img"))
    with pytest.raises(BadArchive, match="pstree.img is not a regular file"):
        check_images(directory, spec, host=host)


def test_oversized_image_is_refused_before_it_is_read(dump, tmp_path, spec, host):
    directory = dump.write(tmp_path / "images")
    with open(os.path.join(directory, "core-1.img"), "ab") as f:
        f.truncate(1 << 30)   # sparse: nothing is written
    with pytest.raises(BadArchive, match=r"core-1.img is 1073741824 bytes, more than"):
        check_images(directory, spec, host=host)


@pytest.mark.parametrize("data,says", [
    (b"", "is truncated"), (b"\x19\x43\x56\x54", "is truncated"),
    (b"\x19\x43\x56\x54\x47\x38\x05\x55\xff\xff", "is truncated"),
    (b"\x19\x43\x56\x54\x47\x38\x05\x55\x05\x00\x00\x00\xff\xff\xff\xff\xff", "cannot be decoded"),
    (b"\x19\x43\x56\x54\x30\x20\x43\x54\x00\x00\x00\x00", "is not a CORE image"),
    (b"\x19\x43\x56\x54\x47\x38\x05\x55\x00\x00\x00\x00", "lacks required fields"),
])
def test_undecodable_image_is_refused(dump, tmp_path, spec, host, data, says):
    directory = dump.write(tmp_path / "images")
    with open(os.path.join(directory, "core-7.img"), "wb") as f:
        f.write(data)
    with pytest.raises(BadArchive, match=f"core-7.img {says}"):
        check_images(directory, spec, host=host)


def test_deeply_nested_cgroups_are_refused(dump, check):
    nested = dict(dir_name="x")
    for _ in range(300):
        nested = dict(dir_name="x", children=[nested])
    cg(dump)["controllers"][0]["dirs"][0]["children"] = [nested]
    assert refused(check(dump), "cgroup.img")


def test_corrupted_images_only_ever_raise_bad_archive(dump, tmp_path, spec, host):
    """Byte flips, truncations and splices of every image: BadArchive or a pass, nothing else."""
    for directory in corrupted(dump.write(tmp_path / "clean"), seed=9, rounds=1000):
        try:
            check_images(directory, spec, host=host)
        except BadArchive as refusal:
            assert "\n" not in refusal.message


def corrupted(directory: str, *, seed: int, rounds: int):
    """`directory` (an image set) with one image damaged at a time, by byte
    flips, a truncation or a splice of another image, for each round; the
    image is put back after the caller's look."""
    originals = {name: open(os.path.join(directory, name), "rb").read() for name in os.listdir(directory)}
    rng = random.Random(seed)
    for _ in range(rounds):
        name = rng.choice(sorted(originals))
        data = bytearray(originals[name])
        how = rng.randrange(3)
        if how == 0 and data:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif how == 1:
            del data[rng.randrange(len(data) + 1):]
        else:
            other = originals[rng.choice(sorted(originals))]
            data[rng.randrange(len(data) + 1):] = other[rng.randrange(len(other) + 1):]
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
        try:
            yield directory
        finally:
            with open(os.path.join(directory, name), "wb") as f:
                f.write(originals[name])


def test_host_facts_are_read_from_this_host():
    facts = HostFacts.probe()
    assert facts.cgroup_hierarchies and all(isinstance(h, frozenset) for h in facts.cgroup_hierarchies)
    assert imagecheck.RLIMIT_NAMES.index("RLIMIT_NOFILE") in facts.rlimit_hard
    assert all(n > 0 for n in facts.socket_buffer_max)
    if platform.machine() == "x86_64":
        with open("/proc/cpuinfo") as f:
            la57 = any(line.startswith("flags") and "la57" in line.split() for line in f)
        assert facts.task_size == (imagecheck.TASK_SIZE_56 if la57 else imagecheck.TASK_SIZE_47)


# ---- a container in podman's shape: no cgroup namespace ------------------------------------

def _without_cgroupns(dump, spec):
    """As podman runs a container on cgroup v1: the host's cgroup namespace, and
    runc's binds of each host hierarchy, which it maps as external mounts."""
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "cgroup"]
    for name in ("ids-1.img", "ids-7.img"):
        dump.entry(name)["cgroup_ns_id"] = ROOT_IDS["cgroup_ns_id"]
    for cgroup_set in cg(dump)["sets"]:
        for ctl in cgroup_set["ctls"]:
            ctl["cgns_prefix"] = 0
    for point in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/systemd"):
        dump.mount(point)["ext_key"] = point


def test_the_host_hierarchies_runc_binds_without_a_cgroup_namespace_pass(dump, check, spec):
    _without_cgroupns(dump, spec)
    assert check(dump) is None


def test_a_bind_of_a_hierarchy_this_host_lacks_is_refused(dump, check, spec):
    _without_cgroupns(dump, spec)
    dump.mount("/sys/fs/cgroup/pids")["ext_key"] = dump.mount("/sys/fs/cgroup/pids")["mountpoint"] = \
        "/sys/fs/cgroup/memory"
    assert refused(check(dump), "mount 108 at /sys/fs/cgroup/memory", "external mount '/sys/fs/cgroup/memory'")


def test_hierarchy_binds_are_refused_when_the_spec_has_a_cgroup_namespace(dump, check):
    dump.mount("/sys/fs/cgroup/pids")["ext_key"] = "/sys/fs/cgroup/pids"
    assert refused(check(dump), "mount 108 at /sys/fs/cgroup/pids", "external mount '/sys/fs/cgroup/pids'")


def test_root_mode_is_the_mode_criu_recorded_for_the_root(dump, tmp_path):
    root_file = dict(type="REG", id=2, reg=dict(id=2, flags=0, pos=0, fown=FOWN, name="/", mode=0o40555))
    dump.entry_list("files.img").append(root_file)
    assert root_mode(dump.write(tmp_path / "a")) == 0o555
    root_file["reg"]["mode"] = 0o100644           # not a directory: nothing to take
    assert root_mode(dump.write(tmp_path / "b")) is None
    del dump.images["fs-1.img"]
    assert root_mode(dump.write(tmp_path / "c")) is None
