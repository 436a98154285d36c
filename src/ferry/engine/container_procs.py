"""What watches or steers a container's processes without starting or ending
it: its published ports, its processes (top), its resource use from its
cgroups (stats), its name (rename), its end (wait), and the freezer (pause).
It reads /proc and the container's v1 cgroups; runc pauses and resumes."""

from __future__ import annotations

import contextlib
import os
import time
from typing import NamedTuple

from ferry.engine import events
from ferry.engine.listing import CREATED, EXITED, PAUSED, RUNNING
from ferry.util import proc
from ferry.util.errors import Conflict, FerryError, UsageError

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
UNLIMITED_MEMORY = 1 << 62     # a v1 memory.limit_in_bytes above this is "no limit"
READ_LIMIT = 1 << 20           # bytes read of any /proc or container file
WAIT_CONDITIONS = ("configured", "created", "exited", "paused", "running", "stopped", "stopping",
                   "removing", "unknown")
NO_EXIT = -1                   # podman wait's code for a condition that is not an exit


class Improper(Conflict):
    """podman's "container state improper"."""


def shown_state(engine, container) -> str:
    """created, running, paused or exited: the record's state, paused from its marker."""
    return PAUSED if container.state == RUNNING and is_paused(engine, container.id) else container.state


def is_paused(engine, container_id: str) -> bool:
    return engine.containers.paused(container_id)


def _record(engine, container, action: str, **attributes) -> None:
    events.note(engine.layout, container, action, **attributes)


# ---- pause / unpause -------------------------------------------------------------------------------------

def pause(engine, name_or_id: str) -> None:
    containers = engine.containers
    container = containers.get(name_or_id)
    with containers.locked(container, "pause"):
        container = containers.get(container.id)
        state = shown_state(engine, container)
        if state == PAUSED:
            raise Improper(f'"{container.id}" is already paused: container state improper')
        if state != RUNNING:
            raise Improper(f'"{state}" is not running, can\'t pause: container state improper')
        containers.pause_locked(container)
    _record(engine, container, "pause")


def unpause(engine, name_or_id: str) -> None:
    containers = engine.containers
    container = containers.get(name_or_id)
    with containers.locked(container, "unpause"):
        container = containers.get(container.id)
        if shown_state(engine, container) != PAUSED:
            raise Improper(f'"{container.id}" is not paused, can\'t unpause: container state improper')
        containers.unpause_locked(container)
    _record(engine, container, "unpause")


# ---- port ------------------------------------------------------------------------------------------------

class PortLine(NamedTuple):
    container_port: int
    protocol: str
    host_ip: str
    host_port: int

    @property
    def private(self) -> str:
        return f"{self.container_port}/{self.protocol}"

    @property
    def public(self) -> str:
        return f"{self.host_ip or '0.0.0.0'}:{self.host_port}"


def ports(engine, container) -> list[PortLine]:
    """The published ports of a running container (none of a stopped or paused one, as podman's)."""
    if shown_state(engine, container) != RUNNING:
        return []
    return [PortLine(p.container_port, p.protocol, p.host_ip, p.host_port) for p in container.config.ports]


def parse_private(text: str) -> tuple[int, str | None]:
    """`port CONTAINER 80[/tcp]`: the port and protocol (None: any)."""
    number, _, protocol = text.partition("/")
    if not number.isdigit() or int(number) > 65535:
        raise UsageError(f'strconv.ParseUint: parsing "{number}": invalid syntax')
    return int(number), protocol or None


# ---- rename ----------------------------------------------------------------------------------------------

def rename(engine, name_or_id: str, new_name: str) -> None:
    from ferry.store.ids import MAX_NAME, NAME_RE
    if len(new_name) > MAX_NAME or not NAME_RE.match(new_name):
        raise UsageError("names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*: invalid argument")
    containers = engine.containers
    container = containers.get(name_or_id)
    with containers.locked(container, "rename"):
        with engine.db.write() as conn:
            other = conn.execute("SELECT id FROM containers WHERE name = ?", (new_name,)).fetchone()
            if other is not None and other["id"] != container.id:
                raise Conflict(f"renaming container {container.id}: name {new_name} already in use, "
                               f"cannot rename container {container.id}: container already exists")
            conn.execute("UPDATE containers SET name = ? WHERE id = ?", (new_name, container.id))
            # its stored checkpoints are listed, and restored once it is gone, by its name
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoints'").fetchone():
                conn.execute("UPDATE checkpoints SET container_name = ? WHERE container_id = ?",
                             (new_name, container.id))
    _record(engine, container._replace(name=new_name), "rename")


