"""A full disk, without one: SQLite's failures translated where the database is
opened, the store's fallback when SQLite's shared memory cannot be made, the
CLI's one line naming the full filesystem, the monitor's log writer on a
device that is always full (/dev/full), and telling a full filesystem apart.
tests/integration/test_full_disk.py fills real ones."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections import namedtuple

import pytest

from ferry.cli import main as cli
from ferry.cli import system as system_cli
from ferry.cli import render
from ferry.engine.listing import EXITED, RUNNING, UNKNOWN_EXIT, Listing, observed_exit
from ferry.runtime import monitor
from ferry.runtime.monitor import LogWriter
from ferry.store import db as db_module
from ferry.store.db import Database
from ferry.store.layout import SPACE_RESERVE, Layout
from ferry.util import fs, space
from ferry.util.errors import Conflict, DiskFull, FerryError, NotFound, ToolError

from tests.unit.test_container_listing import FakeEngine, add, dead_pid

DDL = "CREATE TABLE IF NOT EXISTS things (name TEXT PRIMARY KEY, data BLOB)"


def sqlite_error(code: int, name: str, text: str, cls=sqlite3.OperationalError) -> sqlite3.Error:
    error = cls(text)
    error.sqlite_errorcode, error.sqlite_errorname = code, name
    return error


SHMSIZE = db_module.SQLITE_IOERR | (19 << 8)


@pytest.fixture
def database(tmp_path):
    db = Database(str(tmp_path / "root" / "ferry.db"))
    db.ensure(DDL)
    with db.write() as conn:
        conn.execute("INSERT INTO things VALUES ('kept', x'00')")
    yield db
    db.close()


@pytest.fixture
def full(monkeypatch):
    """Every filesystem counts as full."""
    monkeypatch.setattr(space, "is_full", lambda path: True)


# ---- translation ---------------------------------------------------------------

def test_a_full_database_is_disk_full_naming_it_and_its_filesystem(database):
    error = database.translate(sqlite_error(13, "SQLITE_FULL", "database or disk is full"))
    assert isinstance(error, DiskFull)
    root = os.path.dirname(database.path)
    assert str(error) == f"cannot update ferry's state in {database.path}: no space left on device"
    assert error.hint.startswith(f"free space on the filesystem of {root}")
    assert cli.exit_code_for(error) == cli.EXIT_ERROR


def test_an_io_error_is_disk_full_only_when_the_filesystem_is(database, monkeypatch):
    failure = sqlite_error(SHMSIZE, "SQLITE_IOERR_SHMSIZE", "disk I/O error")
    monkeypatch.setattr(space, "is_full", lambda path: False)
    error = database.translate(failure, "read")
    assert type(error) is FerryError
    assert str(error) == f"cannot read ferry's state in {database.path}: I/O error (SQLITE_IOERR_SHMSIZE)"
    assert "dmesg" in error.hint
    monkeypatch.setattr(space, "is_full", lambda path: True)
    assert isinstance(database.translate(failure, "read"), DiskFull)


@pytest.mark.parametrize("code, name, cls, expected, needle", [
    (5, "SQLITE_BUSY", sqlite3.OperationalError, Conflict, "stayed locked by another ferry command"),
    (11, "SQLITE_CORRUPT", sqlite3.DatabaseError, FerryError, "cannot be used"),
    (26, "SQLITE_NOTADB", sqlite3.DatabaseError, FerryError, "cannot be used"),
    (8, "SQLITE_READONLY", sqlite3.OperationalError, FerryError, "cannot update ferry's state"),
    (14, "SQLITE_CANTOPEN", sqlite3.OperationalError, FerryError, "cannot update ferry's state"),
])
def test_each_failure_of_the_database_is_one_ferry_error(database, monkeypatch, code, name, cls, expected, needle):
    monkeypatch.setattr(space, "is_full", lambda path: False)
    error = database.translate(sqlite_error(code, name, "x", cls))
    assert type(error) is expected and needle in str(error) and database.path in str(error) and error.hint


def test_a_bug_stays_sqlites_own_error(database):
    """A bad statement is not the disk's fault: it is not dressed up as one."""
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        database.read().execute("SELECT * FROM missing_table")
    with pytest.raises(sqlite3.IntegrityError):
        with database.write() as conn:
            conn.execute("INSERT INTO things VALUES ('kept', x'00')")
    assert database.read().execute("SELECT COUNT(*) FROM things").fetchone()[0] == 1


