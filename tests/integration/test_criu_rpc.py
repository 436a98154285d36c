"""CRIU dump and restore of a real process through ferry's own CRIU layer."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest

from ferry.checkpoint.criu import Criu, read_restore_stats
from ferry.util.errors import ToolError
from tests.conftest import require

# Counts in memory and publishes the count atomically; a restart would begin at 1,
# a faithful restore continues from where the dump froze it.
COUNTER = r"""
import os, sys, time
path = sys.argv[1]
n = 0
while True:
    n += 1
    with open(path + ".tmp", "w") as f:
        f.write(str(n))
    os.replace(path + ".tmp", path)
    time.sleep(0.01)
"""
PR_SET_CHILD_SUBREAPER = 36


def _read_count(path: str) -> int:
    with open(path) as f:
        return int(f.read() or 0)


def _wait_for(predicate, what: str, deadline: float = 20.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(autouse=True)
def subreaper():
    # Restored tasks are reparented from the exiting `criu swrk` to us, so the
    # test can reap them and leave no zombie.
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture
def counter(tmp_path):
    require("criu")
    require("pycriu")
    state = str(tmp_path / "count")
    proc = subprocess.Popen([sys.executable, "-c", COUNTER, state], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)
    _wait_for(lambda: os.path.exists(state) and _read_count(state) > 3, "counter to start")
    pids = [proc.pid]
    yield proc, state, pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    proc.poll()


def test_dump_and_restore_continue_from_memory(counter, tmp_path):
    proc, state, pids = counter
    images = str(tmp_path / "images")
    stats = Criu().dump(proc.pid, images)
    assert proc.wait(timeout=10) == -signal.SIGKILL  # CRIU kills the dumped tree
    frozen_at = _read_count(state)
    assert stats.pages_written > 0
    assert stats.frozen_time_us >= stats.memdump_time_us > 0
    assert os.path.exists(os.path.join(images, "dump.log"))

    time.sleep(0.2)  # not a synchronisation: the count must stay still while nothing runs
    assert _read_count(state) == frozen_at

    pid = Criu().restore(images)
    pids.append(pid)
    assert pid == proc.pid  # CRIU gives the tree its old PID back
    _wait_for(lambda: _read_count(state) != frozen_at, "restored counter to advance")
    assert _read_count(state) > frozen_at  # continued from memory, not restarted at 1
    assert read_restore_stats(images).restore_time_us > 0


def test_leave_running_then_restore_clash_quotes_log(counter, tmp_path):
    proc, state, _ = counter
    images = str(tmp_path / "images")
    Criu().dump(proc.pid, images, leave_running=True)
    before = _read_count(state)
    _wait_for(lambda: _read_count(state) > before, "original to keep running")
    assert proc.poll() is None

    with pytest.raises(ToolError) as failure:
        Criu().restore(images)  # the original still holds the PID
    error = failure.value
    assert error.log_path == os.path.join(images, "restore.log")
    assert os.path.exists(error.log_path)  # the log is kept for the user
    with open(error.log_path) as f:
        log_text = f.read()
    quoted = error.output_tail.split(" | ")
    assert quoted and all(piece in log_text for piece in quoted)  # quoted from CRIU's log
    assert proc.poll() is None  # the failed restore did not disturb the original


def test_dump_of_missing_pid_is_a_clear_error(tmp_path):
    require("criu")
    require("pycriu")
    with pytest.raises(ToolError) as failure:
        Criu().dump(2**22 - 1, str(tmp_path / "images"))
    assert "criu dump of pid" in str(failure.value)
