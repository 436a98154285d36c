"""The agent's bearer token: made on first start (mode 0600), checked on
every request in constant time."""

from __future__ import annotations

import hmac
import os
import secrets
import stat

from ferry.util.errors import FerryError, UsageError
from ferry.util.fs import atomic_write

MIN_TOKEN = 32          # characters: a token shorter than this is refused, not used
TOKEN_BYTES = 32        # of randomness in a generated token


def load_or_make(path: str) -> tuple[str, bool]:
    """(the token in `path`, whether it was made now). An existing file must
    be root's alone: a token others can read is no secret."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        atomic_write(path, token + "\n", mode=0o600)
        return token, True
    except OSError as exc:
        raise FerryError(f"cannot read token file {path}: {exc.strerror}") from None
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"token file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise UsageError(f"token file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o})",
                             hint=f"chmod 600 {path}")
        token = f.read(4096).strip()
    if len(token) < MIN_TOKEN:
        raise UsageError(f"the token in {path} is too short ({len(token)} characters, at least {MIN_TOKEN})",
                         hint="remove the file, and 'ferry serve' makes a new one")
    return token, False


def bearer_matches(header: str | None, token: str) -> bool:
    """`Authorization: Bearer TOKEN`, compared in constant time."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
