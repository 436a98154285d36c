"""sha256 digests: syntax, hashing readers, and verification that turns a
mismatch into BadArchive (content that is not what its name promised)."""

from __future__ import annotations

import re
from typing import BinaryIO

from ferry.util.errors import BadArchive

DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})\Z")
CHUNK = 1 << 20


def of_file(path: str) -> str:
    from hashlib import sha256   # OpenSSL loads only to hash: 4 ms of every command that names a digest
    digest = sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def of_bytes(data: bytes) -> str:
    from hashlib import sha256
    return "sha256:" + sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    """The 64 hex digits of a `sha256:` digest; BadArchive on anything else
    (a digest is also a file name in the blob store, so it must be exact)."""
    match = DIGEST_RE.match(digest or "")
    if not match:
        raise BadArchive(f"unsupported or malformed digest {digest!r}",
                         hint="only sha256 digests are supported")
    return match.group(1)


def verify(expected: str, actual: str, what: str) -> None:
    if expected != actual:
        raise BadArchive(f"{what} is corrupted: digest {actual} does not match the expected {expected}",
                         hint="the source is damaged or was tampered with; fetch it again")


class HashingReader:
    """A read-only file object that hashes and counts what passes through it."""

    def __init__(self, source: BinaryIO):
        from hashlib import sha256
        self._source = source
        self._hash = sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read to the end, so the digest covers the whole stream (tar padding too)."""
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
