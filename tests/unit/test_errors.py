"""The error root's helpers: an OSError becomes one line that says what failed and why."""

from __future__ import annotations

import errno
import os

import pytest

from ferry.checkpoint import signing
from ferry.util.errors import BadArchive, FerryError, from_os_error


def test_an_os_error_becomes_what_failed_and_the_systems_reason():
    error = from_os_error(PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/x/key.pem"),
                          "cannot read /x/key.pem")
    assert type(error) is FerryError
    assert (error.message, error.hint) == ("cannot read /x/key.pem: Permission denied", None)


def test_the_kind_and_the_hint_are_the_callers():
    error = from_os_error(OSError(errno.EIO, os.strerror(errno.EIO)), "CRIU image core-1.img cannot be read",
                          BadArchive, hint="checkpoint it again")
    assert isinstance(error, BadArchive)
    assert str(error) == "CRIU image core-1.img cannot be read: Input/output error"
    assert error.hint == "checkpoint it again"


def test_an_os_error_without_an_errno_keeps_its_own_words():
    assert from_os_error(OSError("socket closed"), "cannot write x").message == "cannot write x: socket closed"


def test_a_site_uses_it(monkeypatch, tmp_path):
    """A key file the system refuses to read: one line naming it, not a traceback."""
    real_open = open

    def refuse(path, *args, **kwargs):
        if str(path).endswith("k.pem"):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(FerryError) as failed:
        signing.load_private_key(str(tmp_path / "k.pem"))
    assert failed.value.message == f"cannot read signing key {tmp_path / 'k.pem'}: Input/output error"
