"""Identifiers: 64-hex IDs like podman's, short forms, and name rules."""

from __future__ import annotations

import os
import re

from ferry.util.errors import UsageError

SHORT_ID = 12
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
MAX_NAME = 128


def new_id() -> str:
    # The kernel's CSPRNG, as secrets.token_hex uses it; secrets itself would
    # load hmac, hashlib and OpenSSL (about 5 ms) for nothing here.
    return os.urandom(32).hex()


def is_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def short(full_id: str) -> str:
    return full_id[:SHORT_ID]


def check_name(name: str, what: str = "container") -> str:
    if len(name) > MAX_NAME or not NAME_RE.match(name):
        raise UsageError(f"invalid {what} name {name!r}: use letters, digits, '_', '.', '-', "
                         f"starting with a letter or digit")
    return name
