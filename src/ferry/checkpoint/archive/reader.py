"""The checkpoint archive: one tar file, plain or compressed with zstd or gzip.
manifest.py holds the records, this module the reader; writer.py writes archives.

Format 3 (written now) can be written front to back, onto a pipe or socket:
  manifest.json   first, the head: format version, created, host, container,
                  compression, digest ("blake3") and max_size, a bound on the
                  sum of the members' sizes that the reader enforces as it reads
  MEMBERS...      regular files only; a file written while it grew may come as
                  consecutive entries of one name, each after the first marked
                  with the pax record FERRY.continue=1, and read as one file
  checksums.json  the trailer: the head's BLAKE3 and every member's name, size
                  and BLAKE3, in archive order
  checksums.sig   optional: an Ed25519 signature over checksums.json's bytes,
                  with the signer's public key
Format 2 (still read, as unauthenticated) has xxh3_128 digests of every member
in a manifest.json that comes first, and no trailer.

Reading treats the archive as hostile. It picks the decompressor by magic bytes,
decompresses in a second thread (or in pigz), parses the tar itself with
bounded headers, and writes each member once, hashing as it goes, with
O_NOFOLLOW|O_EXCL opens below directories it made. Anything unexpected (a
name, a type, a size, a checksum, a missing member, trailing bytes, a
truncation, a signature) refuses the whole archive and removes the destination,
and every check is done before read_archive returns.

Digests say the archive is the one its trailer describes; only a signature,
checked with a key the user trusts, says who wrote it: without --verify-key,
anyone who can edit the archive can recompute its digests.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, NamedTuple

import blake3
import xxhash

from ferry.checkpoint.archive.manifest import (CHECKSUMS_NAME, HINT_DAMAGED, HINT_FOREIGN,
                                               HINT_FORGED, HINT_UNSIGNED, MANIFEST_NAME, MAX_CHECKSUMS_BYTES,
                                               MAX_HEAD_BYTES, MAX_MANIFEST_BYTES, MAX_MEMBERS, MAX_SIGNATURE_BYTES,
                                               RESERVED_NAMES, SIGNATURE_NAME, ArchiveContents, Checksum, Checksums,
                                               Head, ManifestV2, MemberV2, Signature, parent_dirs, parse_head, shown,
                                               trailing, unsafe_name_reason)
from ferry.checkpoint.archive.codecs import CHUNK, DECODER_ERRORS, RawInput, decoder_failure, open_source
from ferry.checkpoint import foreign_layout as foreign
from ferry.checkpoint.archive.tarfmt import REFUSED_KINDS, Entry, TarStream, next_entry, padding
from ferry.util.errors import BadArchive, Conflict, NotFound, from_os_error
from ferry.util.log import get_logger
from ferry.util.pipes import write_all
from ferry.util.progress import Progress, Reporter

__all__ = ["ArchiveReader", "ForeignHead", "ForeignMember", "read_archive", "read_manifest"]

log = get_logger("ferry.checkpoint.archive")


Keep = Callable[[str], bool]   # which members to write, by name
HASH_ASIDE = 256 << 10     # views at least this large are hashed while they are written

MAX_TRAILING_ZEROS = 1 << 20       # tar writers pad to a record size (10 KiB for most)


# ---- reading: extraction --------------------------------------------------

class _Extractor:
    """Creates member files below dest, only inside directories it made itself,
    never following a link and never opening an existing file. A member that
    `keep` turns down is checked all the same, and its bytes go nowhere."""

    def __init__(self, dest: str, keep: Keep | None = None):
        self._keep = keep
        self._root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._dir_name = ""
        self._dir_fd = self._root
        self._hasher: ThreadPoolExecutor | None = None

    def hash_aside(self, digest, data) -> Future | None:
        """digest.update(data) in the hashing thread, or here and now (None) when `data` is small."""
        if len(data) < HASH_ASIDE:
            digest.update(data)
            return None
        if self._hasher is None:
            self._hasher = ThreadPoolExecutor(1, thread_name_prefix="ferry-hash")
        return self._hasher.submit(digest.update, data)

    def create(self, name: str) -> int:
        if self._keep is not None and not self._keep(name):
            return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        parent, base = posixpath.split(name)
        if parent != self._dir_name:
            self._enter(parent)
        return os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                       0o600, dir_fd=self._dir_fd)

    def _enter(self, parent: str) -> None:
        current = self._root
        try:
            for part in parent.split("/") if parent else ():
                try:
                    os.mkdir(part, 0o700, dir_fd=current)
                except FileExistsError:
                    pass
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=current)
                if current != self._root:
                    os.close(current)
                current = inner
        except BaseException:
            if current != self._root:
                os.close(current)
            raise
        self._leave()
        self._dir_name, self._dir_fd = parent, current

    def _leave(self) -> None:
        if self._dir_fd != self._root:
            os.close(self._dir_fd)
        self._dir_name, self._dir_fd = "", self._root

    def close(self) -> None:
        self._leave()
        os.close(self._root)
        if self._hasher is not None:
            self._hasher.shutdown()


def _read_record(stream: TarStream, entry: Entry, name: str, limit: int) -> bytes:
    """The whole of a small member of ferry's own (head, trailer, signature)."""
    if entry.kind != "file" or entry.continued:
        raise BadArchive(f"{name} is not a regular file", hint=HINT_DAMAGED)
    if entry.size > limit:
        raise BadArchive(f"{name} is too large ({entry.size} bytes, at most {limit})", hint=HINT_DAMAGED)
    data = stream.read_exact(entry.size)
    stream.skip(padding(entry.size))
    return data