# ---- wait ------------------------------------------------------------------------------------------------

def check_conditions(conditions: list[str]) -> list[str]:
    for condition in conditions:
        if condition not in WAIT_CONDITIONS:
            raise UsageError(f"unknown container state: {condition}: invalid argument")
    return conditions


def wait(engine, name_or_id: str, conditions: list[str], interval: float) -> int:
    """Until the container meets one of `conditions` (by default: it is not
    running); its exit code then, or -1 for a condition that is not an exit.
    A running container's exit wakes the wait at once (a pidfd); other changes
    are looked for every `interval` seconds. A container that its checkpoint
    stopped has no exit code (podman's error too)."""
    from ferry.engine.containers import _poll
    from ferry.engine.listing import has_exited
    containers = engine.containers
    container = containers.get(name_or_id)
    wanted = {EXITED if c == "stopped" else c for c in conditions}
    while True:
        container = containers.get(container.id)   # catches up with an exit
        state = shown_state(engine, container)
        done = state in wanted if wanted else state in (CREATED, EXITED)
        if done:
            if state == EXITED and container.checkpointed_at:
                raise Conflict(f"getting exit code of container {container.id}: no such exit code "
                               f"(container in state exited)")
            return (container.exit_code or 0) if state in (CREATED, EXITED) else NO_EXIT
        if state in (RUNNING, PAUSED) and container.pid:
            directory = containers.dir(container.id)
            if _poll(lambda: has_exited(directory, container.pid), interval, interval=interval, pid=container.pid):
                containers.wait_exit_recorded(container)
        else:
            time.sleep(interval)


# ---- processes (top) -------------------------------------------------------------------------------------

def cgroup_pids(engine, container) -> list[int]:
    """The host pids of the container's processes, from its cgroup."""
    parent = engine.containers.runc.cgroup_parent
    for controller in ("pids", "memory", "freezer", "cpuacct"):
        path = f"/sys/fs/cgroup/{controller}/{parent}/{container.id}"
        if os.path.isdir(path):
            pids: list[int] = []
            for current, _, files in os.walk(path):
                if "cgroup.procs" in files:
                    text = _read(os.path.join(current, "cgroup.procs"))
                    pids += [int(p) for p in text.split() if p.isdigit()]
            return sorted(set(pids))
    return [container.pid] if container.pid else []


class Process(NamedTuple):
    host_pid: int
    pid: int            # in the container's PID namespace
    ppid: int
    pgid: int
    uid: int
    ruid: int
    gid: int
    rgid: int
    state: str
    nice: int
    vsz_kib: int
    cpu_ticks: int
    start_ticks: int
    tty: int
    comm: str
    args: str


def processes(engine, container) -> list[Process]:
    found = []
    for host_pid in cgroup_pids(engine, container):
        with contextlib.suppress(OSError, ValueError, IndexError):
            found.append(_process(host_pid))
    in_ns = {p.host_pid: p.pid for p in found}
    return [p._replace(ppid=in_ns.get(p.ppid, 0), pgid=in_ns.get(p.pgid, 0)) for p in found]


def _process(host_pid: int) -> Process:
    stat = _read(f"/proc/{host_pid}/stat", strict=True)
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    status = {k: v.strip() for k, _, v in (line.partition(":") for line in _read(f"/proc/{host_pid}/status")
                                            .splitlines())}
    uids, gids = status["Uid"].split(), status["Gid"].split()
    nspid = status.get("NSpid", str(host_pid)).split()[-1]
    args = _read(f"/proc/{host_pid}/cmdline").replace("\0", " ")
    return Process(host_pid, int(nspid), int(fields[1]), int(fields[2]), int(uids[1]), int(uids[0]), int(gids[1]), int(gids[0]),
                   fields[0], int(fields[16]), int(fields[20]) // 1024, int(fields[11]) + int(fields[12]),
                   int(fields[19]), int(fields[4]), comm, args or f"[{comm}]")


