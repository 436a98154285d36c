"""The state root: which one a command uses, what is refused, and who may read it."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from ferry.cli import main as cli
from ferry.store.db import Database
from ferry.store.layout import DEFAULT_ROOT, Layout
from ferry.util.errors import FerryError, UsageError


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_root_comes_from_the_flag_then_the_environment_then_the_default(monkeypatch, tmp_path):
    monkeypatch.delenv("FERRY_ROOT", raising=False)
    assert Layout.at(None).root == DEFAULT_ROOT
    monkeypatch.setenv("FERRY_ROOT", str(tmp_path / "env"))
    assert Layout.at(None).root == str(tmp_path / "env")
    assert Layout.at(str(tmp_path / "flag")).root == str(tmp_path / "flag")
    assert Layout.at("relative").root == os.path.join(os.getcwd(), "relative")


def test_an_empty_root_is_refused_rather_than_meaning_the_default(monkeypatch):
    with pytest.raises(UsageError, match="--root needs a directory"):
        Layout.at("")
    monkeypatch.setenv("FERRY_ROOT", "")
    with pytest.raises(UsageError, match="FERRY_ROOT is set but empty"):
        Layout.at(None)


@pytest.mark.parametrize("root, needle", [
    ("/proc/self", "is inside /proc, a kernel interface"),
    ("/proc/no-such-dir/ferry", "is inside /proc, a kernel interface"),
    ("/sys/kernel", "is inside /sys, a kernel interface"),
])
def test_kernel_trees_are_refused(root, needle):
    with pytest.raises(FerryError, match=needle):
        Layout.at(root).prepare()


def test_a_symlink_into_proc_is_refused(tmp_path):
    (tmp_path / "link").symlink_to("/proc/self")
    with pytest.raises(FerryError, match="inside /proc"):
        Layout.at(str(tmp_path / "link")).prepare()


def test_a_file_is_no_root(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(FerryError, match="exists and is not a directory"):
        Layout.at(str(tmp_path / "file")).prepare()
    with pytest.raises(FerryError, match="a part of its path is a file"):
        Layout.at(str(tmp_path / "file" / "below")).prepare()


def test_a_root_that_cannot_be_created_says_why(monkeypatch, tmp_path):
    def refuse(*_args, **_kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(os, "makedirs", refuse)
    with pytest.raises(FerryError, match="cannot be created: Read-only file system"):
        Layout.at(str(tmp_path / "new")).prepare()


def test_a_new_root_is_private_and_an_existing_one_is_made_private(tmp_path):
    Layout.at(str(tmp_path / "new")).prepare()
    assert mode(tmp_path / "new") == 0o700
    old = tmp_path / "old"
    old.mkdir()
    os.chmod(old, 0o755)
    Layout.at(str(old)).prepare()
    assert mode(old) == 0o700


def test_the_database_and_its_wal_files_are_private(tmp_path):
    db = Database(str(tmp_path / "ferry.db"))
    db.ensure("CREATE TABLE IF NOT EXISTS t (x TEXT)")
    with db.write() as conn:
        conn.execute("INSERT INTO t VALUES ('SECRET=hunter2')")
    for name in ("ferry.db", "ferry.db-wal", "ferry.db-shm"):
        assert mode(tmp_path / name) == 0o600, name
    db.close()


def test_a_database_an_older_ferry_left_readable_is_made_private(tmp_path):
    path = tmp_path / "ferry.db"
    old = Database(str(path))
    old.ensure("CREATE TABLE IF NOT EXISTS t (x TEXT)")
    old.read().execute("SELECT * FROM t").fetchall()
    for name in ("ferry.db", "ferry.db-wal", "ferry.db-shm"):
        os.chmod(tmp_path / name, 0o644)
    Database(str(path)).read().execute("SELECT * FROM t").fetchall()
    for name in ("ferry.db", "ferry.db-wal", "ferry.db-shm"):
        assert mode(tmp_path / name) == 0o600, name
    old.close()


def test_a_file_that_is_no_database_is_one_error(tmp_path):
    (tmp_path / "ferry.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(FerryError, match="cannot be used: file is not a database"):
        Database(str(tmp_path / "ferry.db")).read()
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "ferry.db").mkdir()
    with pytest.raises(FerryError, match="cannot be opened: Is a directory"):
        Database(str(tmp_path / "dir" / "ferry.db")).read()


def _a_file(tmp) -> str:
    (tmp / "file").write_text("")
    return str(tmp / "file")


@pytest.mark.parametrize("make_root, needle", [
    (lambda tmp: "", "--root needs a directory"),
    (_a_file, "exists and is not a directory"),
    (lambda tmp: "/proc/self", "inside /proc"),
    (lambda tmp: "/sys/fs", "inside /sys"),
])
def test_bad_roots_are_one_line_without_a_traceback(capsys, monkeypatch, tmp_path, make_root, needle):
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # past the root check; the root is what is wrong
    root = make_root(tmp_path)
    code = cli.main(["--root", root, "ps"])
    out, err = capsys.readouterr()
    assert code == (cli.EXIT_USAGE if root == "" else cli.EXIT_ERROR)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: error: ") and needle in lines[0], err


def test_a_directory_of_someone_else_is_neither_used_nor_made_private(tmp_path):
    """`--root /tmp` (or /, or a home) must not turn it 0700 under its users."""
    other = tmp_path / "shared-dir"
    other.mkdir()
    os.chmod(other, 0o1777)
    for name in ("a", "b", "c", "d"):
        (other / name).write_text("")
    with pytest.raises(FerryError, match=r"is not ferry's: it holds a, b, c and 1 more"):
        Layout.at(str(other)).prepare()
    assert mode(other) == 0o1777
    with pytest.raises(FerryError, match="is not ferry's"):
        Layout.at("/").prepare()


def test_a_root_with_only_ferrys_entries_or_a_database_is_ferrys(tmp_path):
    partial = tmp_path / "partial"
    (partial / "images").mkdir(parents=True)
    (partial / "lost+found").mkdir()
    Layout.at(str(partial)).prepare()
    used = tmp_path / "used"
    used.mkdir()
    (used / "ferry.db").write_text("")
    (used / "notes-of-a-newer-ferry").write_text("")
    Layout.at(str(used)).prepare()
    assert mode(used) == 0o700
