"""JSON for data that may be hostile: duplicate keys, NaN and Infinity are
refused, and records are read with exactly the keys they must have.

Everything here raises ValueError; the caller turns it into its own one-line
error (BadArchive for an archive member, for example)."""

from __future__ import annotations

import json


def loads(text: str | bytes):
    """Parse `text`, refusing what json.loads would quietly accept."""
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicate_keys, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def exact_keys(data, keys, what: str) -> dict:
    """`data` when it is an object with exactly `keys`."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be an object")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}")
    unknown = sorted(k for k in data if k not in keys)
    if unknown:
        raise ValueError(f"{what} has unknown {', '.join(shown(k) for k in unknown)}")
    return data


def shown(value, limit: int = 80) -> str:
    """A value fit for a one-line message, whatever it holds."""
    text = value if isinstance(value, str) and value.isprintable() else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _refuse_duplicate_keys(pairs):
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"key {shown(key)} appears twice")
        seen.add(key)
    return dict(pairs)


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number")