class ForeignHead:
    """A podman or CRI-O archive: no manifest, so nothing is known of it
    before it is read, and nothing in it is authenticated."""
    format_version = 0
    size_bound = None

    def __init__(self, first: Entry):
        self.first = first


class ForeignMember(NamedTuple):
    name: str
    size: int


def _extract_foreign(stream: TarStream, first: Entry, dest: str, reporter: Reporter,
                     budget: int, keep: Keep | None = None) -> tuple[ForeignMember, ...]:
    """The members ferry uses, by podman's layout and nothing else: its
    records, CRIU's images, the rootfs diff, /dev/shm and the volumes' tars,
    each once, as regular files, within `budget` bytes in all."""
    members: list[ForeignMember] = []
    written: set[str] = set()
    total = 0
    extractor = _Extractor(dest, keep)
    try:
        entry = first
        while entry is not None:
            name = _member_name(entry)
            top, _, rest = name.partition("/")
            if entry.continued:
                raise _refuse(name, "continued entries belong to ferry's own archives")
            if entry.kind == "dir":
                if not (top in foreign.FOREIGN_DIRS and (not rest or top == "artifacts")):
                    raise _refuse(entry.name, "has no place in a podman checkpoint")
            elif entry.kind != "file":
                raise _refuse(name, REFUSED_KINDS.get(entry.kind, f"unsupported {entry.kind}"))
            elif top == "artifacts" or name in foreign.SKIPPED:
                stream.skip(entry.size + padding(entry.size))
            elif name in foreign.FOREIGN_FILES or (top == "checkpoint" and rest and "/" not in rest) \
                    or foreign.is_volume_member(name):
                if name in written:
                    raise _refuse(name, "appears twice")
                total += entry.size
                if total > budget or len(written) >= MAX_MEMBERS:
                    raise BadArchive(f"the archive unpacks to more than the {budget >> 20} MiB this host has room "
                                     f"for", hint="free disk space under ferry's root, or restore on a larger host")
                output = _Output(extractor, name, _NO_DIGEST)
                try:
                    output.take(stream, entry.size, reporter)
                finally:
                    output.close()
                written.add(name)
                members.append(ForeignMember(name, entry.size))
            else:
                raise _refuse(name, "has no place in a podman checkpoint")
            entry = next_entry(stream)
    finally:
        extractor.close()
    _expect_clean_end(stream)
    return tuple(members)


