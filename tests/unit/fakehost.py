"""A fake host for unit tests of the engine: the tools ferry runs (runc, ip, nft,
mount, rm, criu) answered at the subprocess chokepoint (`proc._execute`,
`proc.spawn`), and the kernel state they change (processes in /proc, cgroups
in /sys, mounts, network namespaces, links, nftables rules) kept here, so that
a test can say what a command left behind.

Nothing of the engine is replaced: /proc and /sys are read through a redirect
of the engine modules' own `open` into a tree under the test's temp dir, the
mount table through `fs.mountinfo` (and the two mount syscalls `fs.unmount_under`
makes), and the network's host probes (`link.netns_exists`...) as the network
tests do. Host-wide cgroup sweeps (`kill_container_cgroups`,
`remove_cgroup_parents`) are recorded instead of globbing the real /sys.

Fake pids start above the kernel's largest pid_max (2^22), so that a signal
sent to one by mistake can never reach a real process.
"""

from __future__ import annotations

import builtins
import json
import os
import shlex
import shutil
import signal as posix_signals
import struct
import subprocess
import sys
import textwrap

import pytest

from ferry.engine import containers as containers_module
from ferry.engine import listing, recovery
from ferry.network import link
from ferry.runtime import launch, rootfs, runc as runc_module, spec as spec_module
from ferry.store import layout
from ferry.util import fs, locks, proc
from ferry.util.fs import Mount

FIRST_PID = 5_000_000
GIB = 1 << 30
MINIMAL_SECCOMP = {"defaultAction": "SCMP_ACT_ERRNO", "archMap": [], "syscalls": [
    {"names": ["read", "write", "exit"], "action": "SCMP_ACT_ALLOW"}]}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def stats_image(kind: int, fields: dict[int, int]) -> bytes:
    """A CRIU stats image (stats-dump: kind 1, stats-restore: kind 2) holding `fields`."""
    from ferry.checkpoint.criu import IMG_SERVICE_MAGIC, STATS_MAGIC
    inner = b"".join(_varint(number << 3) + _varint(value) for number, value in fields.items())
    entry = _varint(kind << 3 | 2) + _varint(len(inner)) + inner
    return struct.pack("<III", IMG_SERVICE_MAGIC, STATS_MAGIC, len(entry)) + entry


DUMP_STATS = {1: 1500, 2: 9000, 3: 4000, 4: 3000, 5: 300, 7: 200}   # freezing, frozen, memdump, memwrite, pages
RESTORE_STATS = {3: 700, 4: 8000, 5: 200}                            # forking, restore, pages restored


class FakePopen:
    """What proc.spawn returns for a fake tool: `work` runs when it is waited for."""

    def __init__(self, argv, pid: int, work=None):
        self.args = list(argv)
        self.pid = pid
        self.returncode = None
        self._work = work

    def wait(self, timeout=None):
        if self.returncode is None:
            self.returncode = self._work() if self._work else 0
        return self.returncode

    def poll(self):
        return self.returncode

    def kill(self):
        self.returncode = -9


