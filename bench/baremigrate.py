"""The floor of a lazy migration: HOST-NOTES' bare runc + CRIU recipe, with
no engine around it.

Two "sides" (a and b) on this machine, each with its own runc state root,
its own copy of the redis root filesystem, its own bundle and its own
network namespace. Both namespaces hold the same address and MAC on an
`eth0` whose host end sits on one bridge made for the run; only the side
that runs the container has its host end up. A migration from X to Y is
the recipe of HOST-NOTES ("Lazy migration (post-copy)"):

  dump      runc checkpoint --lazy-pages --page-server 127.0.0.1:PORT
            --status-fd FD --tcp-established on X; FD says "ready" once
            everything but memory is dumped (the tasks stay frozen)
  network   X's host end down, Y's up (the address moves). Y's netns drops
            incoming TCP (an nft table put there before the dump): a client's
            segment that reached Y's address before the restore would find no
            socket and be answered with a RST, which ends the connection (seen
            here). Y's link must be up during the restore all the same: the
            restored socket sends at once, and an ARP probe lost on a link
            that is down is retried only 1 s later (also seen here)
  images    the small non-memory images are copied to Y's image dir
  daemon    criu lazy-pages --page-server --address 127.0.0.1 --port PORT
            -D <images> -W <Y's work dir>, until lazy-pages.socket is there
  restore   runc restore -d --lazy-pages --tcp-established on Y, in a private
            mount namespace (HOST-NOTES: unmounts must not propagate)
  unlock    the drop table goes, and a gratuitous ARP from Y's eth0 tells the
            bridge where the MAC is now (HOST-NOTES' recipe)
  pages     until X's checkpoint ends: every page has been served

Afterwards (not timed) X's netns is cleared of CRIU's network lock, which a
dump leaves there (a real source host would delete that netns), so that a
fresh container can start there later (seen here: it was unreachable).

The container's stdio are pipes that this process drains (a host file would
not dump). Every name made here starts with "bm" (netns, links, cgroups), and
`close()` removes all of it, also after a failure.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import random
import select
import shutil
import socket
import struct
import subprocess
import threading
import time

from bench import proc
from bench.engines import die_with_parent, wait_until
from bench.proc import BenchError
from ferry.util.fs import tree_size

CONTAINER = "bm-redis"
CONTAINER_IP_HOST = 50
MAC_PREFIX = "02:bd:0a:4f"
STATUS_TIMEOUT = 600
DAEMON_READY_TIMEOUT = 30
PAGES_TIMEOUT = 900
CLONE_NEWNET = 0x40000000
ETH_P_ARP = 0x0806
LOCK_TABLE = "bmlock"


def _criu() -> str:
    path = shutil.which("criu", path=proc.TOOL_PATH)
    if not path:
        raise BenchError("criu is not on PATH")
    return path


def _sh(argv: list[str], desc: str, timeout: float = 60, check: bool = True) -> proc.Result:
    return proc.run(argv, desc=desc, timeout=timeout, check=check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_subnet(routes: str, rng: random.Random) -> int:
    """A third octet N such that 10.79.N.0/24 appears in none of `routes`
    (`ip -4 route` output). Pure; tested."""
    used = set()
    for line in routes.splitlines():
        first = line.split()[0] if line.split() else ""
        if first.startswith("10.79."):
            parts = first.split("/")[0].split(".")
            if len(parts) == 4 and parts[2].isdigit():
                used.add(int(parts[2]))
    free = [n for n in range(1, 255) if n not in used]
    if not free:
        raise BenchError("no free 10.79.N.0/24 for the bare recipe's bridge")
    return rng.choice(free)


def bundle_config(template: dict, *, rootfs: str, args: list[str], netns: str, cgroup: str,
                  hostname: str = "bm-redis") -> dict:
    """`runc spec`'s config, made to run `args` on `rootfs` in the named netns
    (joined by path, so runc treats it as external), with its own cgroup and
    no terminal. Pure; tested."""
    config = json.loads(json.dumps(template))
    config["root"] = {"path": rootfs, "readonly": False}
    process = config["process"]
    process["terminal"] = False
    process["args"] = list(args)
    process["env"] = [e for e in process.get("env", []) if not e.startswith("TERM=")]
    process["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    config["hostname"] = hostname
    linux = config.setdefault("linux", {})
    namespaces = [ns for ns in linux.get("namespaces", []) if ns.get("type") not in ("network", "user", "cgroup")]
    namespaces.append({"type": "network", "path": f"/run/netns/{netns}"})
    linux["namespaces"] = namespaces
    linux["cgroupsPath"] = cgroup
    return config


def garp_frame(ip: str, mac: str) -> bytes:
    """A gratuitous ARP (RFC 5227 announcement): an ARP request for our own
    address, from our own MAC, to everyone. Pure; tested."""
    hw = bytes.fromhex(mac.replace(":", ""))
    address = ipaddress.IPv4Address(ip).packed
    ethernet = b"\xff" * 6 + hw + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, hw, address, b"\x00" * 6, address)
    return ethernet + arp


def packet_socket_in(netns: str, interface: str) -> socket.socket:
    """A raw packet socket on `interface` of the named netns (a socket keeps
    the netns it was made in; setns moves only the thread that makes it)."""
    made: dict = {}

    def make() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            sock.bind((interface, 0))
            made["socket"] = sock
        except OSError as exc:
            made["error"] = exc

    thread = threading.Thread(target=make)   # it ends in the netns: a thread of its own
    thread.start()
    thread.join()
    if "error" in made:
        raise BenchError(f"bare: no packet socket in {netns}: {made['error']}")
    return made["socket"]


def _run_drained(side, argv: list[str], timeout: float):
    """runc run -d / restore -d with the container's stdio on pipes a Drain of
    `side` reads; the command's result and that Drain."""
    drain = Drain()
    stdin_r, out_w, err_w = drain.pipes()
    try:
        done = subprocess.run(argv, stdin=stdin_r, stdout=out_w, stderr=err_w, env=proc.env(), timeout=timeout,
                              preexec_fn=die_with_parent)
    finally:
        for fd in (stdin_r, out_w, err_w):
            os.close(fd)
    side.drains.append(drain)
    return done, drain


class Drain:
    """Reads the read ends of a container's stdio pipes and keeps the last
    few KiB (redis logs to stdout; a full pipe would block it)."""

    def __init__(self):
        self.fds: list[int] = []
        self.tail = b""
        self._lock = threading.Lock()

    def pipes(self) -> tuple[int, int, int]:
        """(stdin read end, stdout write end, stderr write end) for the child;
        this side keeps stdin's write end and the read ends."""
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self.fds += [stdin_w]
        for fd in (out_r, err_r):
            threading.Thread(target=self._read, args=(fd,), daemon=True).start()
        return stdin_r, out_w, err_w

    def _read(self, fd: int) -> None:
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                with self._lock:
                    self.tail = (self.tail + data)[-4096:]
        except OSError:
            pass
        finally:
            os.close(fd)

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


class Side:
    def __init__(self, bare: "BareLazy", name: str):
        self.name = name
        self.netns = f"{bare.prefix}-{name}"
        self.host_link = f"{bare.prefix}{name}h"
        self.peer_link = f"{bare.prefix}{name}c"
        self.dir = os.path.join(bare.base, name)
        self.runc_root = os.path.join(self.dir, "runc")
        self.rootfs = os.path.join(self.dir, "rootfs")
        self.bundle = os.path.join(self.dir, "bundle")
        self.cgroup = f"/{bare.prefix}-{name}"
        self.drains: list[Drain] = []
        self.garp: socket.socket | None = None

    def runc(self, *args: str) -> list[str]:
        return ["runc", "--root", self.runc_root, "--criu", _criu(), *args]


