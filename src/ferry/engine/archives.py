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
from typing import NamedTuple

from ferry.checkpoint import archive, foreign_layout
from ferry.checkpoint.encryption import archive_source
from ferry.checkpoint.archive.manifest import MAX_HEAD_BYTES, MAX_SIZE_LIMIT
from ferry.util.errors import BadArchive

ENGINE_FERRY = "ferry"
TCP_STREAM_PREFIX = "checkpoint/tcp-stream-"   # CRIU's image of an established connection's queues
GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


class Summary(NamedTuple):
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
    return name == foreign_layout.CONFIG_DUMP


def summarize(path: str, verify_key=None, keys=None) -> Summary:
    """Read and check the whole archive (digests, trailer, signature, layout)
    as a restore would, keeping only another engine's config.dump."""
    is_file = os.path.isfile(path)
    with archive_source(path, keys) as source, tempfile.TemporaryDirectory(prefix="ferry-verify-") as scratch, \
            archive.ArchiveReader(source.target) as reader:
        head = reader.head()
        contents = reader.extract(os.path.join(scratch, "archive"), verify_key=verify_key, keep=_record,
                                  budget=MAX_SIZE_LIMIT)   # nothing but config.dump is written
        names = [m.name for m in contents.members]
        member_bytes = sum(m.size for m in contents.members)
        if isinstance(head, archive.ForeignHead):
            found = _foreign_container(os.path.join(scratch, "archive"))
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


def _foreign_container(root: str):
    """config.dump of another engine's checkpoint unpacked at `root` (a ForeignContainer)."""
    from ferry.checkpoint import foreign
    from ferry.engine.foreign import parse_record
    if not os.path.isfile(os.path.join(root, foreign_layout.CONFIG_DUMP)):
        raise BadArchive(f"the archive has no {foreign_layout.CONFIG_DUMP}",
                         hint="it is damaged, or not a checkpoint archive")
    return parse_record(root, foreign_layout.CONFIG_DUMP, foreign.read_config)


# ---- inspect ------------------------------------------------------------------------------

INSPECT_PREFIX = "inspect-"   # an inspect's unpacked archive under ROOT/tmp, named with its pid


def inspect(engine, target: str, *, env: bool = False, verify_key=None, keys=None) -> dict:
    """`ferry checkpoint inspect FILE|IMAGE`: the archive (or checkpoint
    image) decoded. An archive is read and checked whole into a private dir
    under the root's tmp, gone at the end; an image's unpacked layer is read
    in place."""
    if os.path.exists(target) or target == "-":
        os.makedirs(engine.layout.tmp, mode=0o700, exist_ok=True)
        sweep_stale_inspects(engine.layout.tmp)
        scratch = tempfile.mkdtemp(prefix=f"{INSPECT_PREFIX}{os.getpid()}-", dir=engine.layout.tmp)
        try:
            staging = os.path.join(scratch, "archive")
            with archive_source(target, keys) as source, archive.ArchiveReader(source.target) as reader:
                head = reader.head()
                budget = None
                if isinstance(head, archive.ForeignHead):
                    from ferry.util.space import disk_free
                    budget = disk_free(scratch)
                contents = reader.extract(staging, verify_key=verify_key, budget=budget)
            sizes = {m.name: m.size for m in contents.members}
            found = _described(staging, head if not isinstance(head, archive.ForeignHead) else None, sizes, env)
            found.update(archive=target, size=os.path.getsize(target) if os.path.isfile(target) else None,
                         signed=contents.signed, verified=contents.verified, signer=contents.signer)
            return found
        finally:
            from ferry.util.fs import remove_tree
            remove_tree(scratch)
    from ferry.engine import checkpoint_images
    image = checkpoint_images.find(engine.images, target)
    if image is None:
        from ferry.util.errors import NotFound
        raise NotFound(f"no such archive or checkpoint image: {target}",
                       hint="give an archive's path, or a checkpoint image in 'ferry images'")
    layer = checkpoint_images.checkpoint_layer(engine.images, image, target)
    head = None
    if os.path.isfile(os.path.join(layer, archive.MANIFEST_NAME)):
        with open(os.path.join(layer, archive.MANIFEST_NAME), "rb") as f:
            try:
                head = archive.parse_head(f.read(MAX_HEAD_BYTES + 1))
            except ValueError as exc:
                raise BadArchive(f"manifest.json of checkpoint image {target} is invalid: {exc}",
                                 hint="the image is damaged or forged") from None
    sizes = {}
    for parent, _, names in os.walk(layer):
        for name in names:
            path = os.path.join(parent, name)
            sizes[os.path.relpath(path, layer)] = os.lstat(path).st_size
    found = _described(layer, head, sizes, env)
    found.update(archive=target, size=image.size, signed=None, verified=None, signer=None)
    return found


