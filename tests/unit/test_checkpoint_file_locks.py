"""--file-locks without root: which dumps hold locks (their restore takes them
again), and CRIU's refusal to dump a held lock said as what to do."""

from __future__ import annotations

import os

from ferry.engine.checkpoints import _locks_refused, file_locks_in
from ferry.util.errors import Conflict, ToolError

HEADER = b"\x54\x56\x60\x54" + b"\x4c\x4f\x43\x4b"   # two 4-byte magics, as every CRIU image starts


def test_a_dump_holds_locks_when_its_filelocks_image_has_an_entry(tmp_path):
    assert not file_locks_in(str(tmp_path))
    (tmp_path / "filelocks.img").write_bytes(HEADER)
    assert not file_locks_in(str(tmp_path))   # a header alone lists no lock
    (tmp_path / "filelocks.img").write_bytes(HEADER + b"\x10\x00\x00\x00" + b"\x08" * 16)
    assert file_locks_in(str(tmp_path))


def test_a_filelocks_name_that_is_no_regular_file_holds_no_locks(tmp_path):
    """An archive's member names are hostile: a directory or a symlink of that
    name (to a large file) makes no restore take locks."""
    (tmp_path / "big").write_bytes(b"x" * 100)
    os.symlink(tmp_path / "big", tmp_path / "filelocks.img")
    assert not file_locks_in(str(tmp_path))
    os.unlink(tmp_path / "filelocks.img")
    os.mkdir(tmp_path / "filelocks.img")
    assert not file_locks_in(str(tmp_path))


def test_criu_refusing_a_held_lock_becomes_one_line_naming_the_flag():
    said = ToolError("checkpoint of 0123456789ab", 1, "Some file locks are hold by dumping tasks! You can try "
                     "--file-locks to dump them. | Dumping FAILED.", hint="CRIU's log is kept at /r/dump.log",
                     log_path="/r/dump.log")
    error = _locks_refused(said, "web")
    assert isinstance(error, Conflict)
    assert error.message == "cannot checkpoint container 'web': a process in it holds a file lock"
    assert "--file-locks" in error.hint and "/r/dump.log" in error.hint


def test_other_criu_failures_pass_unchanged():
    said = ToolError("checkpoint of 0123456789ab", 1, "inet: In-flight connection (l)")
    assert _locks_refused(said, "web") is said
