"""The checkpoints ferry keeps (engine/checkpoint_store.py): stored local
checkpoints taken with -R, exported archives, the in-place one of a stopped
container; `checkpoint ls`, `rm` and `prune`; `container restore NAME` taking
the latest and `--checkpoint ID` another; and the schedule the monitor runs
(runtime/schedule.py). On the fake host of tests/unit/fakehost.py, with the
real archive code."""

from __future__ import annotations

import logging
import os
import sys
import time

import pytest

from ferry.engine.checkpoint_store import ARCHIVE, LOCAL, check_pattern, fill_pattern, to_keep
from ferry.engine.checkpoints import Authenticity, CheckpointOptions, RestoreOptions
from ferry.engine.containers import RunOptions
from ferry.engine.listing import EXITED, RUNNING
from ferry.runtime import schedule
from ferry.util.errors import Conflict, NotFound, UsageError
from ferry.util.timefmt import parse_duration
from tests.unit.fakehost import containers, engine, hold_lock, host, release  # noqa: F401  (fixtures)
from tests.unit.test_checkpoints_engine import checkpoints, web  # noqa: F401  (fixtures)


def upper_file(containers, container, name: str = "state") -> str:
    return os.path.join(containers.files(container.id).upper, name)


def write_state(containers, container, text: str) -> None:
    """What the container wrote to its root filesystem (its upper dir)."""
    os.makedirs(containers.files(container.id).upper, exist_ok=True)
    with open(upper_file(containers, container), "w") as f:
        f.write(text)


def read_state(containers, container) -> str | None:
    try:
        with open(upper_file(containers, container)) as f:
            return f.read()
    except FileNotFoundError:
        return None


@pytest.fixture
def unchecked(monkeypatch):
    """The fake dump's images are no CRIU images: here the image check (tested on
    real dumps in tests/integration/test_imagecheck.py) lets them pass."""
    from ferry.checkpoint import imagecheck
    monkeypatch.setattr(imagecheck, "check_images", lambda *args, **kwargs: None)
    monkeypatch.setattr(imagecheck, "root_mode", lambda images: None)


def stored(checkpoints, container) -> list:
    return [e for e in checkpoints.store.entries() if e.container_id == container.id and e.kind == LOCAL]


def crash(containers, host, container) -> None:
    host.container_exits(container.id, 137, containers.dir(container.id))
    containers.cleanup(container.id)


# ---- stored local checkpoints ---------------------------------------------------------

def test_R_local_checkpoints_are_whole_archives_kept_in_the_root_newest_first(checkpoints, containers, host, web):
    write_state(containers, web, "one")
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True, tcp_established=True))
    write_state(containers, web, "two")
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True))
    second, first = stored(checkpoints, web)
    assert second.created_at > first.created_at and second.id != first.id
    for entry in (first, second):
        assert os.path.dirname(entry.path) == os.path.join(checkpoints.layout.checkpoints, web.id)
        assert os.stat(entry.path).st_mode & 0o777 == 0o600 and entry.size == os.stat(entry.path).st_size
        assert (entry.container_name, entry.image, entry.leave_running, entry.signed) == ("web", "localhost/busy:1", True,
                                                                                           False)
    [dump, _] = host.ran("checkpoint")
    assert {"--leave-running", "--tcp-established"} <= set(dump)
    seen = containers.get("web")
    assert (seen.state, seen.pid, seen.checkpointed_at) == (RUNNING, web.pid, None)   # no in-place images
    assert not os.path.exists(containers.files(web.id).checkpoint_images)


def test_restore_NAME_brings_back_the_latest_in_place_of_the_crashed_container(checkpoints, containers, host, web, unchecked):
    write_state(containers, web, "one")
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True))
    write_state(containers, web, "two")
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True))
    write_state(containers, web, "three, after the last checkpoint")
    with pytest.raises(Conflict, match="container 'web' is running"):
        checkpoints.restore("web", RestoreOptions())
    crash(containers, host, web)
    result = checkpoints.restore("web", RestoreOptions())
    assert (result.id, result.name, result.authenticity) == (web.id, "web", Authenticity.LOCAL)
    seen = containers.get("web")
    assert seen.state == RUNNING and seen.restored_at and read_state(containers, seen) == "two"
    assert seen.config.ip == web.config.ip   # its own address, given up by its stopped self
    assert len(stored(checkpoints, web)) == 2   # a checkpoint stays until removed


