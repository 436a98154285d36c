"""The peak anonymous memory of ferry's own processes while one ferry command runs.

A thread samples /proc every ~10 ms and sums RssAnon (from /proc/PID/status)
over the ferry CLI process and the ferry Python processes that belong to it:
  - its descendants that run ferry's Python (a WarmMonitor, a monitor before
    it forks away);
  - ferry Python processes started at or after the CLI whose command line
    names the benchmark's ferry root: the container monitor, which forks once
    and ends up as init's child, and the exit command it runs.
runc, CRIU, the container's processes and podman are never counted: they are
not ferry's Python. RssAnon leaves out file-backed and shmem pages, such as
the CRIU page images ferry maps from its tmpfs.

A child forked but not yet exec'd (subprocess, the monitor's own fork) still
has its parent's command line and shares its pages: it is skipped while its
parent, with the same command line, is alive, so the sum does not count the
same memory twice.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field

KIB = 1024
MIB = 1 << 20
INTERVAL = 0.010


def parse_stat(text: str) -> tuple[int, int]:
    """(ppid, starttime in clock ticks) from /proc/PID/stat; comm may hold spaces and ')'."""
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[1]), int(rest[19])


def parse_status(text: str) -> dict[str, int]:
    """PPid and RssAnon (in bytes) from /proc/PID/status; RssAnon 0 when absent (zombies, kernel threads)."""
    out = {"PPid": 0, "RssAnon": 0}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "PPid":
            out["PPid"] = int(value.split()[0])
        elif key == "RssAnon":
            parts = value.split()
            out["RssAnon"] = int(parts[0]) * (KIB if parts[1:] == ["kB"] else 1)
    return out


def is_ferry_python(argv: list[str]) -> bool:
    """A Python interpreter running ferry: `python .../bin/ferry ...` or `python -m ferry[.x] ...`."""
    if not argv or not os.path.basename(argv[0]).startswith("python"):
        return False
    args = argv[1:]
    while args and args[0].startswith("-") and args[0] != "-m":
        args = args[1:]   # interpreter options such as -I or -S
    if not args:
        return False
    if args[0] == "-m":
        return len(args) > 1 and args[1].split(".")[0] == "ferry"
    return os.path.basename(args[0]) == "ferry"


def role(argv: list[str]) -> str:
    """How a ferry process is named in a sample's details: "monitor", or
    "ferry" and its verbs (e.g. "ferry container cleanup")."""
    if "ferry.runtime.monitor" in argv:
        return "monitor"
    if "-m" in argv[1:-1] and argv[argv.index("-m") + 1] != "ferry":
        return argv[argv.index("-m") + 1]   # another module of ferry's
    words, args = [], argv[1:]
    while args and len(words) < 2:
        arg, args = args[0], args[1:]
        if arg in ("--root", "-m") and args:
            args = args[1:]
        elif not arg.startswith("-") and os.path.basename(arg) != "ferry":
            words.append(arg)
    return " ".join(["ferry", *words])


@dataclass
class _Proc:
    start: int
    ppid: int
    argv: list[str]
    descends: bool = False   # from the CLI, as it was when first seen


@dataclass
class Peak:
    """What one watched command used: the largest sum, and each process's own largest."""
    sum_bytes: int = 0
    at: float | None = None            # seconds after the start of the watch
    ticks: int = 0
    per_process: dict = field(default_factory=dict)   # "pid role" -> max RssAnon bytes
    sampler_cpu: float = 0.0           # the sampling thread's own CPU seconds

    @property
    def sum_mib(self) -> float:
        return self.sum_bytes / MIB

    @property
    def max_process_mib(self) -> float:
        return max(self.per_process.values(), default=0) / MIB

    def as_dict(self) -> dict:
        return {"peak_sum_mib": round(self.sum_mib, 2), "peak_at": self.at, "ticks": self.ticks,
                "max_process_mib": round(self.max_process_mib, 2),
                "per_process_mib": {k: round(v / MIB, 2) for k, v in self.per_process.items()},
                "sampler_cpu": round(self.sampler_cpu, 4)}