def _real_mount_id(path: str) -> int:
    """The mount id the kernel gives `path` now, as fs._at reads it back."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        with builtins.open(f"/proc/self/fdinfo/{fd}") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("mnt_id:"))
    finally:
        os.close(fd)


class FakeHost:
    def __init__(self, tmp_path, monkeypatch):
        self.base = str(tmp_path / "host")
        self.procfs = os.path.join(self.base, "proc")
        self.sysfs = os.path.join(self.base, "sys")
        os.makedirs(os.path.join(self.procfs, "sys", "fs"))
        self.write(os.path.join(self.procfs, "sys", "fs", "pipe-max-size"), "1048576\n")
        self.calls: list[list[str]] = []       # every tool run, spawned ones included
        self.inputs: dict[int, str] = {}       # index in calls -> what it read on stdin
        self.fail: dict[str, tuple[int, str]] = {}   # "runc kill", "monitor", "dump"... -> (code, message)
        self.next_pid = FIRST_PID
        self.runc: dict[str, dict] = {}        # container id -> {"status", "pid"}
        self.netns: set[str] = set()
        self.links: dict[str, dict] = {"lo": {}, "eth0": {}}   # name -> {"alias", "up", "bridge"}
        self.nft_table = False
        self.nft_rules: list[dict] = []        # {"chain", "handle", "comment"}
        self.nft_handle = 0
        self.criu_locks: dict[str, list[str]] = {}   # netns -> CRIU's tables left in it
        self.mounts: list[Mount] = []
        self.memory = 8 * GIB                  # MemAvailable
        self.exits: list[dict] = []            # container exits the monitor saw
        self.cgroups_killed: list[str] = []
        self.dump_images = {"core-1.img": b"core", "pagemap-1.img": b"pagemap", "pages-1.img": b"\x01" * 8192}
        self.on_dump = None                    # called with (container id, images) before runc checkpoint ends
        self.restores: list[dict] = []
        self.ignored_signals: set[int] = set()
        self.foreground_stdin: list[str] = []   # what fd 0 was while a foreground tool ran
        self._install(monkeypatch, tmp_path)

    # ---- installing -------------------------------------------------------
    def _install(self, monkeypatch, tmp_path) -> None:
        monkeypatch.setattr(proc, "_execute", self._execute)
        monkeypatch.setattr(proc, "spawn", self._spawn)
        monkeypatch.setattr(proc, "run_foreground", self._foreground)
        redirect = self._open
        for module in (listing, containers_module, recovery, launch, runc_module):
            monkeypatch.setattr(module, "open", redirect, raising=False)
        from ferry.checkpoint import criu
        monkeypatch.setattr(criu, "open", redirect, raising=False)
        monkeypatch.setattr(fs, "mountinfo", self._mountinfo)
        monkeypatch.setattr(rootfs, "mountinfo", self._mountinfo)
        monkeypatch.setattr(fs, "_make_private", lambda target, point: None)
        monkeypatch.setattr(fs, "_detach", self._detach)
        monkeypatch.setattr(fs, "memory_available", lambda: self.memory)
        from ferry.engine import checkpoints
        monkeypatch.setattr(checkpoints, "memory_available", lambda: self.memory)
        monkeypatch.setattr(link, "netns_exists", lambda name: name in self.netns)
        monkeypatch.setattr(link, "netns_problem", lambda name, ifname, ip, pid=None:
                            None if name in self.netns else f"its network namespace {name} is gone")
        monkeypatch.setattr(link, "link_exists", lambda name: name in self.links)
        monkeypatch.setattr(link, "is_ferry_bridge", lambda name: self.links.get(name, {}).get("alias")
                            == link.BRIDGE_ALIAS)
        monkeypatch.setattr(link, "interfaces", lambda: sorted(self.links))
        monkeypatch.setattr(link, "enable_routing", lambda bridge: None)
        monkeypatch.setattr(locks, "MACHINE_LOCK_DIR", str(tmp_path / "machine-locks"))
        monkeypatch.setattr(runc_module.proc, "criu_binary", lambda: "/usr/local/sbin/criu")
        for module in (recovery, launch):
            monkeypatch.setattr(module, "kill_container_cgroups", self._kill_cgroups)
        monkeypatch.setattr(containers_module, "remove_cgroup_parents", lambda parent: None)
        # One parent for every root of the fake host, as the default root has.
        monkeypatch.setattr(runc_module, "cgroup_parent", lambda root: "ferry")
        profile = tmp_path / "seccomp.json"
        profile.write_text(json.dumps(MINIMAL_SECCOMP))
        monkeypatch.setattr(spec_module, "SECCOMP_PROFILE", str(profile))
        monkeypatch.setenv("FERRY_START_TIMEOUT", "1")
        monkeypatch.delenv("FERRY_TEST_PHASE", raising=False)

    def _open(self, path, *args, **kwargs):
        if isinstance(path, str) and path.startswith(("/proc/", "/sys/")):
            path = self.base + path
        return builtins.open(path, *args, **kwargs)

    @staticmethod
    def write(path: str, text: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with builtins.open(path, "w") as f:
            f.write(text)

    # ---- processes and cgroups ---------------------------------------------
    def process(self, name: str, *, cgroup: str = "/user.slice", cmdline: list[str] = (),
                state: str = "S") -> int:
        pid = self.next_pid
        self.next_pid += 1
        directory = os.path.join(self.procfs, str(pid))
        self.write(os.path.join(directory, "stat"), f"{pid} ({name}) {state} 1 {pid} {pid} 0 -1\n")
        self.write(os.path.join(directory, "cgroup"), f"0::{cgroup}\n")
        self.write(os.path.join(directory, "cmdline"), "\0".join(cmdline or [name]) + "\0")
        return pid

    def alive(self, pid: int | None) -> bool:
        return bool(pid) and os.path.exists(os.path.join(self.procfs, str(pid), "stat"))

    def end(self, pid: int | None) -> None:
        if pid:
            shutil.rmtree(os.path.join(self.procfs, str(pid)), ignore_errors=True)

    def cgroup_file(self, container_id: str, name: str, controller: str = "freezer") -> str:
        if controller == "unified":
            return os.path.join(self.sysfs, "fs", "cgroup", "unified", "ferry", container_id, name)
        return os.path.join(self.sysfs, "fs", "cgroup", controller, "ferry", container_id, name)

    def _kill_cgroups(self, container_id: str, parent: str, timeout: float = 5.0) -> None:
        self.cgroups_killed.append(container_id)
        for entry in os.listdir(self.procfs):
            if entry.isdigit():
                with builtins.open(os.path.join(self.procfs, entry, "cgroup")) as f:
                    if f"/ferry/{container_id}\n" in f.read():
                        self.end(int(entry))

    # ---- containers as runc and the monitor run them -----------------------
    def memory_use(self, container_id: str, used: int) -> None:
        """What the container's memory cgroup says it uses (cgroup v2)."""
        self.write(os.path.join(self.sysfs, "fs", "cgroup", "ferry", container_id, "memory.current"), f"{used}\n")

    def container_exits(self, container_id: str, code: int, container_dir: str) -> None:
        """The container's process ends; its monitor records the exit and
        would run the exit command, unless a checkpoint's marker says not to."""
        state = self.runc.get(container_id)
        if state is None or state["status"] != "running":
            return
        self.end(state["pid"])
        state["status"] = "stopped"
        marker = os.path.exists(os.path.join(container_dir, layout.CHECKPOINTING))
        with builtins.open(os.path.join(container_dir, "exit.json"), "w") as f:
            json.dump({"exit_code": code, "finished_at": "2024-01-01T00:00:00.000000000Z"}, f)
        self.exits.append({"id": container_id, "code": code, "exit_command": not marker})
        self.end(state.get("monitor"))

    def crash(self, container_id: str) -> None:
        """The container and its monitor die at once: no exit is recorded."""
        state = self.runc[container_id]
        self.end(state["pid"])
        self.end(state["monitor"])
        state["status"] = "stopped"

    def _warm(self, argv, copies: dict) -> int:
        with os.fdopen(copies.pop(int(argv[4])), "rb") as source:
            data = source.read()
        try:
            if data:
                given = json.loads(data)
                at = given.index("--status-fd") + 1
                given[at] = str(copies[int(given[at])])
                assert given[given.index("--container-dir") + 1] == argv[6]
                self.calls.append(argv[:3] + given)   # what the monitor was told, as a cold one's argv
                self._monitor(argv[:3] + given)
        finally:
            for fd in copies.values():
                os.close(fd)
        return 0

    def _monitor(self, argv) -> FakePopen:
        from ferry.runtime import monitor
        args = monitor.parse(argv[3:])
        failure = self.fail.get("restore" if args.restore_images else "create")
        pid = self.process("python3", cmdline=["python3", "-m", "ferry.runtime.monitor", "--container-dir",
                                               args.container_dir])
        if self.fail.get("monitor silent"):
            return FakePopen(argv, pid)   # says nothing: the launcher gives up on it
        if failure is None and args.restore_images:
            if not os.path.exists(os.path.join(args.restore_images, "inventory.img")):
                failure = (1, "criu failed: type RESTORE errno 0 (no inventory)")
            self.restores.append({"id": args.id, "images": args.restore_images, "work": args.restore_work,
                                  "tcp_established": args.tcp_established})
            if failure is None:
                with builtins.open(os.path.join(args.restore_work, "stats-restore"), "wb") as f:
                    f.write(stats_image(2, RESTORE_STATS))
        elif failure is None and not os.path.exists(os.path.join(args.bundle, "config.json")):
            failure = (1, "no config.json in the bundle")
        if failure is not None:
            self.end(pid)
            report = {"ok": False, "error": failure[1]}
        else:
            container = self.process("sh", cgroup=f"/ferry/{args.id}")
            self.runc[args.id] = {"status": "running", "pid": container, "monitor": pid,
                                  "dir": args.container_dir}
            with builtins.open(os.path.join(args.container_dir, "container.pid"), "w") as f:
                f.write(str(container))
            with builtins.open(os.path.join(args.container_dir, "monitor.pid"), "w") as f:
                f.write(str(pid))
            report = {"ok": True, "pid": container, "state": "running"}
        os.write(args.status_fd, (json.dumps(report) + "\n").encode())
        return FakePopen(argv, pid)

    def _checkpoint(self, argv) -> FakePopen:
        container_id = argv[-1]
        images = argv[argv.index("--image-path") + 1]
        work = argv[argv.index("--work-path") + 1]
        leave_running = "--leave-running" in argv
        tool = self.process("runc", cmdline=argv)

        def dump() -> int:
            self.end(tool)
            state = self.runc.get(container_id)
            if self.on_dump:
                self.on_dump(container_id, images)
            if state is None or state["status"] != "running":
                return self._dump_log(work, 1, "container is not running")
            if "dump" in self.fail:
                code, message = self.fail["dump"]
                return self._dump_log(work, code, message)
            for name, data in self.dump_images.items():
                with builtins.open(os.path.join(images, name), "wb") as f:
                    f.write(data)
            with builtins.open(os.path.join(images, "inventory.img"), "wb") as f:   # CRIU writes it last
                f.write(b"inventory")
            with builtins.open(os.path.join(work, "dump.log"), "w") as f:
                f.write("(00.1) Unfreezing tasks into 2\n(00.2) Dumping finished successfully\n")
            with builtins.open(os.path.join(work, "stats-dump"), "wb") as f:
                f.write(stats_image(1, DUMP_STATS))
            if not leave_running:
                self.container_exits(container_id, 137, state["dir"])
            return 0
        return FakePopen(argv, tool, dump)

    @staticmethod
    def _dump_log(work: str, code: int, message: str) -> int:
        with builtins.open(os.path.join(work, "dump.log"), "w") as f:
            f.write(f"(00.1) Error (criu/cr-dump.c:1): {message}\n(00.2) Dumping FAILED.\n")
        return code

    # ---- the chokepoints --------------------------------------------------
    def _spawn(self, argv, *, desc, pass_fds=(), stdin=None, stdout=None, stderr=None, env=None, cwd=None,
               new_session=False):
        argv = list(argv)
        self.calls.append(argv)
        if argv[1:3] == ["-m", "ferry.runtime.monitor"] and argv[3] == "--argv-fd":
            # A warm monitor: its own copies of the pipes, read when it is waited for.
            copies = {fd: os.dup(fd) for fd in pass_fds}
            return FakePopen(argv, self.process("python3", cmdline=argv), work=lambda: self._warm(argv, copies))
        if argv[0] == "runc" and "checkpoint" in argv:
            return self._checkpoint(argv)
        if argv[0] == "rm":
            self._rm(argv)
            return FakePopen(argv, self.process("rm"))
        if argv[:3] == ["ip", "netns", "exec"] and "ferry.network.garp" in argv:
            return FakePopen(argv, self.process("garp"))
        if argv[:2] == ["bash", "-c"] and argv[3].startswith("ferry-ports:"):
            return FakePopen(argv, self.process("sleep"))   # a port holder: the sockets close with this call
        raise AssertionError(f"unexpected spawn {argv}")

    def _foreground(self, argv, *, desc, env=None) -> int:
        """A tool on the caller's terminal (runc exec): it exits 3."""
        self.calls.append(list(argv))
        self.foreground_stdin.append(os.readlink("/proc/self/fd/0"))
        return 3

    def _execute(self, argv, *, timeout=None, input=None, env=None, cwd=None):
        argv = list(argv)
        self.calls.append(argv)
        if input is not None:
            self.inputs[len(self.calls) - 1] = input
        tool = os.path.basename(argv[0])
        if tool == "runc":
            return self._runc(argv)
        if tool == "ip":
            return self._ip(argv[1:], input)
        if tool == "nft":
            return self._nft(argv[1:], input)
        if tool == "mount":
            return self._mount(argv)
        if tool == "rm":
            self._rm(argv)
            return self._ok(argv)
        if tool == "criu" and argv[1:] == ["--version"]:
            return self._ok(argv, "Version: 4.2.1\n")
        if tool == "criu" and argv[1:3] == ["cpuinfo", "check"]:
            if "cpuinfo" in self.fail:   # the checkpoint's CPU had features this one lacks
                code, message = self.fail["cpuinfo"]
                return self._ok(argv, "", code, message)
            return self._ok(argv)
        raise AssertionError(f"unexpected tool call {argv}")

    @staticmethod
    def _ok(argv, out: str = "", code: int = 0, err: str = "") -> proc.Result:
        return proc.Result(tuple(argv), code, out, err)

    # ---- runc ---------------------------------------------------------------
    def _runc(self, argv) -> proc.Result:
        i = 1
        while argv[i].startswith("--"):
            i += 2   # --root, --log, --log-format and --criu each take a value
        verb, rest = argv[i], argv[i + 1:]
        if verb == "--version":
            return self._ok(argv, "runc version 1.1.5\n")
        container_id = [a for a in rest if not a.startswith("--")][0]
        state = self.runc.get(container_id)
        failure = self.fail.get(f"runc {verb}")
        if failure:
            return self._ok(argv, "", failure[0], failure[1])
        if verb == "state":
            if state is None:
                return self._ok(argv, "", 1, f"container \"{container_id}\" does not exist")
            return self._ok(argv, json.dumps({"id": container_id, "pid": state["pid"], "status": state["status"]}))
        if verb == "delete":
            if state is None:
                return self._ok(argv, "", 1, f"container \"{container_id}\" does not exist")
            if state["status"] == "running":
                if "--force" not in rest:
                    return self._ok(argv, "", 1, "cannot delete a running container")
                self.container_exits(container_id, 137, state["dir"])
            del self.runc[container_id]
            return self._ok(argv)
        if verb == "kill":
            if state is None or state["status"] != "running":
                return self._ok(argv, "", 1, "container not running")
            number = int(rest[-1]) if rest[-1].isdigit() else int(getattr(posix_signals, "SIG" + rest[-1]))
            if number not in self.ignored_signals:   # a container that ignores its stop signal
                self.container_exits(container_id, 128 + number, state["dir"])
            return self._ok(argv)
        raise AssertionError(f"unexpected runc call {argv}")

    # ---- ip -------------------------------------------------------------------
    def _ip(self, args, input) -> proc.Result:
        argv = ["ip", *args]
        if args[:2] == ["-j", "-4"]:
            return self._ok(argv, "[]")
        if args[:4] == ["-j", "link", "show", "type"]:
            veths = [{"ifname": n, "ifalias": v.get("alias", "")} for n, v in self.links.items() if v.get("veth")]
            return self._ok(argv, json.dumps(veths))
        if args[:2] == ["netns", "add"]:
            self.netns.add(args[2])
            return self._ok(argv)
        if args[:2] == ["netns", "del"]:
            self.netns.discard(args[2])
            self.criu_locks.pop(args[2], None)
            return self._ok(argv)
        if args[:2] == ["netns", "exec"]:
            return self._in_netns(args[2], args[3:])
        if args[:2] == ["link", "del"]:
            self.links.pop(args[2], None)
            return self._ok(argv)
        if args[:2] == ["link", "set"]:
            self.links.setdefault(args[2], {})["up"] = args[3] == "up"
            return self._ok(argv)
        if "-batch" in args:
            netns = args[args.index("-n") + 1] if "-n" in args else None
            for line in input.splitlines():
                self._ip_line(shlex.split(line), netns)
            return self._ok(argv)
        raise AssertionError(f"unexpected ip call {argv}")

    def _ip_line(self, words, netns) -> None:
        if netns is not None:
            return   # inside the container's netns: nothing the host sees
        if words[:2] == ["link", "add"]:
            name = words[3] if words[2] == "name" else words[2]
            self.links[name] = {"veth": "veth" in words, "bridge": "bridge" in words, "up": False}
        elif words[:2] == ["link", "set"] and words[3] == "alias":
            self.links[words[2]]["alias"] = words[4]
        elif words[:2] == ["link", "set"] and words[3] == "up":
            self.links[words[2]]["up"] = True

    def _in_netns(self, netns: str, args) -> proc.Result:
        argv = ["ip", "netns", "exec", netns, *args]
        if netns not in self.netns:
            return self._ok(argv, "", 1, f"Cannot open network namespace \"{netns}\"")
        if args == ["nft", "-j", "list", "tables"]:
            tables = [{"table": {"family": "inet", "name": name}} for name in self.criu_locks.get(netns, [])]
            return self._ok(argv, json.dumps({"nftables": [{"metainfo": {}}] + tables}))
        if args[:3] == ["nft", "delete", "table"]:
            self.criu_locks.get(netns, []).remove(args[4])
            return self._ok(argv)
        raise AssertionError(f"unexpected netns call {argv}")

    # ---- nft -------------------------------------------------------------------
    def _nft(self, args, input) -> proc.Result:
        argv = ["nft", *args]
        if args[:3] == ["-j", "-a", "list"]:
            if not self.nft_table:
                return self._ok(argv, "", 1, "Error: No such file or directory")
            items = [{"rule": dict(rule, family="ip", table="ferry")} for rule in self.nft_rules]
            return self._ok(argv, json.dumps({"nftables": items}))
        if args == ["-f", "-"]:
            for line in input.splitlines():
                self._nft_line(line.strip())
            return self._ok(argv)
        raise AssertionError(f"unexpected nft call {argv}")

    def _nft_line(self, line: str) -> None:
        if line.startswith("table ip ferry"):
            self.nft_table = True
        elif line.startswith("flush chain ip ferry "):
            chain = line.split()[4]
            self.nft_rules = [r for r in self.nft_rules if r["chain"] != chain]
        elif line.startswith("add rule ip ferry "):
            chain = line.split()[4]
            comment = line.split('comment "', 1)[1].rstrip('"') if 'comment "' in line else ""
            self.nft_handle += 1
            self.nft_rules.append({"chain": chain, "handle": self.nft_handle, "comment": comment})
        elif line.startswith("delete rule ip ferry "):
            handle = int(line.split()[-1])
            self.nft_rules = [r for r in self.nft_rules if r["handle"] != handle]
        elif line == "delete table ip ferry":
            self.nft_table, self.nft_rules = False, []

    def published(self) -> list[str]:
        return [r["comment"] for r in self.nft_rules if r["chain"] == "published"]

    # ---- mounts ---------------------------------------------------------------
    def _mount(self, argv) -> proc.Result:
        if "mount" in self.fail:
            return self._ok(argv, "", 32, self.fail["mount"][1])
        fstype = argv[argv.index("-t") + 1]
        options = argv[argv.index("-o") + 1]
        source, target = argv[-2], argv[-1]
        self.mounts.append(Mount(_real_mount_id(target), 1, os.path.abspath(target), fstype, source, options))
        return self._ok(argv)

    def _mountinfo(self, path: str = "/proc/self/mountinfo"):
        return list(self.mounts)

    def _detach(self, target: str, point: str) -> None:
        for i in range(len(self.mounts) - 1, -1, -1):
            if self.mounts[i].point == point:
                del self.mounts[i]
                return

    def mounted(self, under: str = "/") -> list[str]:
        under = os.path.abspath(under)
        return [m.point for m in self.mounts if m.point == under or m.point.startswith(under.rstrip("/") + "/")]

    @staticmethod
    def _rm(argv) -> None:
        path = argv[-1]
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)

    # ---- what a test looks at ----------------------------------------------------
    def ran(self, *words: str) -> list[list[str]]:
        """The calls whose argv holds `words` in this order, one after the other."""
        n = len(words)
        return [c for c in self.calls if any(tuple(c[i:i + n]) == words for i in range(len(c) - n + 1))]

    def leftovers(self, container_id: str) -> list[str]:
        """What the host still holds for a container: nothing, once it is gone."""
        short = container_id[:12]
        found = [f"netns {n}" for n in self.netns if short in n]
        found += [f"link {n}" for n in self.links if short in n]
        found += [f"nft {r['comment']}" for r in self.nft_rules if container_id in r["comment"]]
        found += [f"runc {container_id}"] if container_id in self.runc else []
        found += [f"mount {m.point}" for m in self.mounts if container_id in m.point]
        return found