def test_checkpoint_ID_restores_an_older_one_and_must_be_the_named_container_s(checkpoints, containers, host, web, unchecked):
    write_state(containers, web, "one")
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True))
    write_state(containers, web, "two")
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True))
    other = containers.run(RunOptions(image="busy:1", name="other", detach=True))
    _, first = stored(checkpoints, web)
    crash(containers, host, web)
    with pytest.raises(UsageError, match=rf"checkpoint {first.id[:12]} is not one of container 'other''s"):
        checkpoints.restore("other", RestoreOptions(checkpoint=first.id[:12]))
    with pytest.raises(NotFound, match="no such checkpoint 'fffffff'"):
        checkpoints.restore("web", RestoreOptions(checkpoint="fffffff"))
    checkpoints.restore("web", RestoreOptions(checkpoint=first.id[:12]))
    assert read_state(containers, containers.get("web")) == "one"
    assert containers.get(other.id).state == RUNNING


def test_a_checkpoint_restored_under_a_new_name_leaves_its_container_be(checkpoints, containers, host, web, unchecked):
    write_state(containers, web, "one")
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True))
    [entry] = stored(checkpoints, web)
    crash(containers, host, web)
    copy = checkpoints.restore(None, RestoreOptions(checkpoint=entry.id, name="copy", ignore_static_ip=True))
    assert copy.id != web.id and containers.get("copy").state == RUNNING
    assert containers.get("web").state == EXITED


def test_a_failed_restore_in_place_of_the_container_leaves_it_restorable_by_name(checkpoints, containers, host,
                                                                                  web, unchecked):
    write_state(containers, web, "one")
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True))
    crash(containers, host, web)
    host.fail["restore"] = (1, "criu failed: type RESTORE errno 0")
    with pytest.raises(Exception, match="criu failed"):
        checkpoints.restore("web", RestoreOptions())
    with pytest.raises(NotFound):
        containers.get("web")   # its stopped self made way only once the archive was checked whole
    assert host.leftovers(web.id) == [] and len(stored(checkpoints, web)) == 1
    del host.fail["restore"]
    assert checkpoints.restore("web", RestoreOptions()).id == web.id
    assert read_state(containers, containers.get("web")) == "one"


def test_keep_last_and_prune_drop_each_container_s_oldest(checkpoints, containers, host, web):
    for n in range(4):
        checkpoints.checkpoint("web", CheckpointOptions(leave_running=True, keep_last=3))
    kept = stored(checkpoints, web)
    assert len(kept) == 3
    assert sorted(os.listdir(os.path.join(checkpoints.layout.checkpoints, web.id))) == sorted(
        os.path.basename(e.path) for e in kept)
    containers.run(RunOptions(image="busy:1", name="db", detach=True))
    checkpoints.checkpoint("db", CheckpointOptions(leave_running=True))
    dropped = checkpoints.prune(1, ["web"])
    assert [e.id for e in dropped] == [e.id for e in kept[1:]]
    assert [e.container_name for e in checkpoints.store.entries()] == ["db", "web"]
    with pytest.raises(NotFound, match="no such container 'nope'"):
        checkpoints.prune(1, ["nope"])
    with pytest.raises(UsageError, match="--keep-last must be 1 or more"):
        checkpoints.prune(0)
    with pytest.raises(UsageError, match="--keep-last must be 1 or more"):
        checkpoints.checkpoint("web", CheckpointOptions(leave_running=True, keep_last=0))


def test_rm_removes_a_container_s_stored_checkpoints_but_not_its_archives(checkpoints, containers, host, web,
                                                                            tmp_path):
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True))
    archive = tmp_path / "web.tar.zst"
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True, export=str(archive)))
    containers.remove("web", force=True)
    [entry] = checkpoints.store.entries()
    assert (entry.kind, entry.path, entry.container_name) == (ARCHIVE, str(archive), "web")
    assert not os.path.exists(os.path.join(checkpoints.layout.checkpoints, web.id))


def test_exports_are_listed_while_their_file_exists_and_rm_deletes_it(checkpoints, containers, host, web,
                                                                        tmp_path):
    archive = tmp_path / "web.tar.zst"
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True, export=str(archive)))
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True, export=str(archive)))   # over it
    [entry] = checkpoints.store.entries()
    assert (entry.kind, entry.path, entry.size) == (ARCHIVE, str(archive), archive.stat().st_size)
    assert checkpoints.remove_checkpoint(entry.id[:5]).id == entry.id
    assert not archive.exists() and checkpoints.store.entries() == []
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True, export=str(archive)))
    archive.unlink()   # the user's own rm
    assert checkpoints.store.entries() == []