class _NoDigest:
    """Foreign archives carry no digests to check against."""
    @staticmethod
    def update(_data) -> None:
        pass


_NO_DIGEST = _NoDigest()


def _read_head(stream: TarStream) -> tuple[ManifestV2 | Head | ForeignHead, bytes]:
    """manifest.json, first in every version, and its exact bytes."""
    entry = next_entry(stream, first=True)
    if entry is not None and entry.name.strip("/").split("/")[0] in foreign.FOREIGN_MEMBERS:
        # podman's (and CRI-O's) layout, which ferry's own archives borrow
        # for their members but not for their first one.
        return ForeignHead(entry), b""
    if entry is None or entry.name != MANIFEST_NAME or entry.kind != "file":
        raise BadArchive(f"archive does not begin with {MANIFEST_NAME}", hint=HINT_FOREIGN)
    data = _read_record(stream, entry, MANIFEST_NAME, MAX_MANIFEST_BYTES)
    head = parse_head(data)
    if isinstance(head, Head) and len(data) > MAX_HEAD_BYTES:
        raise BadArchive(f"{MANIFEST_NAME} is too large ({len(data)} bytes, at most {MAX_HEAD_BYTES})",
                         hint=HINT_DAMAGED)
    return head, data


def _refuse(name: str, reason: str, hint: str = HINT_DAMAGED) -> BadArchive:
    return BadArchive(f"member {shown(name)}: {reason}", hint=hint)


def _member_name(entry: Entry) -> str:
    """The entry's name, checked; a directory's without its slash."""
    name = entry.name[:-1] if entry.kind == "dir" and entry.name.endswith("/") else entry.name
    reason = unsafe_name_reason(name)
    if reason:
        raise _refuse(entry.name, reason)
    return name


class _Output:
    """One member file being written and hashed; format 3 may append to it."""

    def __init__(self, extractor: _Extractor, name: str, digest):
        self.name = name
        self.fd = extractor.create(name)
        self.digest = digest
        self.size = 0
        self._extractor = extractor

    def take(self, stream: TarStream, size: int, reporter: Reporter) -> None:
        # Written here, not in a thread: the chunk goes back to the decompressor
        # for reuse once the stream moves past it. A large view is hashed in
        # another thread while it is written (both release the GIL), and both
        # are done before the stream moves on.
        for view in stream.views(size):
            hashing = self._extractor.hash_aside(self.digest, view)
            write_all(self.fd, view)
            if hashing is not None:
                hashing.result()
            reporter.add(len(view))
        self.size += size
        stream.skip(padding(size))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _extract_v2(stream: TarStream, manifest: ManifestV2, dest: str, reporter: Reporter,
                keep: Keep | None = None) -> tuple[MemberV2, ...]:
    expected = {m.name: m for m in manifest.members}
    allowed_dirs = parent_dirs(expected)
    seen_dirs: set[str] = set()
    written: set[str] = set()
    extractor = _Extractor(dest, keep)
    try:
        while (entry := next_entry(stream)) is not None:
            name = _member_name(entry)
            if entry.continued:
                raise _refuse(name, "continued entries are not allowed in format 2")
            if entry.kind == "dir":
                if name not in allowed_dirs or name in seen_dirs or entry.size:
                    raise _refuse(entry.name, "directory not in the manifest")
                seen_dirs.add(name)
                continue
            if entry.kind != "file":
                raise _refuse(name, REFUSED_KINDS.get(entry.kind, f"unsupported {entry.kind}"))
            member = expected.get(name)
            if member is None:
                raise _refuse(name, "appears twice" if name == MANIFEST_NAME else "not listed in the manifest")
            if name in written:
                raise _refuse(name, "appears twice")
            if entry.size != member.size:
                raise _refuse(name, f"size {entry.size} differs from the manifest's {member.size}")
            output = _Output(extractor, name, xxhash.xxh3_128())
            try:
                output.take(stream, entry.size, reporter)
            finally:
                output.close()
            if output.digest.hexdigest() != member.xxh3_128:
                raise _refuse(name, "checksum mismatch")
            written.add(name)
    finally:
        extractor.close()
    missing = [m.name for m in manifest.members if m.name not in written]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _refuse(missing[0], f"missing{more}")
    _expect_clean_end(stream)
    return manifest.members


