"""engine/recovery.py's decisions without root, on the fake host of
tests/unit/fakehost.py: a journal left by a command that died (its pid is not
ours, and its lock is free) is finished or undone by the next command that
looks at the container, and never by one while another command holds it."""

from __future__ import annotations

import os

import pytest

from ferry.engine import journal, recovery
from ferry.engine.containers import RunOptions, Undo
from ferry.engine.listing import EXITED, RUNNING, Listing
from ferry.store.layout import CHECKPOINT_IMAGES, CHECKPOINT_WORK, CHECKPOINTING, JOURNAL
from ferry.util.errors import NotFound
from ferry.util.fs import mounts_under
from ferry.util.locks import is_locked
from tests.unit.fakehost import containers, engine, hold_lock, host, meanwhile, release  # noqa: F401  (fixtures)

DEAD_COMMAND = 4_999_999   # the pid of the ferry that wrote the journal: above any pid_max, so never alive


def left_by_a_dead_command(directory: str, op: str, **details) -> journal.Entry:
    entry = journal.begin(directory, op)
    return journal.update(directory, entry, pid=DEAD_COMMAND, **details)


@pytest.fixture
def running(containers, host):
    """A running container with a published port, and its directory."""
    container = containers.run(RunOptions(image="busy:1", name="svc", ports=("8080:80",), detach=True))
    return container, containers.dir(container.id)


def dump(directory: str, *, complete: bool) -> str:
    images, work = os.path.join(directory, CHECKPOINT_IMAGES), os.path.join(directory, CHECKPOINT_WORK)
    os.makedirs(images, exist_ok=True)
    os.makedirs(work)
    with open(os.path.join(images, "pagemap-1.img"), "wb") as f:
        f.write(b"pagemap")
    with open(os.path.join(images, "pages-1.img"), "wb") as f:
        f.write(b"\x01" * 4096)
    if complete:
        with open(os.path.join(images, "inventory.img"), "wb") as f:
            f.write(b"inventory")
    with open(os.path.join(work, "dump.log"), "w") as f:
        f.write("(00.3) Unfreezing tasks into 2\n" if complete else "(00.1) Dumping pages\n")
    with open(os.path.join(directory, CHECKPOINTING), "w"):
        pass
    return images


# ---- an interrupted checkpoint ------------------------------------------------------

def test_a_checkpoint_that_left_the_container_alive_thaws_it_and_lifts_criu_s_lock(containers, engine, host,
                                                                                    running, tmp_path):
    container, directory = running
    images = dump(directory, complete=False)
    temp_archive = tmp_path / ".svc.tar.zst.1234.tmp"
    temp_archive.write_bytes(b"half an archive")
    os.close(journal.hold_for_tool(directory))   # its runc has ended: the lock is free
    left_by_a_dead_command(directory, journal.CHECKPOINT,
                           archive_temp=str(temp_archive), export=str(tmp_path / "svc.tar.zst"))
    host.write(host.cgroup_file(container.id, "freezer.state"), "FROZEN\n")
    host.write(host.cgroup_file(container.id, "cgroup.freeze", "unified"), "1\n")
    netns = f"ferry-{container.id[:12]}"
    host.criu_locks[netns] = ["CRIU-4242"]
    seen = containers.get("svc")
    assert (seen.state, seen.pid, seen.checkpointed_at) == (RUNNING, container.pid, None)
    assert open(host.cgroup_file(container.id, "freezer.state")).read() == "THAWED"
    assert open(host.cgroup_file(container.id, "cgroup.freeze", "unified")).read() == "0"
    assert host.criu_locks[netns] == [] and host.ran("nft", "delete", "table", "inet", "CRIU-4242")
    assert not os.path.exists(images) and not temp_archive.exists()
    assert not os.path.exists(os.path.join(directory, CHECKPOINTING)) and not journal.exists(directory)
    assert netns in host.netns and host.published()   # it runs on, wired as before
    assert not is_locked(engine.layout.lock(f"container-{container.id}"))


def test_a_dead_container_with_a_complete_dump_is_recorded_as_checkpointed(containers, engine, host, running):
    container, directory = running
    images = dump(directory, complete=True)
    left_by_a_dead_command(directory, journal.CHECKPOINT, phase="begun")
    host.container_exits(container.id, 137, directory)   # CRIU killed the tasks after the dump
    assert host.exits[-1]["exit_command"] is False        # the marker kept the monitor's clean-up away
    seen = containers.get("svc")
    assert (seen.state, seen.exit_code) == (EXITED, 0) and seen.checkpointed_at
    assert sorted(os.listdir(images)) == ["inventory.img", "pagemap-1.img", "pages-1.img"]
    assert containers.files(seen.id).checkpoint_images == images and not mounts_under(images)
    assert host.leftovers(container.id) == []   # its network and rootfs are released until the restore
    assert not os.path.exists(os.path.join(directory, CHECKPOINTING)) and not journal.exists(directory)


def test_a_complete_dump_on_a_scratch_tmpfs_is_moved_onto_the_disk(containers, engine, host, running):
    container, directory = running
    images = os.path.join(directory, CHECKPOINT_IMAGES)
    os.makedirs(images)
    from ferry.util.fs import tmpfs_if_it_fits
    assert tmpfs_if_it_fits(images, 1 << 20)   # an export's images pass through memory
    dump(directory, complete=True)
    left_by_a_dead_command(directory, journal.CHECKPOINT)
    host.container_exits(container.id, 137, directory)
    assert host.mounted(images) == [images]
    seen = containers.get("svc")
    assert seen.checkpointed_at and host.mounted(images) == []
    assert sorted(os.listdir(images)) == ["inventory.img", "pagemap-1.img", "pages-1.img"]
    assert not os.path.exists(images + ".disk")


def test_a_dead_container_without_a_complete_dump_keeps_no_checkpoint(containers, engine, host, running):
    container, directory = running
    images = dump(directory, complete=False)
    left_by_a_dead_command(directory, journal.CHECKPOINT)
    host.container_exits(container.id, 137, directory)
    seen = containers.get("svc")
    assert (seen.state, seen.exit_code, seen.checkpointed_at) == (EXITED, 137, None)
    assert not os.path.exists(images) and host.leftovers(container.id) == []


def test_a_runc_checkpoint_that_outlived_its_ferry_is_waited_for(containers, engine, host, running, monkeypatch):
    container, directory = running
    images = dump(directory, complete=False)
    runc = host.process("runc", cmdline=["runc", "--root", "/r", "checkpoint", "--image-path", images, container.id])
    held = journal.hold_for_tool(directory)   # runc's copy of the lock
    left_by_a_dead_command(directory, journal.CHECKPOINT)

    def the_dump_ends():   # CRIU writes the inventory, kills the tasks, and runc exits
        with open(os.path.join(images, "inventory.img"), "wb") as f:
            f.write(b"inventory")
        with open(os.path.join(directory, CHECKPOINT_WORK, "dump.log"), "a") as f:
            f.write("(00.3) Unfreezing tasks into 2\n")
        host.container_exits(container.id, 137, directory)
        host.end(runc)
        os.close(held)
    seen = meanwhile(0.3, the_dump_ends, lambda: containers.get("svc"))
    assert seen.checkpointed_at and os.path.exists(os.path.join(images, "inventory.img"))


def test_the_lock_of_a_tool_that_ended_is_not_waited_for(containers, engine, host, running, monkeypatch):
    container, directory = running
    dump(directory, complete=False)
    os.close(journal.hold_for_tool(directory))
    left_by_a_dead_command(directory, journal.CHECKPOINT)
    monkeypatch.setattr(recovery, "TOOL_WAIT", 30.0)
    assert containers.get("svc").state == RUNNING   # at once, or this test times out


