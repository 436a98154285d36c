"""The parts of ferry's reliability that need no root: container locks,
signal handling around critical steps, journals, and how a dump that lost its
command is judged complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ferry.engine import journal
from ferry.engine.recovery import dump_completed
from ferry.util import locks, signals


def test_a_second_holder_waits_then_is_told_who_holds_the_lock(tmp_path):
    path = str(tmp_path / "container-x.lock")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from ferry.util.locks import owned_lock
        with owned_lock({path!r}, "ferry container checkpoint", wait=1, busy_message="busy"):
            print("held", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(locks.Busy) as busy:
            with locks.owned_lock(path, "ferry rm", wait=0.2, busy_message="container 'x' is busy"):
                pass
        assert busy.value.message == f"container 'x' is busy: ferry container checkpoint (pid {holder.pid}) is working on it"
        assert locks.is_locked(path)
    finally:
        holder.kill()
        holder.wait()
    # The kernel drops a dead holder's flock: nothing stale to take over.
    assert not locks.is_locked(path)
    with locks.owned_lock(path, "ferry rm", wait=0, busy_message="busy"):
        with locks.owned_lock(path, "ferry rm", wait=0, busy_message="busy"):   # re-entrant
            assert locks.is_locked(path)
    assert not locks.is_locked(path)


def test_signals_wait_for_the_end_of_a_critical_step():
    signals.install()
    try:
        reached_end = []
        with pytest.raises(KeyboardInterrupt) as interrupted:
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                assert signals.pending()
                reached_end.append(True)   # the step goes on to its end
        assert reached_end and str(interrupted.value) == "SIGTERM"
        assert not signals.pending()
        with pytest.raises(KeyboardInterrupt):   # outside a step: at once
            os.kill(os.getpid(), signal.SIGHUP)
        with pytest.raises(ValueError):   # a step that fails drops the held signal: it is failing already
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                raise ValueError("the step failed")
        assert not signals.pending()
    finally:
        for number in signals.HANDLED:
            signal.signal(number, signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL)


def test_journal_round_trip_and_a_damaged_one_reads_as_an_interrupted_start(tmp_path):
    directory = str(tmp_path)
    entry = journal.begin(directory, journal.CHECKPOINT, export="/x.tar.zst", leave_running=True)
    entry = journal.update(directory, entry, archive_temp="/.x.tar.zst.1.tmp", phase="dumped")
    assert journal.read(directory) == entry and entry.pid == os.getpid()
    with open(os.path.join(directory, "journal.json"), "w") as f:
        f.write("{not json")
    assert journal.read(directory).op == journal.START
    journal.finish(directory)
    assert journal.read(directory) is None and not journal.exists(directory)


@pytest.mark.parametrize("log, inventory, complete", [
    ("... Unfreezing tasks into 2\n", True, True),                    # killed between the kill and the stats
    ("... Dumping finished successfully\n", True, True),
    ("... Unfreezing tasks into 2\nDumping FAILED.\n", True, False),
    ("... Writing image inventory\n", True, False),                   # failed at the end: the inventory is no proof
    ("... Unfreezing tasks into 2\n", False, False),
    (None, True, True),                                               # no log to say otherwise
])
def test_a_dump_is_complete_only_when_criu_got_to_kill_the_tasks(tmp_path, log, inventory, complete):
    images, work = tmp_path / "images", tmp_path / "work"
    images.mkdir()
    work.mkdir()
    (images / "pagemap-1.img").write_bytes(b"x")
    if inventory:
        (images / "inventory.img").write_bytes(b"x")
    if log is not None:
        (work / "dump.log").write_text(log)
    assert dump_completed(str(images), str(work)) is complete


def test_a_dump_whose_pages_went_to_a_migration_is_no_local_checkpoint(tmp_path):
    images, work = tmp_path / "images", tmp_path / "work"
    images.mkdir()
    work.mkdir()
    (images / "inventory.img").write_bytes(b"x")
    (work / "dump.log").write_text("Dumping finished successfully\n")
    assert dump_completed(str(images), str(work)) is False
