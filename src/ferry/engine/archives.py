"""What is in a checkpoint archive, without restoring it: `ferry checkpoint
verify` (every check a restore makes of the archive itself, nothing
written) and `ferry checkpoint show` (one line per archive).

Both read the whole archive through the same reader as a restore, so a
verdict here is the verdict a restore would reach on the archive's bytes;
only the small records `show` reports from are written, to a private temp
dir that goes at the end.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from ferry.checkpoint import archive, foreign
from ferry.checkpoint.archive.endpoints import import_endpoint
from ferry.checkpoint.archive.manifest import MAX_SIZE_LIMIT
from ferry.util.errors import BadArchive

ENGINE_FERRY = "ferry"
TCP_STREAM_PREFIX = "checkpoint/tcp-stream-"   # CRIU's image of an established connection's queues
GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class Summary:
    """An archive as `show` and `verify` report it."""
    path: str
    engine: str                 # ferry | podman | CRI-O
    container: str
    image: str
    created: str                # ferry's head's time; "" for another engine's (it records none)
    size: int                   # bytes of the archive file
    members: int
    member_bytes: int
    compression: str            # zstd | gzip | none
    format_version: int         # 0 for another engine's
    criu_version: str           # "" when the archive does not say
    tcp_established: bool       # it holds established connections (CRIU's tcp-stream images)
    signed: bool
    verified: bool              # signed by the key given to --verify-key
    signer: str | None

    def to_json(self) -> dict:
        return {"Path": self.path, "Engine": self.engine, "Container": self.container, "Image": self.image,
                "Created": self.created, "Size": self.size, "Members": self.members,
                "MemberBytes": self.member_bytes, "Compression": self.compression,
                "FormatVersion": self.format_version, "CriuVersion": self.criu_version,
                "TcpEstablished": self.tcp_established, "Signed": self.signed, "Verified": self.verified,
                "Signer": self.signer}


def _compression(path: str) -> str:
    with open(path, "rb") as f:
        magic = f.read(4)
    return "zstd" if magic.startswith(ZSTD_MAGIC) else "gzip" if magic.startswith(GZIP_MAGIC) else "none"


def _record(name: str) -> bool:
    return name == foreign.CONFIG_DUMP


def summarize(path: str, verify_key=None) -> Summary:
    """Read and check the whole archive (digests, trailer, signature, layout)
    as a restore would, keeping only another engine's config.dump."""
    is_file = os.path.isfile(path)
    with import_endpoint(path) as source, tempfile.TemporaryDirectory(prefix="ferry-verify-") as scratch, \
            archive.ArchiveReader(source.target) as reader:
        head = reader.head()
        contents = reader.extract(os.path.join(scratch, "archive"), verify_key=verify_key, keep=_record,
                                  budget=MAX_SIZE_LIMIT)   # nothing but config.dump is written
        names = [m.name for m in contents.members]
        member_bytes = sum(m.size for m in contents.members)
        if isinstance(head, archive.ForeignHead):
            found = _foreign_container(os.path.join(scratch, "archive", foreign.CONFIG_DUMP))
            engine, container, image = found.engine, found.name, found.image_name or (found.image_id or "")
            created, version, criu = "", 0, ""
        else:
            engine, container, image = ENGINE_FERRY, head.container["name"], head.container["image"]
            created, version, criu = head.created, head.format_version, head.host.criu_version
    foreign_compression = _compression(path) if is_file else ""
    return Summary(path, engine, container, image, created, os.path.getsize(path) if is_file else 0, len(names),
                   member_bytes, foreign_compression if isinstance(head, archive.ForeignHead) else head.compression,
                   version, criu, any(n.startswith(TCP_STREAM_PREFIX) for n in names),
                   contents.signed, contents.verified, contents.signer)


def _foreign_container(config_dump: str) -> foreign.ForeignContainer:
    try:
        with open(config_dump, "rb") as f:
            data = f.read(foreign.MAX_RECORD + 1)
    except FileNotFoundError:
        raise BadArchive(f"the archive has no {foreign.CONFIG_DUMP}",
                         hint="it is damaged, or not a checkpoint archive") from None
    try:
        return foreign.read_config(data)
    except ValueError as exc:
        raise BadArchive(f"{foreign.CONFIG_DUMP} in the archive is invalid: {exc}",
                         hint="the archive is damaged or forged; do not restore from it") from None