class BareLazy:
    """Set up once (`setup`), then `start` a filled redis on side a, and
    `migrate` it from side to side; `close` removes everything."""

    def __init__(self, base: str, rootfs_tar: str, command: list[str], log=print, prefix: str | None = None):
        self.base = base
        self.rootfs_tar = rootfs_tar
        self.command = list(command)
        self.log = log
        rng = random.Random()
        self.prefix = prefix or f"bm{rng.randrange(16**4):04x}"
        self.bridge = f"{self.prefix}br"
        self.sides = {n: Side(self, n) for n in ("a", "b")}
        self.current = "a"
        self.subnet: int | None = None
        self.made_links: list[str] = []
        self.made_netns: list[str] = []
        self.rng = rng
        self.processes: list[subprocess.Popen] = []
        self.migrations = 0

    # ---- addresses ------------------------------------------------------------
    @property
    def ip(self) -> str:
        return f"10.79.{self.subnet}.{CONTAINER_IP_HOST}"

    @property
    def mac(self) -> str:
        return f"{MAC_PREFIX}:{self.subnet:02x}:{CONTAINER_IP_HOST:02x}"

    # ---- setup ------------------------------------------------------------------
    def setup(self) -> None:
        os.makedirs(self.base, mode=0o700, exist_ok=True)
        routes = _sh(["ip", "-4", "route", "show", "table", "all"], "ip route").stdout
        self.subnet = free_subnet(routes, self.rng)
        template = self._spec_template()
        _sh(["ip", "link", "add", self.bridge, "type", "bridge"], "ip link add bridge")
        self.made_links.append(self.bridge)
        _sh(["ip", "addr", "add", f"10.79.{self.subnet}.1/24", "dev", self.bridge], "ip addr add")
        _sh(["ip", "link", "set", self.bridge, "up"], "bridge up")
        for side in self.sides.values():
            os.makedirs(side.runc_root, mode=0o700)
            os.makedirs(side.rootfs)
            os.makedirs(side.bundle)
            _sh(["tar", "-xf", self.rootfs_tar, "-C", side.rootfs], f"unpack rootfs {side.name}", timeout=300)
            config = bundle_config(template, rootfs=side.rootfs, args=self.command, netns=side.netns,
                                   cgroup=side.cgroup)
            with open(os.path.join(side.bundle, "config.json"), "w") as f:
                json.dump(config, f, indent=1)
            _sh(["ip", "netns", "add", side.netns], "ip netns add")
            self.made_netns.append(side.netns)
            _sh(["ip", "link", "add", side.host_link, "type", "veth", "peer", "name", side.peer_link], "veth")
            self.made_links.append(side.host_link)
            _sh(["ip", "link", "set", side.peer_link, "netns", side.netns], "veth to netns")
            _sh(["ip", "link", "set", side.host_link, "master", self.bridge], "veth to bridge")
            inside = ["ip", "netns", "exec", side.netns]
            for argv in (["ip", "link", "set", side.peer_link, "name", "eth0"],
                         ["ip", "link", "set", "eth0", "address", self.mac],
                         ["ip", "addr", "add", f"{self.ip}/24", "dev", "eth0"],
                         ["ip", "link", "set", "lo", "up"],
                         ["ip", "link", "set", "eth0", "up"],
                         ["ip", "route", "add", "default", "via", f"10.79.{self.subnet}.1"]):
                _sh(inside + argv, " ".join(argv))
            side.garp = packet_socket_in(side.netns, "eth0")
        self._link(self.sides["a"], up=True)

    def _spec_template(self) -> dict:
        scratch = os.path.join(self.base, "spec")
        os.makedirs(scratch, exist_ok=True)
        _sh(["runc", "spec", "--bundle", scratch], "runc spec")
        with open(os.path.join(scratch, "config.json")) as f:
            return json.load(f)

    def _lock(self, side: Side) -> None:
        """Drop TCP into the side's netns until the restore has put the socket
        there: a segment that reaches the address first finds no socket and
        is answered with a RST, which ends the client's connection (seen here)."""
        script = (f"add table inet {LOCK_TABLE}\n"
                  f"add chain inet {LOCK_TABLE} input {{ type filter hook input priority -300; policy accept; }}\n"
                  f"add rule inet {LOCK_TABLE} input meta l4proto tcp drop\n")
        proc.run(["ip", "netns", "exec", side.netns, "nft", "-f", "-"], desc=f"lock {side.netns}", timeout=30,
                 input=script)

    def _reset_rules(self, side: Side) -> None:
        """No firewall rules in the side's netns (CRIU's lock, ours)."""
        _sh(["ip", "netns", "exec", side.netns, "nft", "flush", "ruleset"], f"clear {side.netns}'s rules")

    def _unlock(self, side: Side) -> None:
        _sh(["ip", "netns", "exec", side.netns, "nft", "delete", "table", "inet", LOCK_TABLE], f"unlock {side.netns}")

    def _announce(self, side: Side) -> None:
        frame = garp_frame(self.ip, self.mac)
        side.garp.send(frame)
        side.garp.send(frame)   # a second copy survives one lost frame

    def _link(self, side: Side, up: bool) -> None:
        _sh(["ip", "link", "set", side.host_link, "up" if up else "down"], f"{side.host_link} {'up' if up else 'down'}")

    # ---- the container -----------------------------------------------------------
    def start(self) -> str:
        """A fresh redis on side a (a container left from an earlier size is removed)."""
        for side in self.sides.values():
            self._remove_container(side)
        for side in self.sides.values():
            self._link(side, up=False)
            self._reset_rules(side)
        side = self.sides["a"]
        self._link(side, up=True)
        # The bridge may still send the MAC to side b's port (where an earlier
        # container last spoke), and the host's neighbour entry for the address
        # is still valid, so nothing would ask: say where it is now.
        self._announce(side)
        done, drain = _run_drained(side, side.runc("run", "-d", "--bundle", side.bundle, CONTAINER), timeout=60)
        if done.returncode != 0:
            raise BenchError(f"bare: runc run failed (exit {done.returncode}): {drain.tail.decode(errors='replace')}")
        self.current = "a"
        return self.ip

    def _remove_container(self, side: Side) -> None:
        if not os.path.isdir(side.runc_root):
            return
        state = _sh(side.runc("state", CONTAINER), "runc state", check=False)
        if state.returncode == 0:
            _sh(side.runc("delete", "--force", CONTAINER), "runc delete", check=False, timeout=60)
        for drain in side.drains:
            drain.close()
        side.drains.clear()

    # ---- one migration -------------------------------------------------------------
    def migrate(self, on_restored=None) -> dict:
        """Move the container to the other side by the lazy recipe. Returns the
        timeline (seconds from the start of the dump), `restored_at` (monotonic, once the
        address is up on the new side)
        and `pages_at`. `on_restored(t)` runs as soon as the restore has returned."""
        src = self.sides[self.current]
        dst = self.sides["b" if self.current == "a" else "a"]
        self.migrations += 1
        run_dir = os.path.join(self.base, f"m{self.migrations}")
        images_src = os.path.join(run_dir, "images-src")
        images_dst = os.path.join(run_dir, "images-dst")
        work_src = os.path.join(run_dir, "work-src")
        work_dst = os.path.join(run_dir, "work-dst")
        for d in (images_src, work_src, work_dst):
            os.makedirs(d)
        port = free_port()
        self._lock(dst)
        timeline: list[dict] = []
        status_r, status_w = os.pipe()
        checkpoint = daemon = None
        t0 = time.monotonic()

        def phase(name: str, start: float, end: float | None = None) -> float:
            end = time.monotonic() if end is None else end
            timeline.append({"phase": name, "start": start - t0, "end": end - t0})
            return end

        try:
            with open(os.path.join(work_src, "runc.out"), "wb") as out:
                checkpoint = subprocess.Popen(
                    src.runc("checkpoint", "--image-path", images_src, "--work-path", work_src,
                             "--tcp-established", "--lazy-pages", "--page-server", f"127.0.0.1:{port}",
                             "--status-fd", str(status_w), CONTAINER),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=(status_w,), env=proc.env(),
                    preexec_fn=die_with_parent)
            self.processes.append(checkpoint)
            os.close(status_w)
            status_w = -1
            ready, _, _ = select.select([status_r], [], [], STATUS_TIMEOUT)
            byte = os.read(status_r, 1) if ready else b""
            if not byte:
                checkpoint.wait(timeout=60)
                raise BenchError(f"bare: runc checkpoint --lazy-pages never said ready (exit {checkpoint.returncode})"
                                 + self._said(os.path.join(work_src, "runc.out"), os.path.join(work_src, "dump.log")))
            t = phase("dump", t0)
            self._link(src, up=False)
            self._link(dst, up=True)
            t = phase("network", t)
            shutil.copytree(images_src, images_dst)
            t = phase("images", t)
            socket_path = os.path.join(work_dst, "lazy-pages.socket")
            with open(os.path.join(work_dst, "daemon.out"), "wb") as out:
                daemon = subprocess.Popen(
                    [_criu(), "lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", str(port),
                     "-D", images_dst, "-W", work_dst, "-o", "lazy-pages.log", "-v2"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=proc.env(), preexec_fn=die_with_parent)
            self.processes.append(daemon)
            wait_until(lambda: os.path.exists(socket_path) or daemon.poll() is not None,
                       "criu lazy-pages' socket", DAEMON_READY_TIMEOUT, pause=0.002)
            if daemon.poll() is not None:
                raise BenchError(f"bare: criu lazy-pages exited ({daemon.returncode})"
                                 + self._said(os.path.join(work_dst, "daemon.out"),
                                              os.path.join(work_dst, "lazy-pages.log")))
            t = phase("daemon", t)
            restore, drain = _run_drained(
                dst, ["unshare", "--mount", "--propagation", "private", "--",
                      *dst.runc("restore", "-d", "--lazy-pages", "--tcp-established", "--image-path", images_dst,
                                "--work-path", work_dst, "--bundle", dst.bundle, CONTAINER)],
                timeout=STATUS_TIMEOUT)
            if restore.returncode != 0:
                raise BenchError(f"bare: runc restore --lazy-pages failed (exit {restore.returncode}): "
                                 f"{drain.tail.decode(errors='replace')[-400:]}"
                                 + self._said(os.path.join(work_dst, "restore.log")))
            t = phase("restore", t)
            self._unlock(dst)
            self._announce(dst)
            restored_at = phase("unlock", t)
            self.current = dst.name
            if on_restored:
                on_restored(restored_at)
            try:
                checkpoint.wait(timeout=PAGES_TIMEOUT)
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise BenchError("bare: the lazy pages did not all arrive in time") from None
            pages_at = phase("pages", restored_at)
            if checkpoint.returncode != 0:
                raise BenchError(f"bare: runc checkpoint ended with {checkpoint.returncode} after the restore"
                                 + self._said(os.path.join(work_src, "runc.out"), os.path.join(work_src, "dump.log")))
            if daemon.returncode != 0:
                raise BenchError(f"bare: criu lazy-pages ended with {daemon.returncode}"
                                 + self._said(os.path.join(work_dst, "lazy-pages.log")))
            for drain in src.drains:
                drain.close()
            src.drains.clear()
            # CRIU's network lock (iptables chains "CRIU" that drop all but its
            # own marked packets) stays in the source's netns: a real source
            # host deletes that netns; here it is cleared for the next container.
            self._reset_rules(src)
            return {"timeline": timeline, "t0": t0, "restored_at": restored_at, "pages_at": pages_at,
                    "downtime": restored_at - t0, "seconds": pages_at - t0,
                    "images_bytes": tree_size(images_src)}
        finally:
            for fd in (status_r, status_w):
                if fd >= 0:
                    os.close(fd)
            for p in (checkpoint, daemon):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait(timeout=30)
            if os.path.isdir(run_dir):
                _remove_tree(run_dir)

    @staticmethod
    def _said(*paths: str) -> str:
        out = []
        for path in paths:
            try:
                with open(path, errors="replace") as f:
                    lines = [line.rstrip() for line in f]
            except OSError:
                continue
            errors = [line for line in lines if "Error" in line or "rror (" in line] or lines[-3:]
            out.append(f"\n{os.path.basename(path)}: " + "\n".join(errors[-6:]))
        return "".join(out)

    # ---- teardown -----------------------------------------------------------------
    def close(self) -> list[str]:
        problems = []
        for side in self.sides.values():
            if side.garp is not None:
                side.garp.close()
                side.garp = None
        for p in self.processes:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    problems.append(f"bare: process {p.pid} did not die")
        for side in self.sides.values():
            try:
                self._remove_container(side)
            except BenchError as exc:
                problems.append(str(exc))
            if os.path.isdir(side.runc_root) and _sh(side.runc("state", CONTAINER), "runc state",
                                                     check=False).returncode == 0:
                problems.append(f"bare: runc container {CONTAINER} of side {side.name} is still there")
            for controller_dir in _cgroup_dirs(side.cgroup):
                try:
                    os.rmdir(controller_dir)
                except OSError as exc:
                    problems.append(f"bare: rmdir {controller_dir}: {exc}")
        for name in self.made_netns:
            done = _sh(["ip", "netns", "del", name], "ip netns del", check=False)
            if done.returncode != 0:
                problems.append(f"bare: ip netns del {name}: {done.stderr.strip()}")
        for link in reversed(self.made_links):
            if _sh(["ip", "link", "show", link], "ip link show", check=False).returncode == 0:
                done = _sh(["ip", "link", "del", link], "ip link del", check=False)
                if done.returncode != 0:
                    problems.append(f"bare: ip link del {link}: {done.stderr.strip()}")
        self.made_netns.clear()
        self.made_links.clear()
        return problems


def _cgroup_dirs(cgroup: str) -> list[str]:
    """Directories of `cgroup` under every v1 controller and cgroup2, deepest first."""
    found = []
    root = "/sys/fs/cgroup"
    try:
        entries = os.listdir(root)
    except OSError:
        return []
    for entry in entries:
        path = os.path.join(root, entry, cgroup.lstrip("/"))
        if os.path.isdir(path) and not os.path.islink(os.path.join(root, entry)):
            found.append(path)
    return found


def _remove_tree(path: str) -> None:
    """Delete a directory of ours, never through a mount left inside it."""
    with open("/proc/self/mountinfo") as f:
        mounted = [line.split()[4] for line in f if line.split()[4].startswith(path.rstrip("/") + "/")]
    if mounted:
        raise BenchError(f"bare: {path} still has mounts inside: {', '.join(mounted[:3])}")
    proc.run(["rm", "-rf", "--one-file-system", "--", path], desc=f"remove {path}", timeout=300)
