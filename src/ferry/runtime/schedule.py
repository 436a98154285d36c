"""Periodic checkpoints, run by the container's monitor: ferry has no daemon.

`ferry container checkpoint NAME --every D` writes the schedule beside the
container's stored checkpoints (<root>/checkpoints/ID/schedule.json). The
monitor, which lives exactly as long as the container runs, reads it whenever
it changes, and each time it is due runs the checkpoint command it names: a
whole `ferry container checkpoint -R`, with the container's lock and journal,
so that a scheduled checkpoint is as safe to interrupt as a typed one. One
runs at a time; a run that overlaps the next due time delays it.

The schedule is this host's, never an archive's: it names a command and,
with --file-pattern, where archives are written.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import NamedTuple

from ferry.util.fs import atomic_write, remove_file

SCHEDULE_FILE = "schedule.json"
MIN_EVERY = 1.0              # seconds; a dump of even a small container takes ~0.3 s
MAX_EVERY = 366 * 86400.0
MAX_SCHEDULE_BYTES = 64 << 10


class Schedule(NamedTuple):
    every: float               # seconds between the starts of two checkpoints
    argv: tuple[str, ...]      # the checkpoint command

    def to_json(self) -> str:
        return json.dumps({"every": self.every, "argv": list(self.argv)})


def read(path: str) -> Schedule | None:
    """The schedule at `path`, or None when there is none. ValueError when it
    is not one ferry wrote (the monitor then logs it and runs nothing)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SCHEDULE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_SCHEDULE_BYTES:
        raise ValueError("it is too large")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"it is not JSON: {error}") from None
    if not isinstance(doc, dict) or set(doc) != {"every", "argv"}:
        raise ValueError("it does not hold exactly 'every' and 'argv'")
    every, argv = doc["every"], doc["argv"]
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not MIN_EVERY <= every <= MAX_EVERY:
        raise ValueError(f"'every' is not a number of seconds from {MIN_EVERY:g} to {MAX_EVERY:g}")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise ValueError("'argv' is not a list of strings")
    return Schedule(float(every), tuple(argv))


def write(path: str, schedule: Schedule) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    atomic_write(path, schedule.to_json())


def clear(path: str) -> bool:
    """Whether there was a schedule to clear."""
    existed = os.path.exists(path)
    remove_file(path)
    return existed


class Scheduler:
    """The monitor's side: when the next checkpoint is due, and the one running."""

    def __init__(self, path: str | None, log, output: str | None = None):
        self.path = path
        self.log = log
        self.output = output          # where the checkpoint commands' stderr goes (the monitor's log)
        self.seen: tuple | None = None
        self.schedule: Schedule | None = None
        self.due: float | None = None
        self.child: subprocess.Popen | None = None

    def refresh(self, now: float) -> None:
        """Re-read the schedule when its file changed; the first run is due one
        interval after the change (the command that set it took one itself)."""
        if not self.path:
            return
        try:
            info = os.stat(self.path)
            key = (info.st_ino, info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            key = None
        if key == self.seen:
            return
        self.seen = key
        try:
            self.schedule = read(self.path)
        except (OSError, ValueError) as error:
            self.log.error("checkpoint schedule %s ignored: %s", self.path, error)
            self.schedule = None
        self.due = now + self.schedule.every if self.schedule else None
        if self.schedule:
            self.log.info("checkpoints every %g s", self.schedule.every)

    def wait(self, now: float, longest: float) -> float:
        """How long the monitor may sleep before the next look."""
        if self.due is None or self.child is not None:
            return longest
        return max(0.0, min(longest, self.due - now))

    def tick(self, now: float) -> None:
        self.refresh(now)
        if self.schedule is None or self.child is not None or self.due is None or now < self.due:
            return
        self.due = now + self.schedule.every
        stderr = None
        try:
            stderr = open(self.output, "ab") if self.output else subprocess.DEVNULL
            # Its own session: a signal meant for the monitor's group is not its.
            self.child = subprocess.Popen(list(self.schedule.argv), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        except OSError as error:
            self.log.error("cannot run the scheduled checkpoint: %s", error)
        finally:
            if stderr not in (None, subprocess.DEVNULL):
                stderr.close()

    def reaped(self, pid: int, status: int) -> bool:
        """Whether `pid`, reaped by the monitor, was the scheduled checkpoint."""
        if self.child is None or pid != self.child.pid:
            return False
        code = os.waitstatus_to_exitcode(status)
        self.child.returncode = code   # reaped here: Popen must not wait for it again
        self.child = None
        if code == 0:
            self.log.info("scheduled checkpoint taken")
        else:
            self.log.warning("scheduled checkpoint failed (exit %s); the next is due in %g s", code,
                             self.schedule.every if self.schedule else 0)
        return True
