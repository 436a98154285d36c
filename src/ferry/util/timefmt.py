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


# ---- podman's time values (`logs --since/--until`, RFC 3339 log stamps) -------
# Times here are whole nanoseconds since the epoch: a stamp copied from
# `logs -t` must compare exactly with the log's own (--since is exclusive).

SECOND_NS = 1_000_000_000
GO_DURATION_UNITS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
                     "s": SECOND_NS, "m": 60 * SECOND_NS, "h": 3600 * SECOND_NS}
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# The layouts podman's ParseInputTime tries, in one: RFC3339(Nano) with a zone,
# 2006-01-02T15:04:05(.999999999) without one (UTC), 2006-01-02Z07:00 and
# 2006-01-02. Go's `15` takes one or two digits, and any second may have a
# fraction, after a dot or a comma.
_GO_TIME = None
# strconv.ParseFloat's decimal syntax (underscores between digits), its hex
# floats (a p exponent is required), and its words.
_GO_FLOAT = None


def _patterns():
    global _GO_TIME, _GO_FLOAT
    if _GO_TIME is None:
        import re
        _GO_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d+))?)?"
                              r"(Z|[+-]\d{2}:\d{2})?", re.ASCII)
        digits = r"\d(?:_?\d)*"
        _GO_FLOAT = re.compile(rf"[+-]?(?:{digits}(?:\.(?:{digits})?)?|\.{digits})(?:[eE][+-]?{digits})?"
                               r"|[+-]?0[xX](?=\.?[0-9a-fA-F])[0-9a-fA-F]*(?:\.[0-9a-fA-F]*)?[pP][+-]?\d+"
                               r"|[+-]?(?i:inf|infinity)|(?i:nan)", re.ASCII)
    return _GO_TIME, _GO_FLOAT


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (any year, 0 too)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146097 + year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year - 719468