class _Found:
    """What a format 3 archive holds, as the reader found it."""

    def __init__(self):
        self.members: list[Checksum] = []
        self.checksums: bytes | None = None
        self.signature: bytes | None = None


def _extract_v3(stream: TarStream, head: Head, dest: str, reporter: Reporter, keep: Keep | None = None) -> _Found:
    """Members up to the trailer, written and hashed; the trailer and the
    signature as bytes. Checks what can be checked before the trailer: names,
    types, duplicates, and the running total against max_size."""
    found = _Found()
    files: set[str] = set()
    dirs: set[str] = set()            # parents of the files
    dir_entries: set[str] = set()
    total = 0
    extractor = _Extractor(dest, keep)
    output: _Output | None = None
    try:
        while True:
            entry = next_entry(stream)
            if entry is None:
                raise BadArchive(f"archive ends without {CHECKSUMS_NAME}", hint=HINT_DAMAGED)
            name = _member_name(entry)
            if entry.continued:
                if output is None or output.name != name or entry.kind != "file":
                    raise _refuse(name, "continues no member before it")
            elif output is not None:
                output.close()
                found.members.append(Checksum(output.name, output.size, output.digest.hexdigest()))
                output = None
            if name == CHECKSUMS_NAME and not entry.continued:
                found.checksums = _read_record(stream, entry, CHECKSUMS_NAME, MAX_CHECKSUMS_BYTES)
                break
            if name in RESERVED_NAMES:
                raise _refuse(name, "appears twice" if name == MANIFEST_NAME else f"comes before {CHECKSUMS_NAME}")
            if entry.kind == "dir":
                if entry.size or name in dir_entries or name in files or len(dir_entries) >= MAX_MEMBERS:
                    raise _refuse(entry.name, "directory entry clashes with another entry")
                dir_entries.add(name)
                continue
            if entry.kind != "file":
                raise _refuse(name, REFUSED_KINDS.get(entry.kind, f"unsupported {entry.kind}"))
            if total + entry.size > head.max_size:
                raise _refuse(name, f"the members exceed the archive's declared max_size of {head.max_size} bytes")
            total += entry.size
            if output is None:
                if name in files:
                    raise _refuse(name, "appears twice")
                if name in dirs or name in dir_entries or parent_dirs([name]) & files:
                    raise _refuse(name, "is both a file and a directory")
                if len(files) + len(dir_entries) >= MAX_MEMBERS:
                    raise BadArchive(f"archive has more than {MAX_MEMBERS} members", hint=HINT_DAMAGED)
                files.add(name)
                dirs |= parent_dirs([name])
                output = _Output(extractor, name, blake3.blake3())
            output.take(stream, entry.size, reporter)
        entry = next_entry(stream)
        if entry is not None:
            if entry.name != SIGNATURE_NAME:
                raise _refuse(entry.name, f"comes after {CHECKSUMS_NAME}")
            found.signature = _read_record(stream, entry, SIGNATURE_NAME, MAX_SIGNATURE_BYTES)
            entry = next_entry(stream)
            if entry is not None:
                raise _refuse(entry.name, f"comes after {SIGNATURE_NAME}")
        _expect_clean_end(stream)
    finally:
        if output is not None:
            output.close()
        extractor.close()
    stray = dir_entries - dirs
    if stray:
        raise _refuse(min(stray), "directory holds no member")
    return found


