"""Ed25519 keys and signatures for checkpoint archives.

Keys are PEM files as `openssl genpkey -algorithm ed25519` (private) and
`openssl pkey -in KEY -pubout` (public) write them. A key's fingerprint is the
start of the sha256 of its DER public key, so `openssl pkey -pubin -in KEY.pub
-outform DER | sha256sum` shows it too.

`cryptography` costs 25-50 ms to import here, so it is imported only when a
key is loaded or a signature made or checked, never by importing this module.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from ferry.util.errors import UsageError
from ferry.util.fs import read_small_file

__all__ = ["PrivateKey", "PublicKey", "fingerprint", "load_private_key", "load_public_key", "verify"]

ALGORITHM = "ed25519"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_KEY_FILE = 64 << 10      # a PEM Ed25519 key is about 120 bytes
FINGERPRINT_HEX = 16
# DER SubjectPublicKeyInfo of an Ed25519 key, less its 32 key bytes (RFC 8410).
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")

HINT_MAKE_PRIVATE = "make one with 'openssl genpkey -algorithm ed25519 -out KEY'"
HINT_MAKE_PUBLIC = "take the signer's public key, as 'openssl pkey -in KEY -pubout -out KEY.pub' writes it"


def fingerprint(public_key: bytes) -> str:
    """Short name of a raw Ed25519 public key, for messages and records."""
    return hashlib.sha256(_SPKI_PREFIX + public_key).hexdigest()[:FINGERPRINT_HEX]


@dataclass(frozen=True)
class PublicKey:
    raw: bytes = field(repr=False)   # the 32 key bytes
    path: str = ""                   # where it was loaded from, for messages

    def __post_init__(self):
        if not isinstance(self.raw, bytes) or len(self.raw) != PUBLIC_KEY_BYTES:
            raise ValueError("an Ed25519 public key is 32 bytes")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.fingerprint}, path={self.path!r})"


@dataclass(frozen=True)
class PrivateKey:
    """A loaded signing key; repr never shows the secret."""
    _key: object = field(repr=False)   # cryptography's Ed25519PrivateKey
    public: PublicKey
    path: str = ""

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def _read_key_file(path: str, what: str) -> bytes:
    return read_small_file(path, what, MAX_KEY_FILE)


def load_private_key(path: str | os.PathLike) -> PrivateKey:
    """The Ed25519 private key in the PEM file `path`: NotFound, or one
    UsageError line for anything else than an unencrypted Ed25519 private key."""
    path = os.fspath(path)
    data = _read_key_file(path, "signing key")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise UsageError(f"signing key {path} is a public key", hint="sign with the private key; " + HINT_MAKE_PRIVATE)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:   # cryptography's way of saying "encrypted"
        raise UsageError(f"signing key {path} is encrypted",
                         hint="decrypt a copy with 'openssl pkey -in KEY -out PLAIN' and keep it 0600") from None
    except Exception:   # ValueError, UnsupportedAlgorithm: not a PEM key it can read
        raise UsageError(f"signing key {path} is not a PEM private key",
                         hint=HINT_MAKE_PRIVATE) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UsageError(f"signing key {path} is {_kind(key)} key, not Ed25519", hint=HINT_MAKE_PRIVATE)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PrivateKey(key, PublicKey(raw, path), path)


def load_public_key(path: str | os.PathLike) -> PublicKey:
    """The Ed25519 public key in the PEM file `path`: NotFound, or one
    UsageError line for anything else (a private key included: a verifier
    should not need the signer's secret)."""
    path = os.fspath(path)
    data = _read_key_file(path, "verification key")
    if b"PRIVATE KEY-----" in data:
        raise UsageError(f"verification key {path} is a private key", hint=HINT_MAKE_PUBLIC)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    try:
        key = serialization.load_pem_public_key(data)
    except Exception:   # ValueError, UnsupportedAlgorithm
        raise UsageError(f"verification key {path} is not a PEM public key",
                         hint=HINT_MAKE_PUBLIC) from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UsageError(f"verification key {path} is {_kind(key)} key, not Ed25519", hint=HINT_MAKE_PUBLIC)
    return PublicKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw), path)


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """Whether `signature` is the Ed25519 signature of `data` by `public_key`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ed25519
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def _kind(key) -> str:
    """'an RSA', 'an EC', 'a DSA'... for a message."""
    name = type(key).__name__.lstrip("_").upper()
    kind = next((k for k in ("RSA", "DSA", "DH", "ED448", "X25519", "X448") if name.startswith(k)),
                "EC" if name.startswith(("EC", "ELLIPTICCURVE")) else "other")
    kind = {"ED448": "Ed448"}.get(kind, kind)
    return f"an {kind}" if kind[0] in "AEIOUR" or kind in ("X25519", "X448") else f"a {kind}"
