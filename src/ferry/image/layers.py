"""Unpack one layer tar (plain, gzip or zstd) into a directory that overlayfs
can stack directly as a lowerdir.

OCI/docker whiteouts become overlayfs ones: `.wh.NAME` becomes a 0/0 character
device NAME, and `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
Layers come from registries and archives, so every member is treated as
hostile: absolute names, `..`, paths through symlinks and hardlinks to
anything outside the layer are refused with BadArchive, and device nodes are
skipped. The caller unpacks into a fresh private directory, so nothing else
can change it while we check and write.
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import stat
import tarfile
import zlib
from typing import BinaryIO, NamedTuple

import zstandard

from ferry.image.digest import CHUNK, HashingReader
from ferry.util.errors import BadArchive
from ferry.util.log import get_logger

log = get_logger("ferry.image.layers")

OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# Only these travel from a layer's PAX headers: file capabilities make
# binaries such as ping work; trusted.* and security.selinux would let a layer
# forge overlay metadata or labels.
KEPT_XATTR_PREFIXES = ("security.capability", "user.")
PAX_XATTR = "SCHILY.xattr."

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# What a malformed compressed stream or tar can raise while being read.
STREAM_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)


class Unpacked(NamedTuple):
    digest: str    # sha256 of the stream as read (the blob digest of a compressed layer)
    diff_id: str   # sha256 of the uncompressed tar stream
    size: int      # bytes of the uncompressed tar stream


class _Peeked:
    """A reader that gives back the bytes already read to sniff the format."""

    def __init__(self, head: bytes, source: BinaryIO):
        self._head = head
        self._source = source

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._source.read(size)
        if size < 0:
            data, self._head = self._head + self._source.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        if len(data) < size:
            data += self._source.read(size - len(data))
        return data


KEEP_LEVEL = 3   # zstd level of a kept layer tar: a pull or build must not wait on it


def decompressed(source: BinaryIO) -> BinaryIO:
    """`source` decompressed by its magic: gzip, zstd or plain tar."""
    head = b""
    while len(head) < len(ZSTD_MAGIC):
        more = source.read(len(ZSTD_MAGIC) - len(head))
        if not more:
            break
        head += more
    peeked = _Peeked(head, source)
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=peeked, mode="rb")
    if head.startswith(ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(peeked, read_size=CHUNK, read_across_frames=True)
    return peeked


def safe_relpath(name: str, what: str = "member") -> str:
    """A tar name as a relative path inside the layer ("" for the layer root).
    Absolute names and `..` components are refused."""
    if name.startswith("/"):
        raise BadArchive(f"layer {what} {name!r} has an absolute path",
                         hint="the layer is hostile or broken; do not use this image")
    parts = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise BadArchive(f"layer {what} {name!r} climbs out of the layer with '..'",
                             hint="the layer is hostile or broken; do not use this image")
        parts.append(part)
    return "/".join(parts)


class _Extractor:
    def __init__(self, dest: str, opaque_xattr: str):
        self.dest = dest
        self.opaque_xattr = opaque_xattr
        self.as_root = os.geteuid() == 0
        self.dir_meta: dict[str, tarfile.TarInfo] = {}

    # ---- paths ----------------------------------------------------------

    def _walk_parents(self, rel: str, *, create: bool) -> str:
        """Check (and create) each directory above `rel`; never follow a symlink."""
        parent = os.path.dirname(rel)
        current = self.dest
        for part in parent.split("/") if parent else ():
            current = os.path.join(current, part)
            try:
                info = os.lstat(current)
            except FileNotFoundError:
                if not create:
                    raise BadArchive(f"layer hardlink target {rel!r} does not exist in the layer",
                                     hint="the layer is hostile or broken; do not use this image")
                os.mkdir(current, 0o755)
                continue
            if stat.S_ISLNK(info.st_mode):
                raise BadArchive(f"layer member {rel!r} goes through the symlink "
                                 f"{os.path.relpath(current, self.dest)!r}",
                                 hint="the layer is hostile or broken; do not use this image")
            if not stat.S_ISDIR(info.st_mode):
                raise BadArchive(f"layer member {rel!r} lies under a non-directory",
                                 hint="the layer is hostile or broken; do not use this image")
        return os.path.join(self.dest, rel)

    def _remove(self, path: str) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path)
            for gone in [p for p in self.dir_meta if p == path or p.startswith(path + "/")]:
                del self.dir_meta[gone]
        else:
            os.unlink(path)

    # ---- members --------------------------------------------------------

    def extract(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = safe_relpath(member.name)
        if not rel:
            if member.isdir():
                self.dir_meta[self.dest] = member
            return
        path = self._walk_parents(rel, create=True)
        base = os.path.basename(rel)
        if base == OPAQUE_MARKER:
            os.setxattr(os.path.dirname(path), self.opaque_xattr, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX):
            hidden = base[len(WHITEOUT_PREFIX):]
            if hidden.startswith(WHITEOUT_PREFIX):
                return  # other aufs bookkeeping (.wh..wh.plnk...) has no overlay meaning
            self._whiteout(os.path.join(os.path.dirname(path), hidden))
            return
        if member.isdir():
            if not os.path.isdir(path) or os.path.islink(path):
                self._remove(path)
                os.mkdir(path, 0o700)
            self.dir_meta[path] = member
            return
        self._remove(path)
        if member.isreg():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                data = tar.extractfile(member)
                if data is not None:
                    shutil.copyfileobj(data, out, CHUNK)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            self._hardlink(member, path)
            return  # the link shares its target's inode and metadata
        elif member.ischr() and member.devmajor == 0 and member.devminor == 0:
            self._whiteout(path)  # already in overlay form
            return
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            log.debug("skipping device node %s in layer", rel)
            return
        self._set_metadata(path, member)

    def _whiteout(self, path: str) -> None:
        self._remove(path)
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))

    def _hardlink(self, member: tarfile.TarInfo, path: str) -> None:
        target_rel = safe_relpath(member.linkname, "hardlink target")
        if not target_rel:
            raise BadArchive(f"layer hardlink {member.name!r} points at the layer root",
                             hint="the layer is hostile or broken; do not use this image")
        target = self._walk_parents(target_rel, create=False)
        try:
            info = os.lstat(target)
        except FileNotFoundError:
            raise BadArchive(f"layer hardlink target {member.linkname!r} does not exist in the layer",
                             hint="the layer is hostile or broken; do not use this image") from None
        if stat.S_ISDIR(info.st_mode):
            raise BadArchive(f"layer hardlink {member.name!r} points at a directory",
                             hint="the layer is hostile or broken; do not use this image")
        os.link(target, path, follow_symlinks=False)

    def _set_metadata(self, path: str, member: tarfile.TarInfo) -> None:
        is_link = member.issym()
        if self.as_root:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
        for key, value in member.pax_headers.items():
            if key.startswith(PAX_XATTR) and not is_link:
                self._set_xattr(path, key[len(PAX_XATTR):], value)
        if not is_link:
            # chown cleared set-id bits, so the mode comes after it
            os.chmod(path, stat.S_IMODE(member.mode))
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    @staticmethod
    def _set_xattr(path: str, name: str, value: str) -> None:
        if not name.startswith(KEPT_XATTR_PREFIXES):
            return
        try:
            os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                raise
            log.debug("cannot keep xattr %s on %s: %s", name, path, exc.strerror)

    def finish(self) -> None:
        """Directory metadata last: writing children changes a directory's mtime."""
        for path in sorted(self.dir_meta, key=len, reverse=True):
            self._set_metadata(path, self.dir_meta[path])