def _read(path: str, *, strict: bool = False) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(READ_LIMIT).decode(errors="replace")
    except OSError:
        if strict:
            raise
        return ""


def _names(path: str) -> dict[int, str]:
    """uid (or gid) -> name, from a passwd or group file as the container sees it."""
    names: dict[int, str] = {}
    for line in _read(path).splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            names.setdefault(int(parts[2]), parts[0])
    return names


def _boot_time() -> float:
    for line in _read("/proc/stat").splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def go_duration(nanos: int) -> str:
    """Go's time.Duration.String(): 7.092325861s, 108.323122ms, 1m2.5s, 0s."""
    if nanos == 0:
        return "0s"
    sign, nanos = ("-", -nanos) if nanos < 0 else ("", nanos)
    if nanos < 1_000:
        return f"{sign}{nanos}ns"
    if nanos < 1_000_000:
        return sign + _fraction(nanos, 1_000, 3) + "µs"
    if nanos < 1_000_000_000:
        return sign + _fraction(nanos, 1_000_000, 6) + "ms"
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _fraction(rest, 1_000_000_000, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _fraction(value: int, unit: int, digits: int) -> str:
    whole, part = divmod(value, unit)
    part_text = f"{part:0{digits}d}".rstrip("0")
    return f"{whole}.{part_text}" if part_text else str(whole)


# podman's (psgo's) AIX format descriptors: the header each shows.
DESCRIPTORS = {
    "args": "COMMAND", "comm": "COMMAND", "etime": "ELAPSED", "group": "GROUP", "nice": "NI", "pcpu": "%CPU",
    "pgid": "PGID", "pid": "PID", "ppid": "PPID", "rgroup": "RGROUP", "ruser": "RUSER", "time": "TIME",
    "tty": "TTY", "user": "USER", "vsz": "VSZ", "hpid": "HPID", "huser": "HUSER", "hgroup": "HGROUP",
    "state": "STATE", "stime": "STIME",
}
TOP_DEFAULT = ("user", "pid", "ppid", "pcpu", "etime", "tty", "time", "args")


def split_descriptors(words: list[str]) -> list[str] | None:
    """The descriptors asked for (commas or words), or None when one is no
    descriptor (podman then runs ps in the container with the words)."""
    descriptors = [d for word in words for d in word.split(",") if d] if words else list(TOP_DEFAULT)
    return descriptors if descriptors and all(d in DESCRIPTORS for d in descriptors) else None


def top(engine, name_or_id: str, words: list[str]) -> tuple[list[str], list[list[str]]] | str:
    """(headers, rows) of the container's processes, or for words that are not
    descriptors, the output of ps with those words run in the container."""
    container = engine.containers.get(name_or_id)
    if shown_state(engine, container) != RUNNING:
        raise Improper("top can only be used on running containers")
    descriptors = split_descriptors(words)
    if descriptors is None:
        return _ps_inside(engine, container, words)
    found = processes(engine, container)
    root = f"/proc/{container.pid}/root/etc"
    users, groups = _names(os.path.join(root, "passwd")), _names(os.path.join(root, "group"))
    host_users, host_groups = _names("/etc/passwd"), _names("/etc/group")
    boot, now = _boot_time(), time.time()
    rows = []
    for p in found:
        started = boot + p.start_ticks / CLOCK_TICKS
        elapsed = max(now - started, 1e-9)
        cpu_seconds = p.cpu_ticks / CLOCK_TICKS
        values = {
            "args": p.args, "comm": p.comm, "pid": str(p.pid), "ppid": str(p.ppid), "pgid": str(p.pgid),
            "user": users.get(p.uid, str(p.uid)), "ruser": users.get(p.ruid, str(p.ruid)),
            "group": groups.get(p.gid, str(p.gid)), "rgroup": groups.get(p.rgid, str(p.rgid)),
            "pcpu": f"{cpu_seconds / elapsed * 100:.3f}", "etime": go_duration(int(elapsed * 1e9)),
            "time": go_duration(int(cpu_seconds * 1e9)), "tty": _tty(p.tty), "nice": str(p.nice),
            "vsz": str(p.vsz_kib), "hpid": str(p.host_pid), "huser": host_users.get(p.uid, str(p.uid)),
            "hgroup": host_groups.get(p.gid, str(p.gid)), "state": p.state,
            "stime": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(started)),
        }
        rows.append([values[d] for d in descriptors])
    return [DESCRIPTORS[d] for d in descriptors], rows


