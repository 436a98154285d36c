"""The journal of an operation in flight on a container: one record, written
(and fsynced) in the container's directory before the first step that cannot
simply be forgotten, updated as the operation passes its points of no
return, and removed when it is done.

A command that holds the container's lock owns its journal; a journal whose
lock is free belongs to a command that died (the kernel drops a flock with
its process), and engine/recovery.py finishes or undoes what it records."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from typing import NamedTuple

from ferry.store.layout import JOURNAL, TOOL_LOCK
from ferry.util.fs import atomic_write
from ferry.util.timefmt import utc_now

CHECKPOINT, RESTORE, START, MIGRATE = "checkpoint", "restore", "start", "migrate"
MAX_JOURNAL = 64 << 10


class Entry(NamedTuple):
    op: str                          # checkpoint | restore | start | migrate
    pid: int                         # the ferry command that wrote it
    started: str
    phase: str = "begun"             # checkpoint: begun, dumped; restore/start: begun, launched
    leave_running: bool = False      # checkpoint -R
    export: str | None = None        # checkpoint --export: the archive's path
    archive_temp: str | None = None  # ... and its temp file, removed if the export never ended
    from_archive: bool = False       # restore --import: the container is this restore's own
    scratch: str | None = None       # restore --import: the staging dir
    migration: str | None = None     # checkpoint, migrate: the migration (ROOT/migrations/ID.json) it serves


def begin(directory: str, op: str, **details) -> Entry:
    entry = Entry(op=op, pid=os.getpid(), started=utc_now(), **details)
    _write(directory, entry)
    return entry


def update(directory: str, entry: Entry, **changes) -> Entry:
    entry = entry._replace(**changes)
    _write(directory, entry)
    return entry


def _write(directory: str, entry: Entry) -> None:
    atomic_write(os.path.join(directory, JOURNAL), json.dumps(entry._asdict()), mode=0o600)


def read(directory: str) -> Entry | None:
    """The record, or None; one ferry cannot read (damaged, from another
    version) is treated as an interrupted start, the most careful reading."""
    path = os.path.join(directory, JOURNAL)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(MAX_JOURNAL))
        known = set(Entry._fields)
        return Entry(**{k: v for k, v in data.items() if k in known})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return Entry(op=START, pid=0, started="")


def exists(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, JOURNAL))


def hold_for_tool(directory: str) -> int:
    """A locked fd for a tool that outlives a killed ferry (runc checkpoint, in
    a session of its own): passed to it, the lock lives as long as the tool,
    from the fork on. Its pid in the journal could not say as much: a ferry
    killed between the fork and the journal's update left a dump running
    unseen, and the next command thawed it and lifted CRIU's network lock."""
    fd = os.open(os.path.join(directory, TOOL_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def wait_for_tool(directory: str, timeout: float, poll: float = 0.05) -> bool:
    """Until no tool holds the directory's tool lock; False if one still does."""
    try:
        fd = os.open(os.path.join(directory, TOOL_LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(poll)
    finally:
        os.close(fd)


def finish(directory: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, JOURNAL))