def _check_v3(found: _Found, head_bytes: bytes, verify_key) -> tuple[tuple[Checksum, ...], bool, bool, str | None]:
    """The members against the trailer, the head against its digest, then
    the signature: (members, signed, verified, signer)."""
    checksums = Checksums.from_json(found.checksums)
    listed = {c.name: c for c in checksums.members}
    for got in found.members:
        want = listed.get(got.name)
        if want is None:
            raise _refuse(got.name, f"not listed in {CHECKSUMS_NAME}")
        if want.size != got.size:
            raise _refuse(got.name, f"size {got.size} differs from {CHECKSUMS_NAME}'s {want.size}")
        if want.blake3 != got.blake3:
            raise _refuse(got.name, "checksum mismatch")
    present = {got.name for got in found.members}
    missing = [c.name for c in checksums.members if c.name not in present]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _refuse(missing[0], f"missing{more}")
    if list(checksums.members) != found.members:
        raise BadArchive(f"archive's members are not in the order {CHECKSUMS_NAME} lists them", hint=HINT_DAMAGED)
    if blake3.blake3(head_bytes).hexdigest() != checksums.manifest_blake3:
        raise BadArchive(f"{MANIFEST_NAME} does not match its digest in {CHECKSUMS_NAME}", hint=HINT_DAMAGED)
    if found.signature is None:
        if verify_key is not None:
            raise BadArchive("archive carries no signature, and a verification key was given", hint=HINT_UNSIGNED)
        return checksums.members, False, False, None
    from ferry.checkpoint import signing   # cryptography loads only for signed archives
    signature = Signature.from_json(found.signature)
    key = signature.public_key_bytes
    signer = signing.fingerprint(key)
    if verify_key is not None and key != verify_key.raw:
        raise BadArchive(f"archive is signed by key {signer}, not by {verify_key.fingerprint}"
                         f"{f' ({shown(verify_key.path)})' if verify_key.path else ''}", hint=HINT_FORGED)
    if not signing.verify(key, signature.signature_bytes, found.checksums):
        raise BadArchive(f"archive's signature does not match its {CHECKSUMS_NAME}", hint=HINT_DAMAGED)
    return checksums.members, True, verify_key is not None, signer


def _expect_clean_end(stream: TarStream) -> None:
    """Only zero padding may follow the end blocks; reading to the end also
    lets the decompressor check its own trailer."""
    zeros = 0
    while data := stream.read(CHUNK):
        zeros += len(data)
        if data.strip(b"\0") or zeros > MAX_TRAILING_ZEROS:
            raise trailing()


def _verify_key(verify_key):
    """A loaded public key, from a PublicKey or a PEM file's path."""
    if verify_key is None:
        return None
    from ferry.checkpoint import signing
    if isinstance(verify_key, signing.PublicKey):
        return verify_key
    if isinstance(verify_key, (str, os.PathLike)):
        return signing.load_public_key(verify_key)
    raise TypeError("verify_key must be a signing.PublicKey or the path of a PEM public key")


