"""The archive's records, parsed strictly: format 2's manifest, format 3's
head, trailer (checksums.json) and signature (checksums.sig), what a read
returns (ArchiveContents), and the rules for member names. Anything else in
a record is refused as BadArchive, with one of the hints below."""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
import re
from datetime import datetime
from typing import NamedTuple

from ferry.checkpoint.hostinfo import HostInfo
from ferry.image.digest import DIGEST_RE
from ferry.store.ids import MAX_NAME, NAME_RE
from ferry.util import strictjson
from ferry.util.errors import BadArchive
from ferry.util.records import checked

# 3: BLAKE3 digests in a trailer, which may be signed. Measured on this
# machine, one core: BLAKE3 3.5-4 GB/s, sha256 1.1 GB/s, xxh3 5.5-7 GB/s, so
# BLAKE3 resists forgery for about 0.1 s more per GiB than xxh3 took.
# 2: xxh3_128 digests in the leading manifest; read, never written.
FORMAT_VERSION = 3
READ_FORMATS = (2, 3)
MANIFEST_NAME = "manifest.json"       # the head: first member of every version
CHECKSUMS_NAME = "checksums.json"     # format 3's trailer
SIGNATURE_NAME = "checksums.sig"      # format 3's optional signature of the trailer
RESERVED_NAMES = (MANIFEST_NAME, CHECKSUMS_NAME, SIGNATURE_NAME)
DIGEST = "blake3"
CONTINUE_KEY = "FERRY.continue"       # pax record of an entry that continues the member before it
SIGNATURE_ALGORITHM = "ed25519"
COMPRESSIONS = ("zstd", "gzip", "none")

# Bounds that keep a hostile archive from making the reader allocate or loop.
MAX_MANIFEST_BYTES = 16 << 20      # format 2's manifest lists every member
MAX_HEAD_BYTES = 1 << 20           # format 3's head holds no list (about 2 KiB)
MAX_CHECKSUMS_BYTES = 16 << 20
MAX_SIGNATURE_BYTES = 4 << 10
MAX_MEMBERS = 100_000              # a redis dump has about 40
MAX_SIZE_LIMIT = 1 << 62           # bytes: max_size above this is nonsense, not a plan
MAX_NAME_BYTES = 4095
MAX_COMPONENT_BYTES = 255

HINT_DAMAGED = "the archive is damaged or was tampered with; do not restore from it"
HINT_TRUNCATED = "the archive is incomplete; copy it again"
HINT_FOREIGN = "restore only archives written by 'ferry container checkpoint --export'"
HINT_FORGED = "the archive was not signed by the key you trust; do not restore from it"
HINT_UNSIGNED = ("only an archive checkpointed with --sign-key carries a signature; restore without "
                 "--verify-key only if you trust where the archive came from")

# \Z, not $: $ lets a trailing newline through.
HEX64_RE = re.compile(r"^[0-9a-f]{64}\Z")     # container and image IDs, BLAKE3 digests
HEX32_RE = re.compile(r"^[0-9a-f]{32}\Z")     # xxh3_128 digests
CREATED_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z\Z")


def truncated() -> BadArchive:
    return BadArchive("archive is truncated", hint=HINT_TRUNCATED)


def trailing() -> BadArchive:
    return BadArchive("archive has trailing data after its end", hint=HINT_DAMAGED)


# ---- names ------------------------------------------------------------------

def unsafe_name_reason(name: str) -> str | None:
    """Why `name` may not be a member path, or None: it must be relative,
    normalised, free of '..', NUL and control characters, and of sane length."""
    if not name:
        return "empty path"
    if name.startswith("/"):
        return "absolute path"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "control character in path"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "path is not UTF-8"
    if len(encoded) > MAX_NAME_BYTES:
        return "path too long"
    for part in name.split("/"):
        if part == "..":
            return "unsafe path"
        if part in ("", "."):
            return "path not normalised"
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            return "path component too long"
    return None


def shown(name: str, limit: int = 200) -> str:
    """A name fit for a one-line message."""
    text = name if name.isprintable() else repr(name)
    return text if len(text) <= limit else text[:limit] + "..."


def parent_dirs(names) -> set[str]:
    dirs = set()
    for name in names:
        parent = posixpath.dirname(name)
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    return dirs