def _days_in(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def go_time_ns(text: str, *, zone_required: bool = False) -> int:
    """Nanoseconds since the epoch of a time in one of podman's layouts (see
    _GO_TIME); a time without a zone is UTC. ValueError otherwise."""
    match = _patterns()[0].fullmatch(text)
    if not match or (zone_required and not (match.group(4) and match.group(8))):
        raise ValueError(f"not a time: {text!r}")
    year, month, day = int(match.group(1)), int(match.group(2)), int(match.group(3))
    hour, minute, second = (int(match.group(i) or 0) for i in (4, 5, 6))
    if not (1 <= month <= 12 and 1 <= day <= _days_in(year, month) and hour < 24 and minute < 60
            and second < 60):
        raise ValueError(f"out of range: {text!r}")
    fraction = (match.group(7) or "")[:9]
    zone = match.group(8) or "Z"
    offset = 0 if zone == "Z" else (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * (1 if zone[0] == "+" else -1)
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    return seconds * SECOND_NS + int(fraction.ljust(9, "0"))


def rfc3339_nano(stamp: str) -> str:
    """A log's RFC 3339 stamp as Go's RFC3339Nano prints it (podman's `logs -t`):
    the fraction without trailing zeros (nor its dot when nothing is left),
    and a zero offset as Z."""
    match = _patterns()[0].fullmatch(stamp)
    if not match or not match.group(4) or not match.group(8):
        return stamp
    fraction = (match.group(7) or "")[:9].rstrip("0")
    zone = match.group(8)
    zone = "Z" if zone in ("Z", "+00:00", "-00:00") else zone
    return (f"{match.group(1)}-{match.group(2)}-{match.group(3)}T{int(match.group(4)):02d}:{match.group(5)}:"
            f"{match.group(6)}{'.' + fraction if fraction else ''}{zone}")


def _go_int64(value: float) -> int:
    """Go's int64(float) on amd64: out of range gives the minimum (the far past)."""
    return int(value) if INT64_MIN <= value < 2.0 ** 63 else INT64_MIN


def go_duration_ns(text: str) -> int:
    """Nanoseconds in a Go duration as time.ParseDuration reads it ("90s",
    "1h30m", "1.5h", "-10m", "500ms", "0"), with its float rounding of
    fractions and its overflow checks. ValueError otherwise."""
    rest, negative = text, False
    if rest[:1] in ("-", "+"):
        negative, rest = rest[0] == "-", rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    while rest:
        if rest[0] not in ".0123456789":
            raise ValueError(f"invalid duration {text!r}")
        count = _leading_digits(rest)
        value, rest = int(rest[:count] or "0"), rest[count:]
        if value > 1 << 63:
            raise ValueError(f"invalid duration {text!r}")
        fraction, scale, fraction_digits = 0, 1.0, 0
        if rest[:1] == ".":
            fraction_digits = _leading_digits(rest[1:])
            overflow = False
            for digit in rest[1:1 + fraction_digits]:   # Go's leadingFraction: digits past overflow are dropped
                if overflow or fraction > INT64_MAX // 10 or fraction * 10 + int(digit) > 1 << 63:
                    overflow = True
                    continue
                fraction, scale = fraction * 10 + int(digit), scale * 10
            rest = rest[1 + fraction_digits:]
        if not count and not fraction_digits:
            raise ValueError(f"invalid duration {text!r}")
        unit_length = next((i for i, c in enumerate(rest) if c == "." or c in "0123456789"), len(rest))
        if unit_length == 0:
            raise ValueError(f"missing unit in duration {text!r}")
        unit = GO_DURATION_UNITS.get(rest[:unit_length])
        if unit is None:
            raise ValueError(f"unknown unit {rest[:unit_length]!r} in duration {text!r}")
        rest = rest[unit_length:]
        if value > (1 << 63) // unit:
            raise ValueError(f"invalid duration {text!r}")
        value *= unit
        if fraction:
            # float64, as Go: nanosecond-accurate for fractions of hours
            value += int(float(fraction) * (float(unit) / scale))
            if value > 1 << 63:
                raise ValueError(f"invalid duration {text!r}")
        total += value
        if total > 1 << 63:
            raise ValueError(f"invalid duration {text!r}")
    if negative:
        return -total
    if total > INT64_MAX:
        raise ValueError(f"invalid duration {text!r}")
    return total


def _leading_digits(text: str) -> int:
    return len(text) - len(text.lstrip("0123456789"))


def podman_time_ns(text: str, *, since: bool, now_ns: int | None = None) -> int:
    """podman's ParseInputTime, in nanoseconds since the epoch: a time in one of
    its layouts (UTC without a zone), Unix seconds (strconv.ParseFloat's syntax,
    a fraction too), or a Go duration: before now for --since, after now for
    --until (as podman 4.3.1 reads them). ValueError otherwise."""
    try:
        return go_time_ns(text)
    except ValueError:
        pass
    if _patterns()[1].fullmatch(text):
        import math
        number = float.fromhex(text) if "x" in text.lower() else float(text)
        if math.isfinite(number) or text.lstrip("+-").lower() in ("inf", "infinity", "nan"):
            if not math.isfinite(number):   # Go's int64 of them: the far past
                return INT64_MIN * SECOND_NS
            fraction, whole = math.modf(number)
            return _go_int64(whole) * SECOND_NS + int(fraction * 1e9)
        # Out of float64's range, ParseFloat fails (ErrRange): then it is no duration either.
    duration = go_duration_ns(text)   # its ValueError is the caller's
    if now_ns is None:
        import time
        now_ns = time.time_ns()
    return now_ns - duration if since else now_ns + duration


def human_duration(seconds: float) -> str:
    """podman's words for a span (go-units' HumanDuration): "Less than a
    second", "About a minute", "3 hours", "2 weeks"."""
    seconds = int(seconds) if seconds >= 1 else 0
    minutes, hours = seconds // 60, seconds // 3600
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{hours // (24 * 365)} years"


def since(timestamp: str, now: dt.datetime | None = None) -> float:
    """Seconds from an RFC 3339 UTC timestamp to now."""
    return ((now or dt.datetime.now(dt.timezone.utc)) - parse(timestamp)).total_seconds()


def unix_seconds(timestamp: str | None, zero: int = -62135596800) -> int:
    """Whole seconds since the epoch, or Go's zero time (podman's "never")."""
    return int(parse(timestamp).timestamp()) if timestamp else zero


def go_time(timestamp: str) -> str:
    """A UTC timestamp as Go's time.String prints it: '2026-11-30 20:37:29.593726014 +0000 UTC'."""
    base, _, fraction = timestamp.rstrip("Z").partition(".")
    fraction = fraction.rstrip("0")
    return base.replace("T", " ") + (f".{fraction}" if fraction else "") + " +0000 UTC"