def _described(root: str, head, sizes: dict[str, int], env: bool) -> dict:
    """What `inspect` shows of an unpacked checkpoint at `root`."""
    from ferry.checkpoint import criu
    from ferry.checkpoint.inspect import describe
    if head is not None:
        engine_name, container = ENGINE_FERRY, dict(head.container)
        created, host = head.created, {k: v for k, v in head.host.to_dict().items()
                                       if k not in ("cpu", "cpuinfo_image")}
    else:
        found = _foreign_container(root)
        engine_name, created, host = found.engine, "", None
        container = {"id": found.id, "name": found.name, "image": found.image_name or "",
                     "image_id": found.image_id or ""}
    images = os.path.join(root, "checkpoint")
    decoded = describe(images, env=env)
    stats = None
    if os.path.isfile(os.path.join(root, "stats-dump")):
        try:
            stats = criu.read_dump_stats(root)._asdict()
        except Exception:   # noqa: BLE001 - an archive's stats are informative only
            stats = None
    volumes = {name[len("volumes/"):-len(".tar")]: size for name, size in sorted(sizes.items())
               if name.startswith("volumes/") and name.endswith(".tar")}
    return {"engine": engine_name, "container": container, "created": created, "host": host,
            "memory": {"pages": decoded["memory_pages"], "bytes": decoded["memory_pages"] * decoded["page_size"]},
            "rootfs_diff": sizes.get("rootfs-diff.tar", 0), "volumes": volumes,
            "tcp_established": any(n.startswith(TCP_STREAM_PREFIX) for n in sizes),
            "processes": decoded["processes"], "sockets": decoded["sockets"], "mounts": decoded["mounts"],
            "file_locks": decoded["file_locks"], "stats": stats}


def sweep_stale_inspects(tmp: str) -> None:
    """An inspect killed before it cleaned up leaves its dir: the next one removes it."""
    from ferry.util.fs import remove_tree
    for name in os.listdir(tmp):
        if not name.startswith(INSPECT_PREFIX):
            continue
        pid = name[len(INSPECT_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            remove_tree(os.path.join(tmp, name))


# ---- compat ---------------------------------------------------------------------------------

def compat(engine, target: str, *, token_file: str | None = None, tls_verify: bool = True) -> dict:
    """`ferry system compat FILE|URL`: would the checkpoint in FILE restore on
    this host, or would this host's containers restore on the agent at URL
    (which runs the same checks, CPU included, on its side)? The checks a
    restore and a migration's preflight make, one row each."""
    from ferry.checkpoint import compat as checks
    from ferry.checkpoint.hostinfo import criu_path, host_info
    if target.startswith(("http://", "https://")):
        from ferry.migration.client import AgentClient, read_token
        with AgentClient(target, read_token(token_file) if token_file else "", verify=tls_verify) as agent:
            reply = agent.compat(host_info())
        rows = [row.model_dump() for row in reply.checks]
        return {"target": target, "compatible": all(r["verdict"] != "refused" for r in rows), "checks": rows}
    head = archive.read_manifest(target)
    if isinstance(head, archive.ForeignHead):
        raise BadArchive(f"{target} is another engine's archive, which records no host to compare with",
                         hint="its restore checks its images against this host all the same")
    rows = checks.report(head.host, host_info(), criu_path())
    image_id = head.container["image_id"]
    present = image_id and engine.images.has_image(image_id)
    rows.append({"check": "image", "key": "image", "checkpoint": f"{head.container['image']} ({image_id[:12]})",
                 "host": "present" if present else "missing", "verdict": "same" if present else "missing",
                 "detail": "" if present else "load or pull it first, or restore with --image-archive FILE"})
    return {"target": target, "compatible": all(r["verdict"] in ("same", "harmless") for r in rows),
            "checks": rows}