# ---- one state root on the fake host -----------------------------------------------

class Engine:
    """The services engine.core.Engine builds for one root, without its root check."""

    def __init__(self, root: str, registry_dir: str):
        from ferry.engine.containers import Containers
        from ferry.engine.volumes import Volumes
        from ferry.image.store import ImageStore
        from ferry.network.manager import NetworkManager
        from ferry.network.registry import Registry
        from ferry.store.db import Database
        from ferry.store.layout import Layout
        self.layout = Layout.at(root)
        self.layout.prepare()
        self.db = Database(self.layout.database)
        self.images = ImageStore(self.layout, self.db)
        self.networks = NetworkManager(self.layout, self.db, Registry(registry_dir))
        self.volumes = Volumes(self.layout, self.db)
        self.containers = Containers(self.layout, self.db, self)

    def import_image(self, tmp_path, ref: str = "busy:1", *, cmd=("sh", "-c", "serve"), user: str = "",
                     stop_signal: str = ""):
        from ferry.image.manifest import ImageConfig
        from tests.support.registry import LayerTar
        layer = (LayerTar().dir("bin").file("bin/sh", b"#!fake\n", 0o755).dir("etc")
                 .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\nwww:x:33:33::/var/www:/bin/sh\n")
                 .file("etc/group", b"root:x:0:\nwww:x:33:\n").bytes())
        path = tmp_path / f"rootfs-{ref.replace(':', '-')}.tar"
        path.write_bytes(layer)
        return self.images.import_rootfs(str(path), ref, config=ImageConfig(
            cmd=tuple(cmd), env=("PATH=/bin",), user=user, stop_signal=stop_signal))

    def close(self) -> None:
        self.db.close()


# ---- fixtures (import them into a test module by name) --------------------------------

@pytest.fixture
def host(tmp_path, monkeypatch):
    return FakeHost(tmp_path, monkeypatch)


@pytest.fixture
def engine(tmp_path, host):
    made = Engine(str(tmp_path / "root"), str(tmp_path / "networks"))
    made.image = made.import_image(tmp_path)
    host.calls.clear()
    yield made
    made.close()


@pytest.fixture
def containers(engine):
    return engine.containers


def hold_lock(path: str, verb: str) -> subprocess.Popen:
    """Another ferry command holding a container's lock, until release()."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from ferry.util.locks import owned_lock
        with owned_lock({path!r}, {verb!r}, wait=1, busy_message="busy"):
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def release(holder: subprocess.Popen) -> None:
    holder.kill()
    holder.wait()
    holder.stdout.close()


def meanwhile(delay: float, happening, action):
    """action()'s result, with `happening` run on another thread `delay` seconds
    in: what another process does while a command waits for it."""
    import threading
    timer = threading.Timer(delay, happening)
    timer.start()
    try:
        return action()
    finally:
        timer.join()