def test_a_stopped_container_s_own_checkpoint_is_listed_under_its_id_and_can_be_dropped(checkpoints, containers,
                                                                                       host, web):
    checkpoints.checkpoint("web", CheckpointOptions())
    [entry] = checkpoints.store.entries()
    assert (entry.id, entry.kind, entry.in_place, entry.path) == (
        web.id, LOCAL, True, containers.files(web.id).checkpoint_images)
    assert entry.size > 0 and entry.created_at == containers.get("web").checkpointed_at
    with pytest.raises(UsageError, match="restores in place only"):
        checkpoints.restore(None, RestoreOptions(checkpoint=web.id, name="copy"))
    checkpoints.remove_checkpoint(web.id)
    seen = containers.get("web")
    assert (seen.state, seen.checkpointed_at) == (EXITED, None) and checkpoints.store.entries() == []
    with pytest.raises(NotFound, match="has no local checkpoint"):
        checkpoints.restore("web", RestoreOptions())


def test_the_sweep_removes_unrecorded_files_but_not_a_busy_container_s(checkpoints, containers, host, web):
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True, every=60))
    directory = os.path.join(checkpoints.layout.checkpoints, web.id)
    orphan = os.path.join(directory, "0" * 64 + ".tar.zst")   # its command died before recording it
    open(orphan, "w").close()
    holder = hold_lock(checkpoints.layout.lock(f"container-{web.id}"), "ferry container checkpoint")
    try:
        assert checkpoints.store.sweep() == []   # under another command's lock, it may be one being written
    finally:
        release(holder)
    assert checkpoints.store.sweep() == [f"checkpoint file {orphan}"]
    assert len(stored(checkpoints, web)) == 1 and os.path.exists(checkpoints.layout.checkpoint_schedule(web.id))
    containers.remove("web", force=True)
    assert not os.path.exists(directory)


# ---- periodic checkpoints ---------------------------------------------------------------

def test_every_takes_one_now_and_leaves_the_monitor_its_command(checkpoints, containers, host, web, tmp_path):
    pattern = str(tmp_path / "{name}-{id}-{time}.tar.zst")
    checkpoints.checkpoint("web", CheckpointOptions(every=2.0, keep_last=3, file_pattern=pattern,
                                                    tcp_established=True))
    [entry] = checkpoints.store.entries()
    assert entry.kind == ARCHIVE and os.path.basename(entry.path).startswith(f"web-{web.id[:12]}-20")
    assert containers.get("web").state == RUNNING
    path = checkpoints.layout.checkpoint_schedule(web.id)
    plan = schedule.read(path)
    assert plan.every == 2.0
    assert list(plan.argv) == [sys.executable, "-m", "ferry", "--root", checkpoints.layout.root, "container",
                               "checkpoint", web.id, "--leave-running", "--file-pattern", pattern,
                               "--keep-last", "3", "--tcp-established"]
    [monitor] = [c for c in host.calls if c[1:3] == ["-m", "ferry.runtime.monitor"] and "--id" in c]
    assert monitor[monitor.index("--checkpoint-schedule") + 1] == path   # where the monitor looks for it
    assert checkpoints.unschedule("web") is True and not os.path.exists(path)
    assert checkpoints.unschedule("web") is False


def test_what_a_schedule_refuses(checkpoints, containers, host, web, tmp_path):
    for options, says in ((CheckpointOptions(every=0.5), "--every must be from 1 s"),
                          (CheckpointOptions(every=2, export=str(tmp_path / "x.tar")), "take no --export"),
                          (CheckpointOptions(file_pattern=str(tmp_path / "x.tar")), "lacks {time}"),
                          (CheckpointOptions(file_pattern=str(tmp_path / "{time}{x}.tar")), "a field other than")):
        with pytest.raises(UsageError, match=says):
            checkpoints.checkpoint("web", options)
    assert not host.ran("checkpoint") and checkpoints.store.entries() == []
    assert not os.path.exists(checkpoints.layout.checkpoint_schedule(web.id))


def test_encryption_takes_an_archive_only(checkpoints, containers, host, web, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for options, says in ((CheckpointOptions(encrypt_to=("age1x",)), "only an archive can be encrypted"),
                          (CheckpointOptions(export=str(out / "x.tar"), create_image="localhost/x:1",
                                             encrypt_to=("age1x",)), "a checkpoint image cannot be encrypted")):
        with pytest.raises(UsageError, match=says):
            checkpoints.checkpoint("web", options)
    assert not host.ran("checkpoint") and os.listdir(out) == [] and containers.get("web").state == RUNNING


def test_patterns_and_durations():
    assert check_pattern("b/{name}-{time}.tar") == os.path.abspath("b/{name}-{time}.tar")
    filled = fill_pattern("/b/{name}-{id}-{time}.tar", "ab" * 32, "web")
    assert filled.startswith("/b/web-abababababab-20") and filled.endswith("Z.tar") and ":" not in filled
    assert [parse_duration(t) for t in ("2s", "1m30s", "500ms", "1h", "30", "1.5s")] == [2, 90, 0.5, 3600, 30, 1.5]
    for bad in ("", "x", "1x", "s", "1..2s", "-1s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_to_keep_counts_per_container():
    from ferry.engine.checkpoint_store import CheckpointEntry

    def entry(n: int, container: str):
        return CheckpointEntry(str(n), container, container, "i", LOCAL, f"/{n}", f"2024-01-01T00:00:{n:02d}Z", 1,
                               True, False, False)
    entries = [entry(n, "a" if n % 2 else "b") for n in range(7)]
    kept, dropped = to_keep(entries, 2)
    assert [e.id for e in kept] == ["6", "5", "4", "3"] and [e.id for e in dropped] == ["2", "1", "0"]


# ---- the monitor's scheduler -------------------------------------------------------------

@pytest.mark.parametrize("text, why", [
    ("{", "not JSON"),
    ('{"every": 2, "argv": ["true"], "more": 1}', "exactly"),
    ('{"every": 0.1, "argv": ["true"]}', "number of seconds"),
    ('{"every": true, "argv": ["true"]}', "number of seconds"),
    ('{"every": "2", "argv": ["true"]}', "number of seconds"),
    ('{"every": 2, "argv": "true"}', "list of strings"),
    ('{"every": 2, "argv": []}', "list of strings"),
    ('{"every": 2, "argv": ["a\\u0000b"]}', "list of strings"),
    ('[1]', "exactly"),
])
def test_a_schedule_file_ferry_did_not_write_is_refused(tmp_path, text, why):
    path = tmp_path / "schedule.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=why):
        schedule.read(str(path))
    path.write_bytes(b" " * (schedule.MAX_SCHEDULE_BYTES + 1))
    with pytest.raises(ValueError, match="too large"):
        schedule.read(str(path))


def test_the_scheduler_runs_one_checkpoint_at_a_time_when_due(tmp_path, caplog):
    path = str(tmp_path / "schedule.json")
    ran = tmp_path / "ran"
    log = logging.getLogger("test-scheduler")
    scheduler = schedule.Scheduler(path, log, str(tmp_path / "monitor.log"))
    scheduler.tick(0.0)
    assert scheduler.schedule is None and scheduler.wait(0.0, 1.0) == 1.0
    command = [sys.executable, "-c", f"open({str(ran)!r}, 'a').write('x')"]
    schedule.write(path, schedule.Schedule(5.0, tuple(command)))
    scheduler.tick(100.0)   # read now; the first run is due one interval later
    assert scheduler.due == 105.0 and scheduler.child is None and scheduler.wait(103.0, 1.0) == 1.0
    assert scheduler.wait(104.5, 1.0) == 0.5
    scheduler.tick(105.0)
    child = scheduler.child
    assert child is not None and scheduler.due == 110.0
    scheduler.tick(111.0)
    assert scheduler.child is child   # one at a time: the next waits for this one
    pid, status = os.waitpid(child.pid, 0)
    assert scheduler.reaped(pid, status) and scheduler.child is None and ran.read_text() == "x"
    assert scheduler.reaped(pid, status) is False
    with caplog.at_level(logging.ERROR, logger="test-scheduler"):
        with open(path, "w") as f:
            f.write('{"every": 0}')
        time.sleep(0.01)
        os.utime(path, ns=(time.time_ns(), time.time_ns()))
        scheduler.tick(112.0)
    assert scheduler.schedule is None and scheduler.due is None and "ignored" in caplog.text
    os.unlink(path)
    scheduler.tick(200.0)
    assert scheduler.child is None and scheduler.schedule is None and scheduler.wait(200.0, 1.0) == 1.0
