"""The tar layout of an archive: headers as ferry writes them, and the
hostile-input parser that reads them back with bounded extended headers
(pax, GNU long names), checked checksums and octal fields, whatever the
writer. TarStream walks the decompressed bytes without copying members."""

from __future__ import annotations

import re
import tarfile
from typing import Iterator, NamedTuple

from ferry.checkpoint.archive.manifest import CONTINUE_KEY, HINT_DAMAGED, HINT_FOREIGN, shown, truncated
from ferry.util.errors import BadArchive

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
TAR_END = bytes(2 * BLOCK)

# Bounds that keep a hostile tar from making the reader allocate or loop.
MAX_EXTENDED_HEADER = 64 << 10     # one pax or GNU long-name header
MAX_EXTENDED_PER_MEMBER = 4

POSIX_MAGIC = b"ustar\x0000"
GNU_MAGIC = b"ustar  \x00"
OCTAL_RE = re.compile(rb"^[0-7]+$")
DECIMAL_RE = re.compile(r"^[0-9]{1,20}\Z")


def padding(size: int) -> int:
    return -size % BLOCK


# ---- writing ------------------------------------------------------------------

def tar_header(name: str, size: int, mtime: int, form: int = tarfile.PAX_FORMAT, *,
               continued: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = mtime
    info.type = tarfile.REGTYPE
    info.uname = info.gname = ""
    if continued:
        info.pax_headers = {CONTINUE_KEY: "1"}
    return info.tobuf(form, "utf-8", "strict")


def fixed_header(name: str, size: int, mtime: int) -> bytes:
    """One 512-byte block whatever the size (GNU base-256 above 8 GiB), so
    its room can be left before the size is known."""
    header = tar_header(name, size, mtime, tarfile.GNU_FORMAT)
    if len(header) != BLOCK:
        raise ValueError(f"cannot follow {shown(name)}: its name needs more than one tar header block")
    return header


# ---- reading -------------------------------------------------------------------

class TarStream:
    """The decompressed tar, in order: headers as bytes, member data as views."""

    def __init__(self, source):
        self._source = source
        self._chunk = b""
        self._pos = 0
        self._ended = False

    def _available(self) -> int:
        if self._pos == len(self._chunk):
            if self._ended:
                return 0
            if self._chunk:
                self._source.release(self._chunk)
                self._chunk = b""
            data = self._source.read()
            if not data:
                self._ended = True
                return 0
            self._chunk, self._pos = data, 0
        return len(self._chunk) - self._pos

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; fewer only at the end of the stream."""
        parts = []
        while size:
            count = min(self._available(), size)
            if not count:
                break
            parts.append(self._chunk[self._pos:self._pos + count])
            self._pos += count
            size -= count
        return b"".join(parts)

    def read_exact(self, size: int) -> bytes:
        data = self.read(size)
        if len(data) != size:
            raise truncated()
        return data

    def views(self, size: int) -> Iterator[memoryview]:
        """Exactly `size` bytes as views of the decompressed chunks (no copies)."""
        while size:
            count = min(self._available(), size)
            if not count:
                raise truncated()
            yield memoryview(self._chunk)[self._pos:self._pos + count]
            self._pos += count
            size -= count

    def skip(self, size: int) -> None:
        for _ in self.views(size):
            pass


class Entry(NamedTuple):
    name: str
    kind: str      # file | dir | hardlink | symlink | device | fifo | "type X"
    size: int
    continued: bool = False   # format 3: more of the member before it


ENTRY_KINDS = {b"0": "file", b"\0": "file", b"5": "dir", b"1": "hardlink", b"2": "symlink",
               b"3": "device", b"4": "device", b"6": "fifo"}
REFUSED_KINDS = {"hardlink": "hardlinks are not allowed", "symlink": "symlinks are not allowed",
                 "device": "device nodes are not allowed", "fifo": "fifos are not allowed"}


def _corrupt(what: str) -> BadArchive:
    return BadArchive(f"archive has a corrupt tar header ({what})", hint=HINT_DAMAGED)


def _header_number(field: bytes, what: str) -> int:
    if field[0] & 0x80:   # GNU base-256; 0xff would be negative
        if field[0] != 0x80:
            raise _corrupt(what)
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not OCTAL_RE.match(text):
        raise _corrupt(what)
    return int(text, 8)


def _check_header(block: bytes, first: bool) -> None:
    if block[257:265] not in (POSIX_MAGIC, GNU_MAGIC):
        if first:
            raise BadArchive("archive is not a tar file", hint=HINT_FOREIGN)
        raise _corrupt("magic")
    # The checksum field counts as eight spaces (8 * 32 = 256).
    if _header_number(block[148:156], "checksum") != sum(block[:148]) + 256 + sum(block[156:]):
        raise _corrupt("checksum")


def _field_text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _ustar_name(block: bytes) -> str:
    name = _field_text(block[0:100])
    prefix = _field_text(block[345:500]) if block[257:265] == POSIX_MAGIC else ""
    return f"{prefix}/{name}" if prefix else name


def _pax_records(data: bytes) -> dict[str, str]:
    """`LEN key=value\\n` records of a pax extended header."""
    records, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        digits = data[pos:space] if space > pos else b""
        if not DECIMAL_RE.match(digits.decode("ascii", "replace")):
            raise _corrupt("pax record")
        end = pos + int(digits)
        if end <= space or end > len(data) or data[end - 1:end] != b"\n":
            raise _corrupt("pax record")
        key, equals, value = data[space + 1:end - 1].partition(b"=")
        if not equals:
            raise _corrupt("pax record")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


def next_entry(stream: TarStream, *, first: bool = False) -> Entry | None:
    """The next member's header, pax and GNU long names applied; None at the end."""
    pax: dict[str, str] = {}
    long_name = None
    for _ in range(MAX_EXTENDED_PER_MEMBER + 1):
        block = stream.read(BLOCK)
        if not block and first:
            raise BadArchive("archive is empty", hint=HINT_FOREIGN)
        if len(block) < BLOCK:
            raise truncated()
        if block == ZERO_BLOCK:
            if pax or long_name is not None:
                raise _corrupt("extended header without a member")
            if stream.read_exact(BLOCK) != ZERO_BLOCK:
                raise _corrupt("end of archive")
            return None
        _check_header(block, first)
        first = False
        typeflag = block[156:157]
        size = _header_number(block[124:136], "size")
        if typeflag in (b"x", b"L"):
            if size > MAX_EXTENDED_HEADER:
                raise _corrupt("oversized extended header")
            data = stream.read_exact(size)
            stream.skip(padding(size))
            if typeflag == b"x":
                pax.update(_pax_records(data))
            else:
                long_name = _field_text(data)
            continue
        name = pax.get("path") or (long_name if long_name is not None else _ustar_name(block))
        if pax.get("size"):
            if not DECIMAL_RE.match(pax["size"]):
                raise _corrupt("pax size")
            size = int(pax["size"])
        if any(key.startswith("GNU.sparse.") for key in pax):
            raise BadArchive(f"member {shown(name)}: sparse files are not allowed", hint=HINT_DAMAGED)
        continued = False
        for key in (k for k in pax if k.startswith("FERRY.")):
            if key != CONTINUE_KEY or pax[key] != "1":
                raise _corrupt(f"unknown pax record {shown(key, 40)}")
            continued = True
        return Entry(name, ENTRY_KINDS.get(typeflag, f"type {typeflag.decode('latin-1')!r}"), size, continued)
    raise _corrupt("too many extended headers")