def _check_member_names(names: list[str]) -> None:
    """ValueError unless the names are unique and none is also another's directory."""
    if len(names) > MAX_MEMBERS:
        raise ValueError(f"more than {MAX_MEMBERS} members")
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"member {shown(name)} is listed twice")
        seen.add(name)
    clash = parent_dirs(names) & seen
    if clash:
        raise ValueError(f"member {shown(min(clash))} is both a file and a directory")


def _check_member(name, size, digest, digest_field: str, digits: int, reserved: tuple[str, ...]) -> None:
    if not isinstance(name, str):
        raise ValueError("member name must be a string")
    reason = unsafe_name_reason(name)
    if reason:
        raise ValueError(f"member {shown(name)}: {reason}")
    if name in reserved:
        raise ValueError(f"member {name} is reserved for the archive's own records")
    if not _is_int(size) or size < 0:
        raise ValueError(f"member {shown(name)}: size must be a non-negative integer")
    if not isinstance(digest, str) or not (HEX64_RE if digits == 64 else HEX32_RE).match(digest):
        raise ValueError(f"member {shown(name)}: {digest_field} must be {digits} lowercase hex digits")


# ---- records ------------------------------------------------------------------

_exact_keys = strictjson.exact_keys


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _load_json(data: bytes, what: str):
    """Strictly parsed JSON, or BadArchive naming `what`."""
    try:
        return strictjson.loads(data)
    except ValueError as exc:
        raise BadArchive(f"{what} is invalid: {exc}", hint=HINT_DAMAGED) from None


CONTAINER_KEYS = ("id", "name", "image", "image_id", "image_digest")


def check_container(container: dict) -> None:
    _exact_keys(container, CONTAINER_KEYS, "container")
    for key in CONTAINER_KEYS:
        if not isinstance(container[key], str):
            raise ValueError(f"container.{key} must be a string")
    if not HEX64_RE.match(container["id"]):
        raise ValueError("container.id must be 64 lowercase hex digits")
    if len(container["name"]) > MAX_NAME or not NAME_RE.match(container["name"]):
        raise ValueError(f"container.name {shown(container['name'])} is not a valid name")
    image = container["image"]
    if not image or len(image) > MAX_NAME_BYTES or not image.isprintable():
        raise ValueError("container.image must be a printable image reference")
    if not HEX64_RE.match(container["image_id"]):
        raise ValueError("container.image_id must be 64 lowercase hex digits")
    if not DIGEST_RE.match(container["image_digest"]):
        raise ValueError("container.image_digest must be sha256:<64 hex digits>")


def _check_common(format_version, version: int, created, host, container, compression) -> None:
    if not _is_int(format_version) or format_version != version:
        raise ValueError(f"unsupported format_version {format_version!r}")
    if not isinstance(created, str) or not CREATED_RE.match(created):
        raise ValueError("created must be an RFC 3339 UTC time like 2024-01-31T12:00:00Z")
    datetime.fromisoformat(created[:19])  # ValueError on a 31st of February
    if not isinstance(host, HostInfo):
        raise ValueError("host must be a HostInfo")
    check_container(container)
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}")


@checked
class MemberV2(NamedTuple):
    name: str      # relative POSIX path; directories are implied by the paths
    size: int
    xxh3_128: str  # 32 lowercase hex digits

    def _check(self):
        _check_member(self.name, self.size, self.xxh3_128, "xxh3_128", 32, (MANIFEST_NAME,))

    @property
    def digest(self) -> str:
        return self.xxh3_128


