"""--detach-keys as podman 4.3.1 parses them, and the matcher that finds them in
what the user types (ferry attach, run -it, start -a)."""

from __future__ import annotations

import pytest

from ferry.cli.attach import DEFAULT_DETACH_KEYS, DetachMatcher, parse_detach_keys
from ferry.util.errors import UsageError


@pytest.mark.parametrize("text, keys", [
    (DEFAULT_DETACH_KEYS, b"\x10\x11"),
    ("ctrl-x", b"\x18"),
    ("a", b"a"),
    ("A", b"A"),
    ("1", b"1"),
    (" ", b" "),
    ("ctrl-@", b"\x00"),
    ("ctrl-a,b", b"\x01b"),
    ("DEL", b"\x7f"),
    ("ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_", b"\x1b\x1c\x1d\x1e\x1f"),
    ("", b""),   # detaching turned off
])
def test_podman_s_detach_keys_are_taken(text, keys):
    assert parse_detach_keys(text) == keys


# Each of these podman refuses with "invalid detach keys: Unknown character: '<key>'".
@pytest.mark.parametrize("text, key", [
    ("ab", "ab"), ("CTRL-A", "CTRL-A"), ("Ctrl-a", "Ctrl-a"), ("ctrl-A", "ctrl-A"), ("ctrl-1", "ctrl-1"),
    ("ctrl-", "ctrl-"), (",", ""), ("ctrl-p,,ctrl-q", ""), ("ctrl-p, ctrl-q", " ctrl-q"), ("é", "é"),
])
def test_podman_s_refusals_are_refused(text, key):
    with pytest.raises(UsageError) as error:
        parse_detach_keys(text)
    assert error.value.message == f"invalid detach keys: Unknown character: {key!r}"


def test_the_sequence_in_one_read_detaches_and_what_precedes_it_goes_on():
    assert DetachMatcher(b"\x10\x11").feed(b"ls\r\x10\x11after") == (b"ls\r", True)


def test_the_sequence_split_across_reads_detaches():
    matcher = DetachMatcher(b"\x10\x11")
    assert matcher.feed(b"x\x10") == (b"x", False)   # held back: it may begin the sequence
    assert matcher.feed(b"\x11") == (b"", True)


def test_a_broken_sequence_gives_back_what_was_held():
    matcher = DetachMatcher(b"\x10\x11")
    assert matcher.feed(b"\x10") == (b"", False)
    assert matcher.feed(b"y") == (b"\x10y", False)
    assert matcher.feed(b"\x10\x10\x11") == (b"\x10", True)   # a repeated first key starts it again


def test_no_keys_never_detach():
    matcher = DetachMatcher(parse_detach_keys(""))
    assert matcher.feed(b"\x10\x11") == (b"\x10\x11", False)


def test_a_single_key_detaches_at_once():
    matcher = DetachMatcher(parse_detach_keys("ctrl-x"))
    assert matcher.feed(b"ab") == (b"ab", False)
    assert matcher.feed(b"c\x18d") == (b"c", True)
