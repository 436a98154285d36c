"""Fuzzing the archive reader with hypothesis: archives of both formats,
forged (entries dropped, repeated, reordered, renamed, retyped, continued;
records edited, digests recomputed, re-signed by another key or by the
owner's), then damaged byte by byte (flips, tar header fields with their
checksum fixed, truncations, insertions) and wrapped in zstd (one or several
frames) or gzip, some damaged again after compression; and tars made from
scratch with random headers and pax records.

The property: read_archive and read_manifest either succeed or raise one of
ferry's one-line FerryError subclasses; a failed read leaves no dest_dir; a
successful one leaves exactly the members it lists; no descriptor or thread
is left behind.

The run is bounded in time, not in examples: FERRY_FUZZ_SECONDS (default 16,
shared by the tests here) keeps it inside `make test`'s budget. A longer run:
    FERRY_FUZZ_SECONDS=900 .venv/bin/python -m pytest tests/unit/test_archive_fuzz.py
(add --hypothesis-seed=N to replay a run; a failure prints its example).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
import time

import blake3
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.checkpoint.archive import manifest
from ferry.checkpoint.archive import (CHECKSUMS_NAME, MANIFEST_NAME, SIGNATURE_NAME, read_archive, read_manifest,
                                      write_archive)
from ferry.util.errors import BadArchive, FerryError
from tests.unit.test_archive import CONTAINER, HOST, memory_pages
from tests.unit.test_archive_v3 import V2_ARCHIVE, keypair

BUDGET = float(os.environ.get("FERRY_FUZZ_SECONDS", "16"))
SHARES = {"forged": 0.45, "scratch": 0.2, "bytes": 0.35}   # of the budget, per test
BATCH = settings(max_examples=40, deadline=None, database=None, derandomize=False,
                 suppress_health_check=list(HealthCheck))


def _run_for(seconds: float, run) -> int:
    """Hypothesis runs of BATCH examples until `seconds` have passed; how many."""
    deadline, runs = time.monotonic() + seconds, 0
    while True:
        run()
        runs += 1
        if time.monotonic() >= deadline:
            return runs


# ---- seeds: valid archives as entry lists -------------------------------------------

class Seeds:
    """Valid archives of each kind, as (name, data, attrs) entry lists, and the keys."""

    def __init__(self, base: str):
        keys = os.path.join(base, "keys")
        os.mkdir(keys)
        (self.owner, self.owner_pub), (self.attacker, _) = keypair(keys, "owner"), keypair(keys, "attacker")
        source = os.path.join(base, "ctr")
        os.makedirs(os.path.join(source, "checkpoint"))
        files = {"config.dump": b'{"name": "my-redis"}', "checkpoint/pages-1.img": memory_pages(20_000, 1),
                 "checkpoint/core-1.img": os.urandom(600), "checkpoint/empty.img": b"",
                 "volumes/donn\u00e9es.tar": b"non-ASCII"}
        for name, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(source, name)), exist_ok=True)
            with open(os.path.join(source, name), "wb") as f:
                f.write(data)
        self.entries: dict[str, list] = {}
        for label, signer in (("v3", None), ("v3-signed", self.owner)):
            path = write_archive(os.path.join(base, f"{label}.tar"), source, list(files), container=CONTAINER,
                                 compression="none", host=HOST, signer=signer).path
            self.entries[label] = _entries_of(open(path, "rb").read())
        # A stream's layout: a member in continued parts.
        parts = list(self.entries["v3"])
        index = next(i for i, (n, _, _) in enumerate(parts) if n == "checkpoint/pages-1.img")
        name, data, _ = parts[index]
        parts[index:index + 1] = [(name, data[:4096], {}),
                                  (name, data[4096:12288], {"pax_headers": {manifest.CONTINUE_KEY: "1"}}),
                                  (name, data[12288:], {"pax_headers": {manifest.CONTINUE_KEY: "1"}})]
        self.entries["v3-parts"] = parts
        self.entries["v2"] = _entries_of(zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(V2_ARCHIVE), read_across_frames=True).read())


def _entries_of(tar_bytes: bytes) -> list:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return [(m.name, tar.extractfile(m).read(), {}) for m in tar.getmembers()]


@pytest.fixture(scope="module")
def seeds():
    base = tempfile.mkdtemp(prefix="ferry-fuzz-seeds-")
    try:
        yield Seeds(base)
    finally:
        shutil.rmtree(base)


# ---- building and damaging ----------------------------------------------------------

def _tar(entries, tar_format=tarfile.PAX_FORMAT) -> bytes | None:
    out = io.BytesIO()
    try:
        with tarfile.open(fileobj=out, mode="w", format=tar_format) as tar:
            for name, data, attrs in entries:
                info = tarfile.TarInfo(name)
                for key, value in attrs.items():
                    setattr(info, key, value)
                info.size = len(data) if data is not None and info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
                tar.addfile(info, io.BytesIO(data) if info.size else None)
    except (ValueError, UnicodeError, OverflowError, tarfile.TarError):
        return None   # tarfile cannot write it; the byte mutations reach what it refuses
    return out.getvalue()


def _recompute(entries, seeds: Seeds, signer) -> list:
    """What an attacker does after editing: fresh digests in the trailer, and
    a signature by `signer` (None: drop it)."""
    names = [n for n, _, _ in entries]
    if MANIFEST_NAME not in names or CHECKSUMS_NAME not in names:
        return entries
    head = next(d for n, d, _ in entries if n == MANIFEST_NAME)
    members: dict[str, bytearray] = {}
    for name, data, attrs in entries:
        if name in manifest.RESERVED_NAMES or data is None or attrs.get("type", tarfile.REGTYPE) != tarfile.REGTYPE:
            continue
        members.setdefault(name, bytearray()).extend(data)
    trailer = json.dumps({"format_version": 3, "manifest_blake3": blake3.blake3(head).hexdigest(),
                          "members": [{"name": n, "size": len(d), "blake3": blake3.blake3(bytes(d)).hexdigest()}
                                      for n, d in members.items()]}).encode()
    out = [(n, trailer if n == CHECKSUMS_NAME else d, a) for n, d, a in entries if n != SIGNATURE_NAME]
    if signer is not None:
        signature = manifest.Signature.make(signer.public.raw, signer.sign(trailer)).to_json()
        out.insert(next(i for i, (n, _, _) in enumerate(out) if n == CHECKSUMS_NAME) + 1,
                   (SIGNATURE_NAME, signature, {}))
    return out


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2, 1 << 70) | st.floats(allow_nan=False)
                           | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3),
                           max_leaves=8)
NAMES = st.sampled_from(["config.dump", "checkpoint/pages-1.img", "checkpoint", "a/b/c", "../x", "/etc/x", "./a",
                         "a//b", "a/./b", MANIFEST_NAME, CHECKSUMS_NAME, SIGNATURE_NAME, "x" * 300, "v\u00e9",
                         "a\nb", "checkpoint/"]) | st.text(min_size=0, max_size=12)
TYPES = st.sampled_from([tarfile.REGTYPE, tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                         tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"V", b"S"])
PAX = st.dictionaries(st.sampled_from([manifest.CONTINUE_KEY, "FERRY.other", "path", "size", "GNU.sparse.size",
                                       "mtime", "comment", "linkpath"]),
                      st.sampled_from(["1", "0", "2", "", "-1", "99999999999999999999", "a", "../../x"])
                      | st.text(max_size=10), max_size=2)


@st.composite
def _edit_json(draw, data: bytes) -> bytes:
    try:
        record = json.loads(data)
    except (ValueError, RecursionError):   # an earlier edit's garbage
        record = None
    if not isinstance(record, dict) or draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from([b"", b"{", b"[]", b"null", b'{"a": 1, "a": 2}', b"NaN", b"[" * 5000,
                                     b"\xff\xfe", b'{"format_version": 3}']))
    how = draw(st.sampled_from(["set", "drop", "add", "nested", "duplicate"]))
    keys = sorted(record)
    if how == "set" and keys:
        record[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
    elif how == "drop" and keys:
        record.pop(draw(st.sampled_from(keys)))
    elif how == "add":
        record[draw(st.text(max_size=10))] = draw(JSON_VALUES)
    elif how == "nested":
        lists = [k for k in keys if isinstance(record[k], list) and record[k]]
        dicts = [k for k in keys if isinstance(record[k], dict) and record[k]]
        if lists:
            items = record[draw(st.sampled_from(lists))]
            item = items[draw(st.integers(0, len(items) - 1))]
            if isinstance(item, dict) and item:
                item[draw(st.sampled_from(sorted(item)))] = draw(JSON_VALUES | NAMES)
        elif dicts:
            inner = record[draw(st.sampled_from(dicts))]
            inner[draw(st.sampled_from(sorted(inner)))] = draw(JSON_VALUES)
    text = json.dumps(record).encode()
    if how == "duplicate" and keys:
        key = json.dumps(draw(st.sampled_from(keys)))
        text = text.replace(b"{", b"{" + key.encode() + b": 1, ", 1)
    return text


@st.composite
def forged_entries(draw, seeds: Seeds):
    entries = list(draw(st.sampled_from([seeds.entries[k] for k in sorted(seeds.entries)])))
    for _ in range(draw(st.integers(0, 3))):
        if not entries:
            break
        i = draw(st.integers(0, len(entries) - 1))
        name, data, attrs = entries[i]
        how = draw(st.sampled_from(["drop", "repeat", "swap", "rename", "retype", "pax", "data", "json",
                                    "append", "split"]))
        if how == "drop":
            del entries[i]
        elif how == "repeat":
            entries.insert(draw(st.integers(0, len(entries))), entries[i])
        elif how == "swap":
            j = draw(st.integers(0, len(entries) - 1))
            entries[i], entries[j] = entries[j], entries[i]
        elif how == "rename":
            entries[i] = (draw(NAMES), data, attrs)
        elif how == "retype":
            entries[i] = (name, data, {**attrs, "type": draw(TYPES), "linkname": draw(NAMES)})
        elif how == "pax":
            entries[i] = (name, data, {**attrs, "pax_headers": draw(PAX)})
        elif how == "data" and data:
            at = draw(st.integers(0, len(data) - 1))
            entries[i] = (name, data[:at] + draw(st.binary(max_size=8)) + data[at + 1:], attrs)
        elif how == "json":
            entries[i] = (name, draw(_edit_json(data or b"{}")), attrs)
        elif how == "append":
            entries.insert(i, (draw(NAMES), draw(st.binary(max_size=64)), {}))
        elif how == "split" and data and len(data) > 1:
            at = draw(st.integers(1, len(data) - 1))
            entries[i:i + 1] = [(name, data[:at], attrs),
                                (name, data[at:], {"pax_headers": {manifest.CONTINUE_KEY: "1"}})]
    resign = draw(st.sampled_from(["keep", "recompute", "owner", "attacker"]))
    if resign != "keep":
        entries = _recompute(entries, seeds, {"recompute": None, "owner": seeds.owner,
                                              "attacker": seeds.attacker}[resign])
    return entries


@st.composite
def scratch_entries(draw, seeds: Seeds):
    """Tars made from nothing: a head (valid or not), random entries, a trailer."""
    head = seeds.entries["v3"][0][1]
    if draw(st.booleans()):
        head = draw(_edit_json(head))
    entries = [(MANIFEST_NAME, head, {})] if draw(st.integers(0, 9)) else []
    for _ in range(draw(st.integers(0, 5))):
        entries.append((draw(NAMES), draw(st.binary(max_size=600)),
                        {"type": draw(TYPES), "pax_headers": draw(PAX), "linkname": draw(NAMES),
                         "mode": draw(st.integers(0, 0o7777))}))
    entries.append((CHECKSUMS_NAME, b"{}", {}))
    if draw(st.booleans()):
        entries = _recompute(entries, seeds, draw(st.sampled_from([None, seeds.owner])))
    return entries


HEADER_FIELDS = [(0, 100), (100, 8), (124, 12), (136, 12), (156, 1), (157, 100), (257, 8), (345, 155)]
NUMBERS = st.sampled_from([b"0", b"777", b"77777777777", b"99999999", b"-1", b" 12 ", b"\x80" + bytes(10) + b"\x01",
                           b"\xff" * 12, b"\x80" + b"\xff" * 11, b"", b"1" * 12])


@st.composite
def damaged(draw, tar: bytes) -> bytes:
    """Byte-level damage to a tar, then a wrapper, then maybe damage again."""
    data = bytearray(tar)
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        how = draw(st.sampled_from(["flip", "header", "header", "truncate", "insert", "delete", "zeros"]))
        at = draw(st.integers(0, len(data) - 1))
        if how == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif how == "header":
            headers = [i for i in range(0, len(data) - 511, 512) if data[i + 257:i + 262] == b"ustar"]
            if headers:
                start = draw(st.sampled_from(headers))
                offset, width = draw(st.sampled_from(HEADER_FIELDS))
                value = draw(NUMBERS | st.binary(max_size=width))[:width]
                data[start + offset:start + offset + width] = value.ljust(width, b"\0")
                if draw(st.integers(0, 9)):   # mostly a checksum that matches, to get past it
                    data[start + 148:start + 156] = b" " * 8
                    data[start + 148:start + 156] = b"%06o\0 " % sum(data[start:start + 512])
        elif how == "truncate":
            del data[at:]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=1024))
        elif how == "delete":
            del data[at:at + draw(st.integers(1, 1024))]
        elif how == "zeros":
            data[at:at + 1024] = bytes(len(data[at:at + 1024]))
    wrapper = draw(st.sampled_from(["none", "zstd", "zstd-frames", "gzip", "gzip-members"]))
    blob = bytes(data)
    if wrapper == "zstd":
        blob = zstandard.ZstdCompressor(write_checksum=draw(st.booleans())).compress(blob)
    elif wrapper == "zstd-frames" and blob:
        cut = draw(st.integers(0, len(blob)))
        blob = b"".join(zstandard.ZstdCompressor(write_content_size=draw(st.booleans())).compress(part)
                        for part in (blob[:cut], blob[cut:]))
    elif wrapper == "gzip":
        blob = gzip.compress(blob, compresslevel=1)
    elif wrapper == "gzip-members" and blob:
        cut = draw(st.integers(0, len(blob)))
        blob = gzip.compress(blob[:cut], compresslevel=1) + gzip.compress(blob[cut:], compresslevel=1)
    if wrapper != "none" and blob and draw(st.integers(0, 3)) == 0:
        damaged_blob = bytearray(blob)
        how = draw(st.sampled_from(["flip", "truncate", "append"]))
        at = draw(st.integers(0, len(blob) - 1))
        if how == "flip":
            damaged_blob[at] ^= draw(st.integers(1, 255))
        elif how == "truncate":
            del damaged_blob[at:]
        else:
            damaged_blob += draw(st.binary(min_size=1, max_size=64))
        blob = bytes(damaged_blob)
    return blob


# ---- the property ----------------------------------------------------------------------

def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _one_line(exc: FerryError) -> None:
    assert "\n" not in exc.message, exc.message
    assert not isinstance(exc, BadArchive) or exc.hint, f"no hint: {exc.message}"


def _check(blob: bytes, verify_key=None) -> None:
    base = tempfile.mkdtemp(prefix="ferry-fuzz-")
    try:
        path, dest = os.path.join(base, "a.tar"), os.path.join(base, "dest")
        with open(path, "wb") as f:
            f.write(blob)
        fds, threads = _fds(), threading.active_count()
        try:
            read_manifest(path)
        except FerryError as exc:
            _one_line(exc)
        try:
            contents = read_archive(path, dest, verify_key=verify_key)
        except FerryError as exc:
            _one_line(exc)
            assert not os.path.exists(dest), f"a refused archive left {dest} ({exc.message})"
        else:
            made = {os.path.relpath(os.path.join(d, n), dest) for d, dirs, files in os.walk(dest) for n in files}
            assert made == {m.name for m in contents.members}
            for member in contents.members:
                assert os.lstat(os.path.join(dest, member.name)).st_size == member.size
            if verify_key is not None:
                assert contents.verified and contents.signer == verify_key.fingerprint
            else:
                assert not contents.verified
        # A subset, not equal: the collector may close files of earlier tests meanwhile.
        assert _fds() <= fds, "a descriptor was left open"
        deadline = time.monotonic() + 5   # pools and prefetchers end just after they are closed
        while threading.active_count() > threads and time.monotonic() < deadline:
            time.sleep(0.001)
        assert threading.active_count() <= threads, "a thread was left running"
    finally:
        shutil.rmtree(base)


def test_forged_archives(seeds):
    @BATCH
    @given(entries=forged_entries(seeds), tar_format=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
           keyed=st.booleans(), data=st.data())
    def run(entries, tar_format, keyed, data):
        tar = _tar(entries, tar_format)
        if tar is not None:
            blob = data.draw(damaged(tar)) if data.draw(st.integers(0, 3)) == 0 else tar
            _check(blob, seeds.owner_pub if keyed else None)

    _run_for(BUDGET * SHARES["forged"], run)


def test_tars_from_scratch(seeds):
    @BATCH
    @given(entries=scratch_entries(seeds), keyed=st.booleans())
    def run(entries, keyed):
        tar = _tar(entries)
        if tar is not None:
            _check(tar, seeds.owner_pub if keyed else None)

    _run_for(BUDGET * SHARES["scratch"], run)


def test_damaged_bytes(seeds):
    tars = {label: _tar(entries) for label, entries in seeds.entries.items()}

    @BATCH
    @given(label=st.sampled_from(sorted(tars)), data=st.data(), keyed=st.booleans())
    def run(label, data, keyed):
        _check(data.draw(damaged(tars[label])), seeds.owner_pub if keyed else None)

    _run_for(BUDGET * SHARES["bytes"], run)


def test_the_seeds_themselves_are_read(seeds):
    """The fuzzers start from archives the reader takes."""
    for label, entries in seeds.entries.items():
        _check(_tar(entries), seeds.owner_pub if label == "v3-signed" else None)