@checked
class ManifestV2(NamedTuple):
    """Format 2's manifest.json: the head and every member's digest, first."""
    format_version: int
    created: str              # RFC 3339, UTC
    host: HostInfo
    container: dict           # CONTAINER_KEYS, all strings
    compression: str          # how the archive was written: zstd | gzip | none
    members: tuple[MemberV2, ...]

    def _check(self):
        _check_common(self.format_version, 2, self.created, self.host, self.container, self.compression)
        if not isinstance(self.members, tuple) or not all(isinstance(m, MemberV2) for m in self.members):
            raise ValueError("members must be a tuple of MemberV2")
        _check_member_names([m.name for m in self.members])

    digest = "xxh3_128"

    @property
    def total_size(self) -> int:
        return sum(m.size for m in self.members)

    size_bound = total_size   # exact in format 2

    def to_json(self) -> str:
        data = {
            "format_version": self.format_version,
            "created": self.created,
            "host": self.host.to_dict(),
            "container": dict(self.container),
            "compression": self.compression,
            "members": [m._asdict() for m in self.members],
        }
        return json.dumps(data, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> "ManifestV2":
        """Strict: BadArchive on anything but exactly what to_json writes."""
        return _head_from_dict(_load_json(text, MANIFEST_NAME), only=2)

    @classmethod
    def _from_dict(cls, data: dict) -> "ManifestV2":
        _exact_keys(data, cls._fields, "manifest")
        if not isinstance(data["members"], list):
            raise ValueError("members must be a list")
        if len(data["members"]) > MAX_MEMBERS:
            raise ValueError(f"more than {MAX_MEMBERS} members")
        members = []
        for entry in data["members"]:
            _exact_keys(entry, MemberV2._fields, "member")
            members.append(MemberV2(**entry))
        return cls(data["format_version"], data["created"], HostInfo.from_dict(data["host"]),
                   data["container"], data["compression"], tuple(members))


@checked
class Head(NamedTuple):
    """Format 3's manifest.json: what is known before any member is written."""
    format_version: int
    created: str              # RFC 3339, UTC
    host: HostInfo
    container: dict           # CONTAINER_KEYS, all strings
    compression: str          # how the archive was written: zstd | gzip | none
    digest: str               # of the members in the trailer: blake3
    max_size: int             # bytes: the members' sizes add up to at most this

    def _check(self):
        _check_common(self.format_version, 3, self.created, self.host, self.container, self.compression)
        if self.digest != DIGEST:
            raise ValueError(f"digest must be {DIGEST}")
        if not _is_int(self.max_size) or not 0 <= self.max_size <= MAX_SIZE_LIMIT:
            raise ValueError(f"max_size must be an integer from 0 to {MAX_SIZE_LIMIT}")

    @property
    def size_bound(self) -> int:
        """What staging the members needs at most (exact when written to a file)."""
        return self.max_size

    # The name format 2 gave the same number; here it is a bound, not a sum.
    total_size = size_bound

    def to_json(self, width: int = 0) -> bytes:
        """The head's bytes, padded with spaces (JSON allows them) to `width`."""
        data = {
            "format_version": self.format_version,
            "created": self.created,
            "host": self.host.to_dict(),
            "container": dict(self.container),
            "compression": self.compression,
            "digest": self.digest,
            "max_size": self.max_size,
        }
        text = (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
        return text + b" " * (width - len(text))

    @classmethod
    def from_json(cls, data: str | bytes) -> "Head":
        return _head_from_dict(_load_json(data, MANIFEST_NAME), only=3)

    @classmethod
    def _from_dict(cls, data: dict) -> "Head":
        _exact_keys(data, cls._fields, "manifest")
        return cls(data["format_version"], data["created"], HostInfo.from_dict(data["host"]),
                   data["container"], data["compression"], data["digest"], data["max_size"])


def _head_from_dict(data, only: int | None = None) -> ManifestV2 | Head:
    """The head of whichever format `data` says (or only `only`)."""
    version = data.get("format_version") if isinstance(data, dict) else None
    wanted = (only,) if only else READ_FORMATS
    if isinstance(data, dict) and "format_version" in data and not (_is_int(version) and version in wanted):
        said = " and ".join(map(str, wanted))
        raise BadArchive(f"{MANIFEST_NAME} has unsupported format version {shown(repr(version))}",
                         hint=f"this ferry reads format version {said}; use the ferry version that wrote "
                              "the archive")
    try:
        return (ManifestV2 if version == 2 else Head)._from_dict(data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise BadArchive(f"{MANIFEST_NAME} is invalid: {exc}", hint=HINT_DAMAGED) from None


def parse_head(data: bytes) -> ManifestV2 | Head:
    """manifest.json of any version this ferry reads, strictly."""
    return _head_from_dict(_load_json(data, MANIFEST_NAME))


@checked
class Checksum(NamedTuple):
    """One member in format 3's trailer."""
    name: str
    size: int
    blake3: str    # 64 lowercase hex digits

    def _check(self):
        _check_member(self.name, self.size, self.blake3, "blake3", 64, RESERVED_NAMES)

    @property
    def digest(self) -> str:
        return self.blake3


@checked
class Checksums(NamedTuple):
    """checksums.json, the trailer: what a signature covers."""
    format_version: int
    manifest_blake3: str            # of manifest.json's exact bytes
    members: tuple[Checksum, ...]   # in archive order

    def _check(self):
        if not _is_int(self.format_version) or self.format_version != 3:
            raise ValueError(f"unsupported format_version {self.format_version!r}")
        if not isinstance(self.manifest_blake3, str) or not HEX64_RE.match(self.manifest_blake3):
            raise ValueError("manifest_blake3 must be 64 lowercase hex digits")
        if not isinstance(self.members, tuple) or not all(isinstance(m, Checksum) for m in self.members):
            raise ValueError("members must be a tuple of Checksum")
        _check_member_names([m.name for m in self.members])

    def to_json(self) -> bytes:
        data = {"format_version": self.format_version, "manifest_blake3": self.manifest_blake3,
                "members": [m._asdict() for m in self.members]}
        return (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, text: str | bytes) -> "Checksums":
        data = _load_json(text, CHECKSUMS_NAME)
        try:
            _exact_keys(data, cls._fields, "checksums")
            if not isinstance(data["members"], list):
                raise ValueError("members must be a list")
            if len(data["members"]) > MAX_MEMBERS:
                raise ValueError(f"more than {MAX_MEMBERS} members")
            members = []
            for entry in data["members"]:
                _exact_keys(entry, Checksum._fields, "member")
                members.append(Checksum(**entry))
            return cls(data["format_version"], data["manifest_blake3"], tuple(members))
        except (ValueError, TypeError) as exc:
            raise BadArchive(f"{CHECKSUMS_NAME} is invalid: {exc}", hint=HINT_DAMAGED) from None


def _strict_base64(text, size: int, what: str) -> bytes:
    """The `size` bytes that `text` is the canonical base64 of."""
    try:
        raw = base64.b64decode(text, validate=True) if isinstance(text, str) and text.isascii() else None
    except binascii.Error:
        raw = None
    if raw is None or len(raw) != size or base64.b64encode(raw).decode("ascii") != text:
        raise ValueError(f"{what} must be the base64 of {size} bytes")
    return raw


@checked
class Signature(NamedTuple):
    """checksums.sig: who signed the trailer, and the signature."""
    algorithm: str     # ed25519
    public_key: str    # base64 of the 32 raw key bytes
    signature: str     # base64 of the 64 signature bytes

    def _check(self):
        if self.algorithm != SIGNATURE_ALGORITHM:
            raise ValueError(f"algorithm must be {SIGNATURE_ALGORITHM}")
        _strict_base64(self.public_key, 32, "public_key")
        _strict_base64(self.signature, 64, "signature")

    @property
    def public_key_bytes(self) -> bytes:
        return base64.b64decode(self.public_key)

    @property
    def signature_bytes(self) -> bytes:
        return base64.b64decode(self.signature)

    @classmethod
    def make(cls, public_key: bytes, signature: bytes) -> "Signature":
        return cls(SIGNATURE_ALGORITHM, base64.b64encode(public_key).decode("ascii"),
                   base64.b64encode(signature).decode("ascii"))

    def to_json(self) -> bytes:
        return (json.dumps(self._asdict(), indent=1) + "\n").encode("ascii")

    @classmethod
    def from_json(cls, text: str | bytes) -> "Signature":
        data = _load_json(text, SIGNATURE_NAME)
        try:
            _exact_keys(data, cls._fields, "signature")
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise BadArchive(f"{SIGNATURE_NAME} is invalid: {exc}", hint=HINT_DAMAGED) from None


class ArchiveContents(NamedTuple):
    """What read_archive unpacked and checked, and who vouches for it."""
    head: Head | ManifestV2
    members: tuple[Checksum | MemberV2, ...]   # in archive order
    signed: bool               # the archive carries a signature, and it holds for its own key
    verified: bool             # ... and that key is the verify_key the caller trusts
    signer: str | None         # the signing key's fingerprint (signing.fingerprint)

    @property
    def format_version(self) -> int:
        return self.head.format_version

    @property
    def container(self) -> dict:
        return self.head.container

    @property
    def host(self) -> HostInfo:
        return self.head.host

    @property
    def compression(self) -> str:
        return self.head.compression

    @property
    def total_size(self) -> int:
        """The members' exact total, in bytes."""
        return sum(m.size for m in self.members)