def test_the_tool_lock_lives_with_the_child_that_holds_it_not_with_ferry(tmp_path):
    """The window that a pid in the journal left open: ferry killed right after
    the fork. The child holds the lock from the fork on, whoever else dies."""
    import subprocess
    directory = str(tmp_path)
    fd = journal.hold_for_tool(directory)
    child = subprocess.Popen(["sleep", "30"], pass_fds=(fd,))
    try:
        os.close(fd)   # as a killed ferry's fds close
        assert not journal.wait_for_tool(directory, timeout=0.2)
    finally:
        child.kill()
        child.wait()
    assert journal.wait_for_tool(directory, timeout=5)


# ---- an interrupted start or restore ---------------------------------------------------

def test_a_restore_whose_container_runs_under_its_monitor_is_recorded_as_running(containers, engine, host,
                                                                                  running):
    container, directory = running
    images = dump(directory, complete=True)
    os.unlink(os.path.join(directory, CHECKPOINTING))
    with engine.db.write() as conn:   # the dead restore launched it but recorded nothing
        conn.execute("UPDATE containers SET state = ?, pid = NULL, checkpointed_at = ? WHERE id = ?",
                     (EXITED, "2024-01-01T00:00:00Z", container.id))
    veth = f"fv{container.id[:12]}"
    host.links[veth]["up"] = False   # CRIU's hook never connected it
    left_by_a_dead_command(directory, journal.RESTORE, phase="launched")
    seen = containers.get("svc")
    assert (seen.state, seen.pid, seen.checkpointed_at) == (RUNNING, container.pid, None)
    assert seen.restored_at == seen.started_at
    assert host.links[veth]["up"] is True and not os.path.exists(images)


def test_a_restore_from_an_archive_that_never_ran_is_undone_entirely(containers, engine, host, tmp_path):
    scratch = tmp_path / "root" / "tmp" / "import-x"
    scratch.mkdir(parents=True)
    template = containers.create(RunOptions(image="busy:1", name="template"))
    containers.remove("template")
    container = containers.insert("moved", engine.image, template.config._replace(ip="", mac=""), Undo(),
                                  journal_entry=dict(op=journal.RESTORE, from_archive=True, scratch=str(scratch)))
    journal.update(containers.dir(container.id), journal.read(containers.dir(container.id)), pid=DEAD_COMMAND)
    with pytest.raises(NotFound):
        containers.get("moved")
    assert not scratch.exists() and not os.path.exists(containers.dir(container.id))
    assert engine.networks.reservation(container.id) is None
    assert containers.list(all_states=True) == [] and os.listdir(engine.layout.containers) == []


def test_a_restore_from_an_archive_that_runs_is_kept(containers, engine, host, running, tmp_path):
    container, directory = running
    scratch = tmp_path / "root" / "tmp" / f"import-{container.id}"
    scratch.mkdir(parents=True)
    with engine.db.write() as conn:
        conn.execute("UPDATE containers SET state = 'created', pid = NULL WHERE id = ?", (container.id,))
    left_by_a_dead_command(directory, journal.RESTORE, from_archive=True, scratch=str(scratch), phase="launched")
    seen = containers.get("svc")
    assert (seen.state, seen.pid) == (RUNNING, container.pid) and seen.restored_at
    assert not scratch.exists()


def test_a_start_whose_process_runs_without_its_monitor_is_stopped(containers, engine, host, running):
    container, directory = running
    host.end(host.runc[container.id]["monitor"])   # the monitor died: no one would log or record its exit
    with engine.db.write() as conn:
        conn.execute("UPDATE containers SET state = 'created', pid = NULL WHERE id = ?", (container.id,))
    left_by_a_dead_command(directory, journal.START)
    seen = containers.get("svc")
    assert seen.state == EXITED and host.cgroups_killed == [container.id]
    assert not host.alive(container.pid) and host.leftovers(container.id) == []