class ArchiveReader:
    """One archive, read front to back once: from a path (a file, or a FIFO)
    or from a file descriptor (a pipe, a socket: the caller's to close).
    head() gives manifest.json alone, before anything else is read: it is
    not authenticated, so use it to size staging, never to trust the archive.
    extract() then unpacks the rest and checks it all. With threaded=False,
    decompression stays in this thread (for a look at the head alone)."""

    def __init__(self, source: str | int, *, threaded: bool = True):
        if isinstance(source, int):
            self.name, fd, own = "the archive stream", source, False
        else:
            self.name, fd, own = source, _open_path(source), True
        self._fd = fd if own else -1
        try:
            seekable = stat.S_ISREG(os.fstat(fd).st_mode)
            self._source = open_source(RawInput(fd, seekable=seekable), threaded=threaded, use_pigz=threaded)
        except BaseException as exc:
            self._close_fd()
            if isinstance(exc, OSError):
                raise from_os_error(exc, f"cannot read {self.name}") from None
            raise
        self._stream = TarStream(self._source)
        self._head: tuple[ManifestV2 | Head, bytes] | None = None

    def head(self) -> ManifestV2 | Head | ForeignHead:
        if self._head is None:
            try:
                self._head = _read_head(self._stream)
            except DECODER_ERRORS as exc:
                raise decoder_failure(exc) from None
            except OSError as exc:
                raise from_os_error(exc, f"cannot read {self.name}") from None
        return self._head[0]

    def extract(self, dest_dir: str, *, progress: Progress | None = None, verify_key=None,
                budget: int | None = None, keep: Keep | None = None) -> ArchiveContents:
        """Validate and unpack the archive into the new directory dest_dir
        (made 0700), and check everything before returning: the members
        against the trailer's digests and list, the head's digest, the size
        bound, then the signature. With `verify_key` (a signing.PublicKey, or
        a PEM file's path), the archive must be signed by that key. Another
        engine's archive (head() is a ForeignHead) declares no size: `budget`
        bounds what it may unpack.

        On any failure dest_dir is removed: BadArchive for what is wrong with
        the archive, FerryError for local trouble (disk full). Progress phase:
        "read", in member bytes (against max_size for format 3). With `keep`,
        only the members it accepts are written: the rest are checked alike
        (`ferry checkpoint verify` writes none)."""
        verify_key = _verify_key(verify_key)
        try:
            os.mkdir(dest_dir, 0o700)
        except FileExistsError:
            raise Conflict(f"cannot unpack into {dest_dir}: it already exists") from None
        except FileNotFoundError:
            raise NotFound(f"cannot unpack into {dest_dir}: its parent directory does not exist") from None
        except OSError as exc:
            raise from_os_error(exc, f"cannot unpack into {dest_dir}") from None
        try:
            head = self.head()
            if isinstance(head, ForeignHead):
                if verify_key is not None:
                    raise BadArchive("the archive is another engine's checkpoint, and those carry no signature",
                                     hint=HINT_UNSIGNED)
                reporter = Reporter(progress, "read", 0)
                members = _extract_foreign(self._stream, head.first, dest_dir, reporter,
                                           budget if budget is not None else 0, keep)
                contents = ArchiveContents(head, members, False, False, None)
                reporter.total = reporter.done
            elif isinstance(head, ManifestV2):
                if verify_key is not None:
                    raise BadArchive("archive is in format 2, and format 2 archives carry no signature",
                                     hint=HINT_UNSIGNED)
                reporter = Reporter(progress, "read", head.total_size)
                contents = ArchiveContents(head, _extract_v2(self._stream, head, dest_dir, reporter, keep),
                                           False, False, None)
            else:
                reporter = Reporter(progress, "read", head.max_size)
                found = _extract_v3(self._stream, head, dest_dir, reporter, keep)
                members, signed, verified, signer = _check_v3(found, self._head[1], verify_key)
                contents = ArchiveContents(head, members, signed, verified, signer)
                reporter.total = reporter.done   # max_size may only bound it
            reporter.finish()
        except BaseException as exc:
            self._source.close()
            _remove_tree_we_made(dest_dir)
            failure = decoder_failure(exc)
            if failure is not None:
                raise failure from None
            if isinstance(exc, OSError):
                raise from_os_error(exc, f"cannot unpack {self.name} into {dest_dir}") from None
            raise
        return contents

    def close(self) -> None:
        self._source.close()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ArchiveReader":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _open_path(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"checkpoint archive {path} does not exist") from None
    except OSError as exc:
        raise from_os_error(exc, f"cannot read {path}") from None


def read_archive(path: str, dest_dir: str, *, progress: Progress | None = None,
                 verify_key=None) -> ArchiveContents:
    """ArchiveReader(path).extract(dest_dir, ...): the whole archive at once."""
    with ArchiveReader(path) as reader:
        return reader.extract(dest_dir, progress=progress, verify_key=verify_key)


def _remove_tree_we_made(path: str) -> None:
    # dest_dir is fresh and ours: no mounts can be inside, so rmtree is safe.
    try:
        shutil.rmtree(path)
    except OSError as exc:
        log.warning("could not remove %s after a failed unpack: %s", path, exc)


def read_manifest(path: str) -> ManifestV2 | Head:
    """Only the head (manifest.json), of either format: reads and decompresses
    just the archive's first member. Nothing in it is authenticated yet: use
    it to size staging (.size_bound), never to trust the archive."""
    with ArchiveReader(path, threaded=False) as reader:
        return reader.head()
