"""Timestamps as podman shows them."""

from __future__ import annotations

import datetime as dt


def utc_now(digits: int = 9) -> str:
    """RFC 3339 in UTC with `digits` of the second: 9 (nanoseconds, as in
    podman's logs and inspect output), 6, or 0 (none, and no dot)."""
    now = dt.datetime.now(dt.timezone.utc)
    whole = now.strftime("%Y-%m-%dT%H:%M:%S")
    if digits == 0:
        return whole + "Z"
    return f"{whole}.{f'{now.microsecond:06d}000'[:digits]}Z"


def parse(timestamp: str) -> dt.datetime:
    base, _, fraction = timestamp.rstrip("Z").partition(".")
    micros = int((fraction + "000000")[:6]) if fraction else 0
    # fromisoformat, not strptime: _strptime costs `ferry ps` 3 ms to import.
    return dt.datetime.fromisoformat(base).replace(microsecond=micros, tzinfo=dt.timezone.utc)


def ago(timestamp: str, now: dt.datetime | None = None) -> str:
    """'5 seconds ago', '3 minutes ago', like podman ps."""
    seconds = int(((now or dt.datetime.now(dt.timezone.utc)) - parse(timestamp)).total_seconds())
    return f"{duration(seconds)} ago"


def duration(seconds: int) -> str:
    seconds = max(0, seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration as podman takes them ("2s", "1m30s", "500ms",
    "1h"), or a plain number of seconds. ValueError otherwise."""
    if text.replace(".", "", 1).isdigit():
        return float(text)
    total, number, rest = 0.0, "", text
    if not rest:
        raise ValueError("an empty duration")
    while rest:
        digits = len(rest) - len(rest.lstrip("0123456789."))
        number, rest = rest[:digits], rest[digits:]
        unit = next((u for u in ("ms", "h", "m", "s") if rest.startswith(u)), None)
        if not number or number.count(".") > 1 or unit is None:
            raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h30m or 500ms")
        total += float(number) * DURATION_UNITS[unit]
        rest = rest[len(unit):]
    return total