def test_a_new_database_that_cannot_be_created_is_disk_full(tmp_path, monkeypatch):
    real_open = os.open

    def no_room(path, flags, *args, **kwargs):
        if str(path).endswith("ferry.db") and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", no_room)
    db = Database(str(tmp_path / "ferry.db"))
    with pytest.raises(DiskFull, match=r"cannot create ferry's state in .*ferry\.db: no space left on device"):
        db.read()


# ---- the store on a full disk -----------------------------------------------------

def no_shared_memory(monkeypatch):
    """SQLite cannot make its shared memory: the open fails as on a full disk."""
    real_open = Database._open

    def open_(self, *, exclusive=False):
        if not exclusive:
            raise sqlite_error(SHMSIZE, "SQLITE_IOERR_SHMSIZE", "disk I/O error")
        return real_open(self, exclusive=True)
    monkeypatch.setattr(Database, "_open", open_)


def no_room_to_grow(monkeypatch):
    """Exclusive connections may not grow the database: writes fail with SQLITE_FULL."""
    real_open = Database._open

    def open_(self, *, exclusive=False):
        conn = real_open(self, exclusive=exclusive)
        pages = sqlite3.Connection.execute(conn, "PRAGMA page_count").fetchone()[0]
        sqlite3.Connection.execute(conn, f"PRAGMA max_page_count={pages}")
        return conn
    monkeypatch.setattr(Database, "_open", open_)


def test_reads_work_and_writes_fail_in_one_line_when_the_disk_is_full(database, monkeypatch, full):
    database.close()
    no_shared_memory(monkeypatch)
    no_room_to_grow(monkeypatch)
    again = Database(database.path)
    again.ensure(DDL)   # applied already: a read
    assert [r["name"] for r in again.read().execute("SELECT name FROM things")] == ["kept"]
    with pytest.raises(DiskFull, match="cannot update ferry's state"):
        with again.write() as conn:
            conn.execute("INSERT INTO things VALUES ('big', zeroblob(100000))")
    with pytest.raises(DiskFull, match="cannot update ferry's state"):  # a write through read() too
        again.read().execute("INSERT INTO things VALUES ('sneaky', x'00')")
    assert [r["name"] for r in again.read().execute("SELECT name FROM things")] == ["kept"]
    again.close()


def test_a_write_that_finds_room_on_a_full_disk_lands_and_is_read_back(database, monkeypatch, full):
    """`rm` frees space before its record changes: its write must then work."""
    database.close()
    no_shared_memory(monkeypatch)
    again = Database(database.path)
    assert again.read().execute("SELECT COUNT(*) FROM things").fetchone()[0] == 1
    with again.write() as conn:
        conn.execute("DELETE FROM things WHERE name = 'kept'")
        # a read within the transaction sees it, and does not wait for its own lock
        assert again.read().execute("SELECT COUNT(*) FROM things").fetchone()[0] == 0
    assert again.read().execute("SELECT COUNT(*) FROM things").fetchone()[0] == 0
    again.close()
    assert sqlite3.connect(database.path).execute("SELECT COUNT(*) FROM things").fetchone()[0] == 0


def test_a_full_disk_reader_sees_changes_and_recovers_once_there_is_room(database, monkeypatch, full):
    database.close()
    no_shared_memory(monkeypatch)
    monkeypatch.setattr(db_module, "SNAPSHOT_SECONDS", 0.0)
    reader = Database(database.path)
    assert reader.read().execute("SELECT COUNT(*) FROM things").fetchone()[0] == 1
    other = sqlite3.connect(database.path, isolation_level=None)
    other.execute("INSERT INTO things VALUES ('new', x'00')")   # another ferry, which had room
    other.close()
    assert reader.read().execute("SELECT COUNT(*) FROM things").fetchone()[0] == 2
    monkeypatch.undo()   # room again: the shared connection comes back
    conn = reader.read()
    assert conn is reader.read() and conn.execute("SELECT COUNT(*) FROM things").fetchone()[0] == 2
    reader.close()


def test_a_full_disk_without_shared_memory_goes_straight_to_the_copy(database, monkeypatch, full):
    """SQLite's mmap of a shared memory file with holes dies of SIGBUS on a full
    1 KiB-block ext4: with no whole one, it is not tried at all."""
    database.close()
    with contextlib_suppress_missing():
        os.unlink(database.path + "-shm")
    opened = []
    real_open = Database._open
    monkeypatch.setattr(Database, "_open", lambda self, *, exclusive=False: (
        opened.append(exclusive), real_open(self, exclusive=exclusive))[1])
    reader = Database(database.path)
    assert reader.read().execute("SELECT COUNT(*) FROM things").fetchone()[0] == 1
    assert opened == [True]
    reader.close()


def contextlib_suppress_missing():
    import contextlib
    return contextlib.suppress(FileNotFoundError)


def test_a_whole_shared_memory_is_used_on_a_full_disk(database, monkeypatch, full):
    """Another ferry holds the database open (its shared memory exists whole):
    the shared connection works, and the exclusive copy would wait for it."""
    holder = sqlite3.connect(database.path)
    holder.execute("SELECT COUNT(*) FROM things").fetchone()
    try:
        reader = Database(database.path)
        assert reader._shared_memory_whole()
        assert reader.read().execute("SELECT COUNT(*) FROM things").fetchone()[0] == 1
        assert reader.read() is reader._local.conn
        reader.close()
    finally:
        holder.close()


# ---- the listing ---------------------------------------------------------------

class UnrecordableContainers:
    """A catch-up that cannot write: the disk is full."""

    def __init__(self):
        self.caught_up = []

    def get(self, container_id):
        self.caught_up.append(container_id)
        raise space.no_space("cannot update ferry's state in /r/ferry.db", "/")


class LockFileContainers(UnrecordableContainers):
    def get(self, container_id):
        self.caught_up.append(container_id)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("containers", [UnrecordableContainers, LockFileContainers])
def test_ps_shows_an_exit_it_cannot_record_as_the_monitor_saw_it(tmp_path, containers):
    layout = Layout.at(str(tmp_path / "root"))
    db = Database(layout.database)
    fake = containers()
    listing = Listing(layout, db, FakeEngine(fake))
    alive = add(layout, db, "alive", RUNNING, os.getpid(), "2026-01-01T00:00:01.000000000Z")
    seen = add(layout, db, "seen", RUNNING, dead_pid(), "2026-01-01T00:00:02.000000000Z")
    lost = add(layout, db, "lost", RUNNING, dead_pid(), "2026-01-01T00:00:03.000000000Z")
    with open(os.path.join(layout.container_dir(seen), "exit.json"), "w") as f:
        json.dump({"exit_code": 7, "finished_at": "2026-01-01T00:00:09.000000000Z"}, f)
    assert [c.id for c in listing.containers()] == [alive]
    shown = {c.name: (c.state, c.exit_code, c.finished_at, c.pid) for c in listing.containers(all_states=True)}
    assert shown == {"alive": (RUNNING, None, None, os.getpid()),
                     "seen": (EXITED, 7, "2026-01-01T00:00:09.000000000Z", None),
                     "lost": (EXITED, UNKNOWN_EXIT, None, None)}
    assert set(fake.caught_up) == {seen, lost}
    # nothing was written: the records still say running, for a catch-up once there is room
    assert {r["state"] for r in db.read().execute("SELECT state FROM containers")} == {RUNNING}
    db.close()


def test_observed_exit_of_a_damaged_exit_file(tmp_path):
    (tmp_path / "exit.json").write_text("[1]")
    assert observed_exit(str(tmp_path)) == (UNKNOWN_EXIT, None)
    (tmp_path / "exit.json").write_text('{"exit_code": "x", "finished_at": 3}')
    assert observed_exit(str(tmp_path)) == (UNKNOWN_EXIT, None)
    assert observed_exit(str(tmp_path / "missing")) == (UNKNOWN_EXIT, None)


# ---- the CLI -----------------------------------------------------------------

def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def failing_version(monkeypatch, error):
    def boom(_args):
        raise error
    monkeypatch.setattr(system_cli, "cmd_version", boom)


def test_an_untranslated_enospc_names_its_file_and_filesystem(capsys, monkeypatch, tmp_path):
    root = tmp_path / "root"
    failing_version(monkeypatch, OSError(errno.ENOSPC, "No space left on device", str(root / "locks" / "x.lock")))
    code, out, err = run(capsys, "--root", str(root), "version")
    assert (code, out) == (cli.EXIT_ERROR, "")
    assert err == (f"ferry: error: cannot write {root}/locks/x.lock: no space left on device "
                   f"(hint: {space.space_hint(str(root))})\n")
    assert "\n" not in err.rstrip("\n")