class _Tee:
    """A reader that also writes what it reads into `sink`."""

    def __init__(self, source: BinaryIO, sink):
        self._source, self._sink = source, sink

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            self._sink.write(data)
        return data


def unpack_layer(source: BinaryIO, dest: str, *, opaque_xattr: str = OPAQUE_XATTR,
                 keep: BinaryIO | None = None) -> Unpacked:
    """Unpack the layer read from `source` (any reader) into the empty
    directory `dest`. BadArchive if the stream is corrupt or hostile; the
    caller verifies the digests returned. With `keep`, the uncompressed tar
    also goes there, zstd-compressed: the exact bytes of its diff_id, which
    ferry cannot make again from the unpacked files (a migration sends them)."""
    # The top layer's root becomes the container's "/": a private temp dir's 0700 would leak into it.
    os.chmod(dest, 0o755)
    raw = HashingReader(source)
    sink = zstandard.ZstdCompressor(level=KEEP_LEVEL, threads=-1).stream_writer(keep, closefd=False) if keep else None
    tar_stream = HashingReader(_Tee(decompressed(raw), sink) if sink else decompressed(raw))
    extractor = _Extractor(dest, opaque_xattr)
    try:
        with tarfile.open(fileobj=tar_stream, mode="r|") as tar:
            for member in tar:
                extractor.extract(tar, member)
        tar_stream.drain()
        raw.drain()
        if sink is not None:
            sink.flush(zstandard.FLUSH_FRAME)
    except STREAM_ERRORS as exc:
        raise BadArchive(f"layer is not a readable tar stream: {exc or type(exc).__name__}",
                         hint="the layer is truncated or corrupted; fetch it again") from None
    extractor.finish()
    return Unpacked(raw.digest, tar_stream.digest, tar_stream.size)