def _tty(number: int) -> str:
    if number == 0:
        return "?"
    major, minor = (number >> 8) & 0xfff, (number & 0xff) | ((number >> 12) & 0xfff00)
    return f"pts/{minor}" if 136 <= major <= 143 else f"tty{minor}"


def _ps_inside(engine, container, words: list[str]) -> str:
    argv = engine.containers.runc.exec_argv(container.id, ["ps", *words], tty=False, env=[], cwd=None, user=None)
    result = proc.run(argv, desc="ps in the container", check=False, timeout=30)
    if result.returncode != 0:
        raise FerryError(f"executing ps(1) in the container: runtime failed with exit status: "
                         f"{result.returncode} and output: {proc.tail(result.stdout + result.stderr)}")
    return result.stdout


# ---- stats -----------------------------------------------------------------------------------------------

class Sample(NamedTuple):
    """One look at a container's cgroups and netns."""
    id: str
    name: str
    running: bool
    at_ns: int              # time.monotonic_ns() of the look
    cpu_ns: int             # cpuacct.usage
    up_ns: int              # since it started
    mem_usage: int
    mem_limit: int
    net_rx: int
    net_tx: int
    block_read: int
    block_write: int
    pids: int


def stats_targets(engine, names: list[str], *, every: bool) -> list:
    """The containers `stats` shows: those named, or every one (podman
    4.3.1's stats shows stopped ones too, without -a), by ID."""
    containers = engine.containers
    if names:
        return [containers.get(n) for n in names]
    return sorted(containers.list(all_states=True), key=lambda c: c.id)


def sample(engine, container) -> Sample:
    now = time.monotonic_ns()
    if container.state != RUNNING:
        return Sample(container.id, container.name, False, now, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    parent = engine.containers.runc.cgroup_parent

    def cgroup(controller: str, name: str) -> str:
        return _read(f"/sys/fs/cgroup/{controller}/{parent}/{container.id}/{name}")

    cpu = _int(cgroup("cpuacct", "cpuacct.usage")) or _int(cgroup("cpu,cpuacct", "cpuacct.usage"))
    memory = _int(cgroup("memory", "memory.usage_in_bytes"))
    inactive = _field(cgroup("memory", "memory.stat"), "total_inactive_file")
    memory = max(memory - inactive, 0) if memory > inactive else memory
    limit = _int(cgroup("memory", "memory.limit_in_bytes"))
    if not limit or limit >= UNLIMITED_MEMORY:
        limit = _field(_read("/proc/meminfo").replace(":", ""), "MemTotal") * 1024
    read = write = 0
    for line in cgroup("blkio", "blkio.throttle.io_service_bytes").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("Read", "Write") and parts[2].isdigit():
            read, write = (read + int(parts[2]), write) if parts[1] == "Read" else (read, write + int(parts[2]))
    rx = tx = 0
    for line in _read(f"/proc/{container.pid}/net/dev").splitlines()[2:]:
        interface, _, counters = line.partition(":")
        numbers = counters.split()
        if interface.strip() != "lo" and len(numbers) >= 9:
            rx, tx = rx + int(numbers[0]), tx + int(numbers[8])
    pids = _int(cgroup("pids", "pids.current"))
    up = 0
    if container.started_at:
        from ferry.util.timefmt import since
        up = int(since(container.started_at) * 1e9)
    return Sample(container.id, container.name, True, now, cpu, up, memory, limit, rx, tx, read, write, pids)


def _int(text: str) -> int:
    text = text.strip()
    return int(text) if text.isdigit() else 0


def _field(text: str, key: str) -> int:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == key and parts[1].isdigit():
            return int(parts[1])
    return 0