def test_an_enospc_without_a_file_names_the_roots_filesystem(capsys, monkeypatch, tmp_path):
    failing_version(monkeypatch, OSError(errno.EDQUOT, "Disk quota exceeded"))
    code, _, err = run(capsys, f"--root={tmp_path}", "version")
    assert code == cli.EXIT_ERROR
    hint = space.space_hint(str(tmp_path), errno.EDQUOT)
    assert err == f"ferry: error: a write failed: disk quota exceeded (hint: {hint})\n"
    assert "raise the quota" in err


def test_a_message_quoting_enospc_gets_the_full_filesystem_as_hint(capsys, monkeypatch, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    monkeypatch.setattr(space, "is_full", lambda path: os.path.abspath(path).startswith(str(target)))
    failing_version(monkeypatch, FerryError(f"cannot write {target}/c.tar.zst: No space left on device"))
    code, _, err = run(capsys, "--root", str(tmp_path / "root"), "version")
    assert code == cli.EXIT_ERROR
    assert err == (f"ferry: error: cannot write {target}/c.tar.zst: No space left on device "
                   f"(hint: {space.space_hint(str(target))})\n")


def test_an_opaque_failure_while_the_root_is_full_says_so(capsys, monkeypatch, tmp_path):
    root = str(tmp_path / "root")
    monkeypatch.setattr(space, "is_full", lambda path: True)
    failing_version(monkeypatch, ToolError("starting the container", 1,
                                           "runc create failed: unable to store init state: %!w(<nil>)",
                                           hint="see the log"))
    code, _, err = run(capsys, "--root", root, "version")
    assert code == cli.EXIT_ERROR
    assert err.startswith("ferry: error: starting the container failed (exit 1): runc create failed")
    assert err.endswith(f"(hint: the filesystem of {root} (mounted at {space.mount_point(root)}) is full: "
                        "free space on it; see the log)\n")


def test_an_unexpected_failure_while_the_root_is_full_says_so(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(space, "is_full", lambda path: True)
    failing_version(monkeypatch, KeyError("x"))
    code, _, err = run(capsys, "--root", str(tmp_path), "version")
    assert code == cli.EXIT_ERROR
    assert "is full: free space on it; rerun with --debug for the traceback)" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("error", [NotFound("no such container 'x'"), Conflict("container 'c' is running")])
def test_a_full_disk_does_not_explain_what_the_user_asked_wrong(capsys, monkeypatch, tmp_path, error):
    monkeypatch.setattr(space, "is_full", lambda path: True)
    failing_version(monkeypatch, error)
    code, _, err = run(capsys, "--root", str(tmp_path), "version")
    assert (code, err) == (cli.EXIT_ERROR, f"ferry: error: {error}\n")


def test_an_error_quoting_many_lines_is_printed_on_one(capsys):
    render.error("runc failed: first\nsecond\r\n\nthird", hint="a\nb")
    assert capsys.readouterr().err == "ferry: error: runc failed: first | second | third (hint: a | b)\n"


# ---- util ---------------------------------------------------------------------

StatVfs = namedtuple("StatVfs", "f_bsize f_frsize f_blocks f_bfree f_bavail f_files f_ffree")


@pytest.mark.parametrize("euid, vfs, kind, full", [
    (0, StatVfs(4096, 4096, 16384, 0, 0, 100, 50), "tmpfs", True),
    (0, StatVfs(4096, 4096, 16384, 8192, 0, 100, 50), "tmpfs", False),    # root may use what others may not
    (1000, StatVfs(4096, 4096, 16384, 8192, 0, 100, 50), "tmpfs", True),
    (0, StatVfs(4096, 4096, 16384, 200, 100, 100, 0), "tmpfs", True),     # no inodes left
    (0, StatVfs(4096, 4096, 16384, 200, 100, 0, 0), "btrfs", True),       # no inode counts: by blocks
    (0, StatVfs(4096, 4096, 16384, 400, 0, 0, 0), "btrfs", False),
    # a full 64 MiB ext4 of 1 KiB blocks shows its 2 % reserve (1.3 MiB) as free
    (0, StatVfs(1024, 1024, 65536, 1310, 0, 16384, 16000), "ext4", True),
    (0, StatVfs(1024, 1024, 65536, 1310, 0, 16384, 16000), "tmpfs", False),
    # on a large ext4 the reserve is 4096 clusters at most
    (0, StatVfs(4096, 4096, 1 << 28, 4096 + 100, 0, 1000, 900), "ext4", True),
    (0, StatVfs(4096, 4096, 1 << 28, 4096 + 300, 0, 1000, 900), "ext4", False),
])
def test_is_full(monkeypatch, euid, vfs, kind, full):
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    monkeypatch.setattr(os, "statvfs", lambda path: vfs)
    monkeypatch.setattr(space, "fs_type", lambda path: kind)
    assert space.is_full("/anywhere") is full


def test_fs_type_and_mount_point_of_a_path_that_does_not_exist_yet(tmp_path):
    assert space.mount_point(str(tmp_path / "not" / "yet")) == space.mount_point(str(tmp_path))
    assert space.fs_type(str(tmp_path / "not" / "yet")) == space.fs_type(str(tmp_path)) != ""
    assert space.fs_type("/proc/self") == "proc"


def test_space_hint_names_the_mount_point_when_it_is_elsewhere(tmp_path):
    mount = space.mount_point(str(tmp_path))
    assert space.space_hint(str(tmp_path)) == f"free space on the filesystem of {tmp_path} (mounted at {mount})"
    assert space.space_hint(mount) == f"free space on the filesystem of {mount}"


def test_atomic_write_names_the_target_and_leaves_no_temp_file(tmp_path, monkeypatch):
    def no_room(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", no_room)
    target = tmp_path / "config.json"
    with pytest.raises(OSError) as caught:
        fs.atomic_write(str(target), "{}")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert space.is_no_space(caught.value)
    assert os.listdir(tmp_path) == []


# ---- the monitor's log ------------------------------------------------------------

def entries(path) -> list[tuple[str, str, str]]:
    with open(path, "rb") as f:
        return [tuple(line.decode().split(" ", 3)[1:]) for line in f.read().splitlines()]


def times(path) -> list[str]:
    with open(path, "rb") as f:
        return [line.split(b" ", 1)[0].decode() for line in f.read().splitlines()]


def test_output_waits_in_memory_while_the_log_is_full_and_nothing_is_lost(tmp_path):
    writer = LogWriter("/dev/full")   # every write fails with ENOSPC
    writer.write("stdout", b"one\ntwo\nhalf")
    writer.write("stderr", b"err\n")
    assert writer.pending and writer.dropped == 0 and writer.reason == "No space left on device"
    assert writer.flush() is False   # still full: the partial line waits as a P entry
    writer.fd = os.open(tmp_path / "ctr.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)   # room again
    writer.write("stdout", b" more\n")
    assert entries(tmp_path / "ctr.log") == [("stdout", "F", "one"), ("stdout", "F", "two"),
                                             ("stderr", "F", "err"), ("stdout", "P", "half"),
                                             ("stdout", "F", " more")]
    assert writer.pending == bytearray() and writer.reason == ""
    assert times(tmp_path / "ctr.log") == sorted(times(tmp_path / "ctr.log"))


def test_output_beyond_the_limit_is_counted_and_the_gap_is_marked(tmp_path, monkeypatch):
    monkeypatch.setattr(monitor, "PENDING_LIMIT", 100)
    writer = LogWriter("/dev/full")
    writer.write("stdout", b"kept\n")
    writer.write("stdout", b"x" * 200 + b"\n")   # does not fit: dropped
    writer.write("stdout", b"y\n")              # after a drop, nothing more waits: the gap is one
    assert writer.dropped == 203
    writer.fd = os.open(tmp_path / "ctr.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    assert writer.drain() is True   # what the monitor's poll does for a quiet container
    writer.write("stdout", b"after\n")
    assert entries(tmp_path / "ctr.log") == [
        ("stdout", "F", "kept"),
        ("stderr", "F", "ferry: 203 bytes of output were not logged: No space left on device"),
        ("stdout", "F", "after")]
    assert times(tmp_path / "ctr.log") == sorted(times(tmp_path / "ctr.log"))


def test_a_short_write_keeps_the_rest_of_the_entry(tmp_path, monkeypatch):
    """The disk filled in the middle of an entry: its tail waits, and no torn
    entry reaches the log."""
    path = tmp_path / "ctr.log"
    writer = LogWriter(str(path))
    real_write = os.write
    budget = [10]

    def write(fd, data):
        if fd != writer.fd:
            return real_write(fd, data)
        if budget[0] == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, bytes(data[:budget[0]]))
        budget[0] -= n
        return n
    monkeypatch.setattr(os, "write", write)
    writer.write("stdout", b"a long enough line\n")
    assert path.read_bytes() and len(path.read_bytes()) == 10
    budget[0] = 10 ** 6
    writer.write("stdout", b"next\n")
    assert entries(path) == [("stdout", "F", "a long enough line"), ("stdout", "F", "next")]


def test_the_monitor_describes_a_write_failure_by_its_file():
    assert monitor.describe(OSError(errno.ENOSPC, "No space left on device", "/r/c/monitor.pid")) == \
        "cannot write /r/c/monitor.pid: No space left on device"
    assert monitor.describe(OSError(errno.ENOENT, "No such file or directory", "/x")) == \
        "/x: No such file or directory"
    assert monitor.describe(RuntimeError("runc exited 1")) == "runc exited 1"


def test_the_reserve_is_kept_and_a_full_disk_keeps_none(tmp_path, monkeypatch):
    path = tmp_path / SPACE_RESERVE
    monitor.reserve(str(path))
    assert path.stat().st_size == monitor.RESERVE_BYTES and path.stat().st_blocks * 512 >= monitor.RESERVE_BYTES

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "posix_fallocate", no_room)
    monitor.reserve(str(path))
    assert not path.exists()


def test_ps_on_a_full_disk_after_an_upgrade_that_adds_a_column(tmp_path, monkeypatch, full):
    """A newer ferry adds a column on first use; a full disk refuses that write,
    and `ps` lists from the columns the table has."""
    from ferry.engine import listing as listing_module
    layout = Layout.at(str(tmp_path / "root"))
    db = Database(layout.database)
    Listing(layout, db, FakeEngine())
    alive = add(layout, db, "alive", RUNNING, os.getpid(), "2026-01-01T00:00:01.000000000Z")
    db.close()
    no_shared_memory(monkeypatch)
    no_room_to_grow(monkeypatch)
    monkeypatch.setattr(listing_module, "ADDED_COLUMNS", {**listing_module.ADDED_COLUMNS, "newer": "TEXT"})
    upgraded = Database(layout.database)
    assert [c.id for c in Listing(layout, upgraded, FakeEngine()).containers()] == [alive]
    upgraded.close()


def test_ps_of_a_new_root_on_a_full_disk_says_so(tmp_path, monkeypatch, full):
    layout = Layout.at(str(tmp_path / "root"))
    sqlite3.connect(Database(layout.database).path).close()   # an empty database file
    no_room_to_grow(monkeypatch)
    db = Database(layout.database)
    with pytest.raises(DiskFull, match="cannot update ferry's state"):
        Listing(layout, db, FakeEngine())
    db.close()


def test_reads_work_where_not_even_an_empty_wal_file_can_be_made(database, monkeypatch, full):
    """No inodes left: SQLite cannot create the WAL file even for an exclusive
    read; with none there, the database file holds every commit."""
    database.close()
    assert not os.path.exists(database.path + "-wal")

    def open_(self, *, exclusive=False):
        raise sqlite_error(14, "SQLITE_CANTOPEN", "unable to open database file")
    monkeypatch.setattr(Database, "_open", open_)
    reader = Database(database.path)
    assert [r["name"] for r in reader.read().execute("SELECT name FROM things")] == ["kept"]
    with pytest.raises(DiskFull, match="cannot update ferry's state"):
        with reader.write():
            pass
    reader.close()


def test_without_inodes_or_wal_file_a_read_fails_in_one_line_if_a_wal_exists(database, monkeypatch, full):
    """A WAL file may hold commits the database file lacks: not read around it."""
    database.close()
    open(database.path + "-wal", "wb").close()

    def open_(self, *, exclusive=False):
        raise sqlite_error(14, "SQLITE_CANTOPEN", "unable to open database file")
    monkeypatch.setattr(Database, "_open", open_)
    with pytest.raises(DiskFull, match="cannot read ferry's state"):
        Database(database.path).read()


def test_the_hint_says_when_inodes_ran_out(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "statvfs", lambda path: StatVfs(4096, 4096, 16384, 8000, 8000, 100, 0))
    assert space.space_hint(str(tmp_path)).startswith("delete files on the filesystem of ")
    assert space.space_hint(str(tmp_path)).endswith(", which has no inodes left")