def test_a_start_still_coming_up_is_waited_for(containers, engine, host, running, monkeypatch):
    container, directory = running
    pid_file = os.path.join(directory, "container.pid")
    os.unlink(pid_file)   # runc restore of many GiB: not up yet
    with engine.db.write() as conn:
        conn.execute("UPDATE containers SET state = 'created', pid = NULL WHERE id = ?", (container.id,))
    left_by_a_dead_command(directory, journal.START)
    seen = meanwhile(0.3, lambda: host.write(pid_file, str(container.pid)), lambda: containers.get("svc"))
    assert (seen.state, seen.pid) == (RUNNING, container.pid)


def test_a_start_given_up_on_is_undone_once_its_monitor_gave_no_verdict(containers, engine, host, running,
                                                                         monkeypatch):
    container, directory = running
    os.unlink(os.path.join(directory, "container.pid"))
    host.runc[container.id]["status"] = "created"
    with engine.db.write() as conn:
        conn.execute("UPDATE containers SET state = 'created', pid = NULL WHERE id = ?", (container.id,))
    left_by_a_dead_command(directory, journal.START)
    monkeypatch.setattr(recovery, "REPORT_TIMEOUT", 0.2)
    seen = containers.get("svc")
    assert seen.state == EXITED and container.id not in host.runc and host.leftovers(container.id) == []


def test_a_damaged_journal_is_read_as_an_interrupted_start(containers, engine, host, running):
    container, directory = running
    with open(os.path.join(directory, JOURNAL), "w") as f:
        f.write('{"op": "checkpoint", "pid": ')
    assert containers.get("svc").state == RUNNING   # its process runs under its monitor: recorded as running
    assert not journal.exists(directory)


# ---- who recovers, and when -----------------------------------------------------------

def test_a_journal_whose_command_still_holds_the_container_is_left_alone(containers, engine, host, running):
    container, directory = running
    images = dump(directory, complete=False)
    left_by_a_dead_command(directory, journal.CHECKPOINT)
    holder = hold_lock(engine.layout.lock(f"container-{container.id}"), "ferry container checkpoint")
    try:
        assert containers.get("svc").state == RUNNING
        assert journal.exists(directory) and os.path.exists(images)
    finally:
        release(holder)
    containers.get("svc")
    assert not journal.exists(directory) and not os.path.exists(images)


def test_this_command_s_own_journal_is_not_recovered(containers, engine, host, running):
    container, directory = running
    images = dump(directory, complete=False)
    journal.begin(directory, journal.CHECKPOINT)   # ours: the checkpoint at work in this process
    assert containers.get("svc").state == RUNNING
    assert journal.exists(directory) and os.path.exists(images)


def test_ps_finishes_what_a_dead_command_left(containers, engine, host, running):
    container, directory = running
    dump(directory, complete=True)
    left_by_a_dead_command(directory, journal.CHECKPOINT)
    host.container_exits(container.id, 137, directory)
    listing = Listing(engine.layout, engine.db, engine)
    [shown] = listing.containers(all_states=True)
    assert (shown.state, shown.exit_code) == (EXITED, 0) and shown.checkpointed_at
    assert listing.containers() == []


def test_criu_s_lock_is_left_alone_when_nft_cannot_list_the_netns(containers, host):
    recovery.drop_network_lock(containers, "c" * 64)   # no netns: nothing to ask
    assert host.calls == []
    host.netns.add("ferry-cccccccccccc")
    original = host._in_netns
    host._in_netns = lambda netns, args: host._ok(["ip"], "", 1, "nft: not found")
    recovery.drop_network_lock(containers, "c" * 64)
    host._in_netns = lambda netns, args: host._ok(["ip"], "not json")
    recovery.drop_network_lock(containers, "c" * 64)
    host._in_netns = original
    assert not host.ran("delete")