class ProcessTree:
    """One command's ferry processes, found by scanning /proc (or a fake tree, in tests)."""

    def __init__(self, cli_pid: int, marker: str, proc_root: str = "/proc"):
        self.cli = cli_pid
        self.marker = marker            # the ferry root: in every command line that belongs to this run
        self.proc_root = proc_root
        self.known: dict[int, _Proc] = {}
        stat = self._stat(cli_pid)
        self.cli_start = stat[1] if stat else 0

    def _read(self, pid: int, name: str) -> str | None:
        try:
            with open(os.path.join(self.proc_root, str(pid), name), "rb") as f:
                return f.read().decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        except OSError:
            return None

    def _stat(self, pid: int) -> tuple[int, int] | None:
        text = self._read(pid, "stat")
        if not text:
            return None
        try:
            return parse_stat(text)
        except (ValueError, IndexError):
            return None

    def _argv(self, pid: int) -> list[str] | None:
        text = self._read(pid, "cmdline")
        return None if text is None else [a for a in text.split("\0") if a]

    def _descends(self, pid: int) -> bool:
        seen = set()
        while pid not in seen and pid > 1:
            if pid == self.cli:
                return True
            seen.add(pid)
            entry = self.known.get(pid)
            if entry is None:
                return False
            if entry.descends:
                return True
            pid = entry.ppid
        return False

    def scan(self) -> None:
        """Learn the processes that appeared, forget the ones that ended."""
        try:
            pids = {int(n) for n in os.listdir(self.proc_root) if n.isdigit()}
        except OSError:
            return
        for pid in list(self.known):
            if pid not in pids:
                del self.known[pid]
        new = []
        for pid in pids - set(self.known):
            stat = self._stat(pid)
            argv = self._argv(pid)
            if stat is None or argv is None:
                continue   # gone already
            self.known[pid] = _Proc(start=stat[1], ppid=stat[0], argv=argv)
            new.append(pid)
        for pid in new:   # once all are known: a new child's chain may pass through a new parent
            self.known[pid].descends = self._descends(pid)

    def _ours(self, pid: int, entry: _Proc) -> bool:
        if pid == self.cli:
            return True
        if not is_ferry_python(entry.argv):
            return False
        return entry.descends or (self.marker in " ".join(entry.argv) and entry.start >= self.cli_start)

    def sample(self) -> dict[int, tuple[str, int]]:
        """pid -> (role, RssAnon bytes) of this command's ferry processes now."""
        self.scan()
        found: dict[int, tuple[str, int]] = {}
        candidates = [pid for pid, e in self.known.items() if pid == self.cli or e.descends
                      or (is_ferry_python(e.argv) and self.marker in " ".join(e.argv))]
        statuses = {}
        for pid in candidates:
            argv = self._argv(pid)      # it may have exec'd since it was first seen
            text = self._read(pid, "status")
            if argv is None or text is None:
                continue
            self.known[pid].argv = argv
            statuses[pid] = parse_status(text)
            self.known[pid].ppid = statuses[pid]["PPid"] or self.known[pid].ppid
        for pid, status in statuses.items():
            entry = self.known[pid]
            if not self._ours(pid, entry):
                continue
            parent = self.known.get(status["PPid"])
            if pid != self.cli and parent is not None and parent.argv == entry.argv:
                continue   # forked, not exec'd yet: its pages are its parent's
            found[pid] = ("cli" if pid == self.cli else role(entry.argv), status["RssAnon"])
        return found


class Sampler:
    """watch(pid) as a context manager: samples until the block ends; .peak is the result."""

    def __init__(self, marker: str, interval: float = INTERVAL, proc_root: str = "/proc"):
        self.marker = marker
        self.interval = interval
        self.proc_root = proc_root
        self.peak = Peak()

    def record(self, found: dict[int, tuple[str, int]], elapsed: float) -> None:
        self.peak.ticks += 1
        total = sum(rss for _, rss in found.values())
        if total > self.peak.sum_bytes:
            self.peak.sum_bytes, self.peak.at = total, elapsed
        for pid, (kind, rss) in found.items():
            key = f"{pid} {kind}"
            self.peak.per_process[key] = max(self.peak.per_process.get(key, 0), rss)

    @contextlib.contextmanager
    def watch(self, pid: int):
        self.peak = Peak()
        tree = ProcessTree(pid, self.marker, self.proc_root)
        stop = threading.Event()
        started = time.monotonic()

        def loop() -> None:
            cpu = time.thread_time()
            try:
                while True:
                    self.record(tree.sample(), time.monotonic() - started)
                    if stop.wait(self.interval):
                        break
            finally:
                self.peak.sampler_cpu = time.thread_time() - cpu

        thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=10)
