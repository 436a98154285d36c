"""Timestamps as podman shows them: RFC 3339 with nanoseconds, and 'N units ago'."""

from __future__ import annotations

import datetime as dt

import pytest

from ferry.util import timefmt


def test_parse_reads_what_utc_now_writes():
    now = dt.datetime.now(dt.timezone.utc)
    parsed = timefmt.parse(timefmt.utc_now())
    assert parsed.tzinfo == dt.timezone.utc
    assert abs((parsed - now).total_seconds()) < 60


@pytest.mark.parametrize("digits, pattern", [
    (9, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"),   # podman's logs and inspect
    (6, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"),   # image creation
    (0, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"),          # archive heads, networks
])
def test_utc_now_has_the_digits_asked_for(digits, pattern):
    import re
    text = timefmt.utc_now(digits)
    assert re.fullmatch(pattern, text), text
    assert abs((timefmt.parse(text) - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 60


@pytest.mark.parametrize("text,expected", [
    ("2026-11-26T20:00:37.562339123Z", dt.datetime(2026, 11, 26, 20, 0, 37, 562339, dt.timezone.utc)),
    ("2026-11-26T20:00:37.5Z", dt.datetime(2026, 11, 26, 20, 0, 37, 500000, dt.timezone.utc)),
    ("2026-11-26T20:00:37Z", dt.datetime(2026, 11, 26, 20, 0, 37, 0, dt.timezone.utc)),
])
def test_parse_keeps_microseconds_and_drops_the_rest(text, expected):
    assert timefmt.parse(text) == expected


def test_parse_rejects_garbage():
    with pytest.raises(ValueError):
        timefmt.parse("yesterday")


@pytest.mark.parametrize("seconds,text", [
    (-3, "0 seconds"), (1, "1 second"), (59, "59 seconds"), (60, "1 minute"), (7199, "1 hour"),
    (7200, "2 hours"), (86400 * 3, "3 days"),
])
def test_duration(seconds, text):
    assert timefmt.duration(seconds) == text


def test_ago():
    now = dt.datetime(2026, 11, 26, 20, 5, 0, tzinfo=dt.timezone.utc)
    assert timefmt.ago("2026-11-26T20:00:00.000000000Z", now) == "5 minutes ago"
