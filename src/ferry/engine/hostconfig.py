"""What `run` asks of the host beyond ferry's defaults: privileges, host
namespaces, limits and the root's writability (podman's HostConfig).

Every field may come from a forged archive, so each is checked for type and
range, and a restore re-grants what it holds only under the rules of
engine/checkpoints.py. A key is written only when it differs from its
default: records made before the field existed read the same.
"""

from __future__ import annotations

from typing import NamedTuple

from ferry.util.records import checked
from ferry.util.strictjson import shown


@checked
class HostConfig(NamedTuple):
    """Empty until `run` takes the flags that fill it."""

    def _check(self):
        pass

    def to_dict(self) -> dict:
        return non_defaults(self, DEFAULT_HOST)

    @classmethod
    def from_dict(cls, data) -> "HostConfig":
        return cls(**known_keys(data, cls._fields, "host"))


def non_defaults(record, default) -> dict:
    """The record's JSON form: only the fields that differ from `default`."""
    return {key: _plain(getattr(record, key)) for key in record._fields
            if getattr(record, key) != getattr(default, key)}


def _plain(value):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def known_keys(data, fields: tuple[str, ...], what: str) -> dict:
    """`data` when it is an object whose keys are all `fields` (any may be absent)."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be an object")
    unknown = sorted(k for k in data if k not in fields)
    if unknown:
        raise ValueError(f"{what} has unknown {', '.join(shown(k) for k in unknown)}")
    return data


DEFAULT_HOST = HostConfig()
