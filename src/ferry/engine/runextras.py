"""What `run` records about a container that neither grants nor limits
anything on the host: labels, extra /etc/hosts entries, DNS, the restart
policy, an init process.

Every field may come from a forged archive, so each is checked for type,
size and form. A key is written only when it differs from its default.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ferry.engine.hostconfig import known_keys, non_defaults
from ferry.util.records import checked
from ferry.util.strictjson import shown

MAX_LABELS = 1024
MAX_LABEL = 64 << 10
LABEL_KEY_RE = re.compile(r"^[^\x00-\x1f=]{1,1024}\Z")


@checked
class RunExtras(NamedTuple):
    labels: tuple[tuple[str, str], ...] = ()   # (key, value), in the order given; a later key wins

    def _check(self):
        if not isinstance(self.labels, tuple) or len(self.labels) > MAX_LABELS:
            raise ValueError(f"labels must be at most {MAX_LABELS} pairs")
        for pair in self.labels:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise ValueError("each label must be a [key, value] pair")
            key, value = pair
            if not isinstance(key, str) or not LABEL_KEY_RE.match(key):
                raise ValueError(f"label key {shown(key)} is not a label name")
            if not isinstance(value, str) or "\0" in value or len(value) > MAX_LABEL:
                raise ValueError(f"label {shown(key)} has a value that is not a string without NUL")
        if len({k for k, _ in self.labels}) != len(self.labels):
            raise ValueError("a label key appears twice")

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def to_dict(self) -> dict:
        return non_defaults(self, NO_EXTRAS)

    @classmethod
    def from_dict(cls, data) -> "RunExtras":
        values = dict(known_keys(data, cls._fields, "extras"))
        if "labels" in values:
            labels = values["labels"]
            if not isinstance(labels, list) or len(labels) > MAX_LABELS:
                raise ValueError(f"extras.labels must be a list of at most {MAX_LABELS} pairs")
            values["labels"] = tuple(tuple(p) if isinstance(p, list) else p for p in labels)
        return cls(**values)


NO_EXTRAS = RunExtras()


def parse_labels(texts: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """--label KEY[=VALUE] options (podman: a later KEY wins, a bare KEY is empty)."""
    labels: dict[str, str] = {}
    for text in texts:
        key, _, value = text.partition("=")
        if not key:
            raise ValueError(f"--label {text!r}: the key is empty")
        labels[key] = value
    return tuple(labels.items())
