"""Content-addressed blobs (manifests and configs) under <images>/blobs/sha256/.

A blob's file name is its digest, checked before it is written; writes are
atomic, so a blob either exists whole or not at all."""

from __future__ import annotations

import os

from ferry.image import digest as digests
from ferry.util.fs import atomic_write


class BlobStore:
    def __init__(self, root: str):
        self.root = os.path.join(root, "sha256")

    def path(self, digest: str) -> str:
        return os.path.join(self.root, digests.hex_of(digest))

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def put(self, data: bytes, expected: str | None = None) -> str:
        """Store `data`; BadArchive if it does not hash to `expected`."""
        actual = digests.of_bytes(data)
        if expected is not None:
            digests.verify(expected, actual, f"blob {expected}")
        if not self.has(actual):
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            atomic_write(self.path(actual), data, mode=0o600)
        return actual

    def get(self, digest: str) -> bytes:
        with open(self.path(digest), "rb") as f:
            data = f.read()
        digests.verify(digest, digests.of_bytes(data), f"stored blob {digest}")
        return data

    def digests(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [f"sha256:{name}" for name in names if digests.DIGEST_RE.match(f"sha256:{name}")]

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass
