"""The checkpoint archive: records, compression choice, round trips, atomic
writes, and refusal of truncated, tampered and hostile archives. The hostile
tar builder here writes format 2 (the tar parser is the same for both
formats); test_archive_v3.py forges format 3 archives."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile

import pytest
import xxhash
import zstandard

from ferry.checkpoint.archive import codecs, manifest, reader, tarfmt
from ferry.checkpoint.archive import (CHECKSUMS_NAME, MANIFEST_NAME, Head, HostInfo, ManifestV2, MemberV2,
                                      compression_for, read_archive, read_manifest, write_archive)
from ferry.util.errors import BadArchive, Conflict, FerryError, NotFound, UsageError

HOST = HostInfo(arch="x86_64", kernel="6.1.0-test", cpu={"x86_entry": [{"vendor_id": "INTEL", "model": 207}]},
                criu_version="4.2.1", runc_version="1.1.5", cgroup_mode="hybrid", hostname="host-a",
                cpuinfo_image=base64.b64encode(b"fake cpuinfo image").decode())
CONTAINER = {"id": "a" * 64, "name": "my-redis", "image": "docker.io/library/redis:7",
             "image_id": "b" * 64, "image_digest": "sha256:" + "c" * 64}
SUFFIX = {"zstd": "tar.zst", "gzip": "tar.gz", "none": "tar"}
LONG_NAME = "volumes/" + "v" * 120 + ".tar"   # past ustar's 100 bytes: needs a pax path


def memory_pages(size: int, seed: int) -> bytes:
    """Memory-like content: some zero pages, some repeated, some random."""
    rnd = hashlib.sha256(str(seed).encode()).digest() * 128
    pages = [bytes(4096), rnd[:4096], os.urandom(4096)]
    return b"".join(pages[i % 3] for i in range(size // 4096)) + os.urandom(size % 4096)


@pytest.fixture
def source(tmp_path):
    """A small checkpoint directory and its member names, in archive order."""
    root = tmp_path / "ctr"
    files = {
        "config.dump": b'{"name": "my-redis"}',
        "checkpoint/pages-1.img": memory_pages(300_000, 1),
        "checkpoint/core-1.img": os.urandom(5000),
        "checkpoint/empty.img": b"",
        "deleted.files": b"[]",
        LONG_NAME: memory_pages(20_000, 2),
        "volumes/donn\u00e9es.tar": b"non-ASCII name",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(root), list(files), files


def _write(tmp_path, source, compression: str, **kwargs):
    root, names, _ = source
    path = str(tmp_path / f"out.{SUFFIX[compression]}")
    return write_archive(path, root, names, container=CONTAINER, compression=compression, host=HOST, **kwargs)


def tar_bytes_of(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(codecs.ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    if data.startswith(codecs.GZIP_MAGIC):
        return gzip.decompress(data)
    return data


def listing(directory) -> set[str]:
    return {os.path.join(d, n) for d, dirs, files in os.walk(directory) for n in dirs + files}


def assert_refused(path, dest_parent, match: str) -> BadArchive:
    """read_archive refuses `path` and leaves dest_parent as it found it."""
    before = listing(dest_parent)
    with pytest.raises(BadArchive, match=match) as caught:
        read_archive(str(path), os.path.join(str(dest_parent), "dest"))
    assert listing(dest_parent) == before, "a refused archive left files behind"
    assert "\n" not in caught.value.message and caught.value.hint
    return caught.value


def _manifest(members: list[MemberV2]) -> ManifestV2:
    return ManifestV2(2, "2024-05-01T12:00:00Z", HOST, dict(CONTAINER), "none", tuple(members))


def _member(name: str, data: bytes) -> MemberV2:
    return MemberV2(name, len(data), xxhash.xxh3_128(data).hexdigest())


def add_member(tar: tarfile.TarFile, name: str, data: bytes | None = None, **attrs) -> None:
    info = tarfile.TarInfo(name)
    for key, value in attrs.items():
        setattr(info, key, value)
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def hostile(path, entries, manifest: ManifestV2 | str | None = None, *, manifest_first: bool = True,
            tar_format=tarfile.PAX_FORMAT) -> str:
    """A plain format 2 tar built with tarfile: manifest.json, then `entries`
    (name, data or None, TarInfo attributes). The manifest lists every
    regular entry that has data, unless one is given."""
    if manifest is None:
        manifest = _manifest([_member(n, d) for n, d, attrs in entries
                              if d is not None and attrs.get("type", tarfile.REGTYPE) == tarfile.REGTYPE])
    text = manifest if isinstance(manifest, str) else manifest.to_json()
    with tarfile.open(str(path), "w", format=tar_format) as tar:
        if not manifest_first:
            name, data, attrs = entries[0]
            add_member(tar, name, data, **attrs)
            entries = entries[1:]
        add_member(tar, MANIFEST_NAME, text.encode())
        for name, data, attrs in entries:
            add_member(tar, name, data, **attrs)
    return str(path)


# ---- format 2's manifest ------------------------------------------------------

def test_manifest_v2_round_trip():
    manifest = _manifest([_member("checkpoint/pages-1.img", b"x" * 10), _member("config.dump", b"{}")])
    assert ManifestV2.from_json(manifest.to_json()) == manifest
    assert manifest.total_size == manifest.size_bound == 12


def _manifest_dict() -> dict:
    return json.loads(_manifest([_member("checkpoint/core-1.img", b"core"), _member("config.dump", b"{}")])
                      .to_json())


def _at(data, path: str):
    """The container of the last key of a dotted path, and that key."""
    *parents, last = path.split(".")
    for key in parents:
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data, int(last) if isinstance(data, list) else last


def _set(path: str, value):
    def change(data):
        target, key = _at(data, path)
        target[key] = value
    return change


def _drop(path: str):
    def change(data):
        target, key = _at(data, path)
        del target[key]
    return change


@pytest.mark.parametrize("change, match", [
    (_set("format_version", 1), "unsupported format version 1"),
    (_set("format_version", "2"), "unsupported format version"),
    (_set("format_version", True), "unsupported format version"),
    (_drop("created"), "lacks created"),
    (_set("surprise", 1), "unknown surprise"),
    (_set("created", "yesterday"), "RFC 3339"),
    (_set("created", "2024-02-31T00:00:00Z"), "invalid"),
    (_set("compression", "lz4"), "compression"),
    (_set("members", {}), "members must be a list"),
    (_set("members.0.size", "4"), "size"),
    (_set("members.0.size", -1), "size"),
    (_set("members.0.size", 4.0), "size"),
    (_set("members.0.size", False), "size"),
    (_set("members.0.xxh3_128", "A" * 32), "xxh3_128"),
    (_drop("members.0.xxh3_128"), "lacks xxh3_128"),
    (_set("members.1.name", "checkpoint/core-1.img"), "listed twice"),
    (_set("members.0.name", "../escape"), "unsafe path"),
    (_set("members.0.name", "/etc/passwd"), "absolute path"),
    (_set("members.0.name", "a/./b"), "not normalised"),
    (_set("members.0.name", "a\x00b"), "control character"),
    (_set("members.0.name", MANIFEST_NAME), "reserved"),
    (_set("members.1.name", "checkpoint/core-1.img/inner"), "both a file and a directory"),
    (_set("container.id", "short"), "container.id"),
    (_set("container.name", "bad name!"), "container.name"),
    (_set("container.image_digest", "md5:00"), "image_digest"),
    (_drop("container.image"), "lacks image"),
    (_drop("host.cpuinfo_image"), "missing cpuinfo_image"),
    (_set("host.cpu", []), "host.cpu"),
    (_set("host.cpuinfo_image", "not base64!"), "base64"),
    (_set("host.kernel", 6), "host.kernel"),
])
def test_manifest_v2_parsing_is_strict(change, match):
    data = _manifest_dict()
    change(data)
    with pytest.raises(BadArchive, match=match):
        ManifestV2.from_json(json.dumps(data))
    with pytest.raises(BadArchive, match=match):
        manifest.parse_head(json.dumps(data).encode())


@pytest.mark.parametrize("text, match", [
    ('{"format_version": 1, "format_version": 1}', "appears twice"),
    ('{"format_version": NaN}', "not a number"),
    ("[]", "must be an object"),
    ("{", "invalid"),
    ("[" * 100_000, "invalid"),
])
def test_manifest_rejects_malformed_json(text, match):
    with pytest.raises(BadArchive, match=match):
        ManifestV2.from_json(text)
    with pytest.raises(BadArchive, match=match):
        Head.from_json(text)


# ---- compression choice -----------------------------------------------------

@pytest.mark.parametrize("path, explicit, expected", [
    ("ckpt.tar.gz", None, "gzip"), ("/a/b/ckpt.tgz", None, "gzip"), ("CKPT.TAR.GZ", None, "gzip"),
    ("ckpt.tar.zst", None, "zstd"), ("ckpt.tar.zstd", None, "zstd"), ("ckpt.tzst", None, "zstd"),
    ("ckpt.tar", None, "none"),
    ("ckpt.tar.gz", "zstd", "zstd"), ("whatever", "none", "none"), ("ckpt.bin", "gzip", "gzip"),
])
def test_compression_for(path, explicit, expected):
    assert compression_for(path, explicit) == expected


@pytest.mark.parametrize("path, explicit, match", [
    ("ckpt.zip", None, "cannot tell the compression of ckpt.zip"),
    ("ckpt", None, "cannot tell"),
    (".tar", None, "cannot tell"),
    ("ckpt.tar.gz", "lz4", "unknown compression"),
])
def test_compression_for_refuses(path, explicit, match):
    with pytest.raises(UsageError, match=match) as caught:
        compression_for(path, explicit)
    if explicit is None:
        assert caught.value.hint == "name it .tar.gz, .tar.zst or .tar, or pass --compress"


# ---- round trips --------------------------------------------------------------

@pytest.fixture(params=["zstd", "gzip", "gzip-zlib", "none"])
def compression(request, monkeypatch):
    """Each compression; gzip-zlib is gzip on a host without pigz."""
    if request.param == "gzip-zlib":
        monkeypatch.setattr(codecs, "find_pigz", lambda: None)
        return "gzip"
    if request.param == "gzip" and codecs.find_pigz() is None:
        pytest.skip("pigz is not installed (make setup installs it)")
    return request.param


def test_round_trip(tmp_path, source, compression):
    root, names, files = source
    calls = []
    result = _write(tmp_path, source, compression, progress=lambda *call: calls.append(call))
    assert result.size == os.path.getsize(result.path)
    assert stat.S_IMODE(os.stat(result.path).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["ctr", os.path.basename(result.path)]

    with tarfile.open(fileobj=io.BytesIO(tar_bytes_of(result.path))) as tar:
        assert tar.getnames() == [MANIFEST_NAME, *names, CHECKSUMS_NAME]
    total = sum(map(len, files.values()))
    assert calls[0] == ("write", 0, total) and calls[-1] == ("write", total, total)
    assert result.write_seconds > 0 and result.streamed == 0 and result.signer is None

    dest = tmp_path / "dest"
    read_calls = []
    contents = read_archive(result.path, str(dest), progress=lambda *call: read_calls.append(call))
    assert [m.name for m in contents.members] == names
    assert [m.size for m in contents.members] == [len(files[n]) for n in names]
    assert contents.format_version == 3 and contents.head.digest == "blake3"
    assert contents.head.max_size == contents.head.size_bound == contents.total_size == total
    assert (contents.signed, contents.verified, contents.signer) == (False, False, None)
    assert contents.compression == compression
    assert contents.container == CONTAINER and contents.host == HOST
    assert read_calls[-1] == ("read", total, total)
    assert all(done <= total for _, done, total in read_calls)
    for name, data in files.items():
        path = dest / name
        assert path.read_bytes() == data
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(dest / "checkpoint").st_mode) == 0o700
    assert listing(dest) == {str(dest / n) for n in names} | {str(dest / d) for d in ("checkpoint", "volumes")}
    assert read_manifest(result.path) == contents.head


@pytest.mark.parametrize("compression, flag", [("gzip", "-z"), ("none", ""), ("zstd", "--zstd")])
def test_standard_tools_read_the_archive(tmp_path, source, compression, flag):
    """tar and gzip/zstd read a ferry archive; its records are plain JSON members."""
    tool = {"gzip": "gzip", "zstd": "zstd", "none": "tar"}[compression]
    if shutil.which("tar") is None or shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    _, names, files = source
    path = _write(tmp_path, source, compression).path
    out = tmp_path / "by-tar"
    out.mkdir()
    subprocess.run(["tar", "-x", *([flag] if flag else []), "-f", path, "-C", str(out)], check=True)
    assert json.loads((out / MANIFEST_NAME).read_text())["format_version"] == 3
    assert json.loads((out / CHECKSUMS_NAME).read_text())["members"][0]["name"] == names[0]
    for name, data in files.items():
        assert (out / name).read_bytes() == data


def test_archive_is_0600_whatever_the_umask(tmp_path, source):
    old = os.umask(0)
    try:
        result = _write(tmp_path, source, "none")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(result.path).st_mode) == 0o600


def test_write_replaces_an_old_archive(tmp_path, source):
    path = tmp_path / "out.tar.zst"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    _write(tmp_path, source, "zstd")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_manifest(str(path)).compression == "zstd"


def test_compressed_stream_of_several_frames_or_members_is_read(tmp_path, source):
    """Other tools write concatenated zstd frames or gzip members; both are valid."""
    _, _, files = source
    plain = tar_bytes_of(_write(tmp_path, source, "none").path)
    half = len(plain) // 2
    for name, blob in (("frames.tar.zst", zstandard.ZstdCompressor().compress(plain[:half])
                        + zstandard.ZstdCompressor().compress(plain[half:])),
                       ("members.tar.gz", gzip.compress(plain[:half]) + gzip.compress(plain[half:]))):
        (tmp_path / name).write_bytes(blob)
        read_archive(str(tmp_path / name), str(tmp_path / f"dest-{name}"))
        assert (tmp_path / f"dest-{name}" / "checkpoint/pages-1.img").read_bytes() == files["checkpoint/pages-1.img"]


def test_gnu_format_and_directory_entries_are_accepted(tmp_path):
    data = {"checkpoint/" + "p" * 150 + ".img": b"pages", "config.dump": b"{}"}
    path = tmp_path / "gnu.tar"
    entries = [("checkpoint/", None, {"type": tarfile.DIRTYPE})] + [(n, d, {}) for n, d in data.items()]
    hostile(path, entries, tar_format=tarfile.GNU_FORMAT)
    contents = read_archive(str(path), str(tmp_path / "dest"))
    assert {m.name for m in contents.members} == set(data)
    assert contents.format_version == 2 and not contents.signed and not contents.verified
    for name, content in data.items():
        assert (tmp_path / "dest" / name).read_bytes() == content


# ---- writing: atomicity and input checks -----------------------------------------

def test_source_vanishing_mid_write_keeps_the_old_archive(tmp_path, source):
    root, names, _ = source
    path = tmp_path / "out.tar.zst"
    path.write_bytes(b"old archive")

    def progress(phase, done, total):
        if phase == "write" and os.path.exists(os.path.join(root, "deleted.files")):
            os.unlink(os.path.join(root, "deleted.files"))

    with pytest.raises(NotFound, match="deleted.files"):
        write_archive(str(path), root, names, container=CONTAINER, compression="zstd", host=HOST,
                      progress=progress)
    assert path.read_bytes() == b"old archive"
    assert sorted(os.listdir(tmp_path)) == ["ctr", "out.tar.zst"]


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_source_changing_while_archived_is_refused(tmp_path, source, compression):
    root, names, _ = source

    def progress(phase, done, total):
        if phase == "write" and done == 0:
            with open(os.path.join(root, "checkpoint/core-1.img"), "ab") as f:
                f.write(b"more")

    with pytest.raises(FerryError, match="core-1.img changed while the archive was being written"):
        _write(tmp_path, source, compression, progress=progress)
    assert sorted(os.listdir(tmp_path)) == ["ctr"]


@pytest.mark.parametrize("names, error, match", [
    (["../outside"], ValueError, "unsafe path"),
    (["/etc/passwd"], ValueError, "absolute path"),
    ([MANIFEST_NAME], ValueError, "reserved"),
    (["checksums.json"], ValueError, "reserved"),
    (["checksums.sig"], ValueError, "reserved"),
    (["config.dump", "config.dump"], ValueError, "twice"),
    (["absent"], NotFound, "absent"),
    (["link"], FerryError, "link"),
    (["checkpoint"], FerryError, "not a regular file"),
])
def test_write_refuses_bad_names(tmp_path, source, names, error, match):
    root, _, _ = source
    os.symlink("config.dump", os.path.join(root, "link"))
    with pytest.raises(error, match=match):
        write_archive(str(tmp_path / "out.tar"), root, names, container=CONTAINER, compression="none", host=HOST)
    assert sorted(os.listdir(tmp_path)) == ["ctr"]


def test_write_refuses_bad_container_and_compression(tmp_path, source):
    root, names, _ = source
    with pytest.raises(ValueError, match="container"):
        write_archive(str(tmp_path / "a.tar"), root, names, container={"id": "x"}, compression="none", host=HOST)
    with pytest.raises(UsageError, match="unknown compression"):
        write_archive(str(tmp_path / "a.tar"), root, names, container=CONTAINER, compression="xz", host=HOST)
    with pytest.raises(NotFound, match="does not exist"):
        write_archive(str(tmp_path / "no/dir/a.tar"), root, names, container=CONTAINER, compression="none",
                      host=HOST)


# ---- reading: refusals -------------------------------------------------------------

@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_truncated_archive_is_refused(tmp_path, source, compression):
    data = open(_write(tmp_path, source, compression).path, "rb").read()
    cut_dir = tmp_path / "cuts"
    cut_dir.mkdir()
    for cut in sorted({1, 511, 512, 1024, 3000, len(data) // 3, len(data) // 2, len(data) - 513,
                       len(data) - 8, len(data) - 1}):
        path = cut_dir / f"cut-{cut}.{SUFFIX[compression]}"
        path.write_bytes(data[:cut])
        assert_refused(path, tmp_path, "^archive is truncated$")


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_trailing_garbage_is_refused(tmp_path, source, compression):
    path = _write(tmp_path, source, compression).path
    with open(path, "ab") as f:
        f.write(b"garbage after the end")
    assert_refused(path, tmp_path, "trailing data")


def test_flipped_byte_in_a_member_is_refused(tmp_path, source):
    path = _write(tmp_path, source, "none").path
    data = bytearray(open(path, "rb").read())
    data[data.index(b"non-ASCII name")] ^= 0x01
    open(path, "wb").write(bytes(data))
    assert_refused(path, tmp_path, r"^member volumes/donn\u00e9es.tar: checksum mismatch$")


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_flipped_byte_in_compressed_data_is_refused(tmp_path, source, compression):
    path = _write(tmp_path, source, compression).path
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x10
    open(path, "wb").write(bytes(data))
    assert_refused(path, tmp_path, "corrupt|checksum|truncated|trailing|tar header")


def test_member_not_in_the_manifest_is_refused(tmp_path):
    path = hostile(tmp_path / "a.tar", [("config.dump", b"{}", {}), ("extra.img", b"x", {})],
                   _manifest([_member("config.dump", b"{}")]))
    assert_refused(path, tmp_path, "^member extra.img: not listed in the manifest$")


def test_missing_member_is_refused(tmp_path):
    path = hostile(tmp_path / "a.tar", [("config.dump", b"{}", {})],
                   _manifest([_member("config.dump", b"{}"), _member("checkpoint/pages-1.img", b"p")]))
    assert_refused(path, tmp_path, "^member checkpoint/pages-1.img: missing$")


def test_member_appearing_twice_is_refused(tmp_path):
    path = hostile(tmp_path / "a.tar", [("config.dump", b"{}", {}), ("config.dump", b"{}", {})],
                   _manifest([_member("config.dump", b"{}")]))
    assert_refused(path, tmp_path, "^member config.dump: appears twice$")
    path = hostile(tmp_path / "b.tar", [("config.dump", b"{}", {}), (MANIFEST_NAME, b"{}", {})],
                   _manifest([_member("config.dump", b"{}")]))
    assert_refused(path, tmp_path, f"^member {MANIFEST_NAME}: appears twice$")


@pytest.mark.parametrize("name, match", [
    ("../escape", "^member ../escape: unsafe path$"),
    ("checkpoint/../../escape", "unsafe path"),
    ("/tmp/absolute-escape", "absolute path"),
    ("./config.dump", "not normalised"),
])
def test_unsafe_member_names_are_refused(tmp_path, name, match):
    path = hostile(tmp_path / "a.tar", [("config.dump", b"{}", {}), (name, b"evil", {})],
                   _manifest([_member("config.dump", b"{}")]))
    assert_refused(path, tmp_path, match)
    assert not os.path.exists(tmp_path.parent / "escape")
    assert not os.path.exists("/tmp/absolute-escape")


def test_pax_path_overrides_are_checked(tmp_path):
    entries = [("config.dump", b"{}", {"pax_headers": {"path": "../escape"}})]
    path = hostile(tmp_path / "a.tar", entries, _manifest([_member("config.dump", b"{}")]))
    assert_refused(path, tmp_path, "^member ../escape: unsafe path$")
    entries = [("config.dump", b"{}", {"pax_headers": {"path": "a\x00b"}})]
    path = hostile(tmp_path / "b.tar", entries, _manifest([_member("config.dump", b"{}")]))
    assert_refused(path, tmp_path, "control character")


@pytest.mark.parametrize("attrs, match", [
    ({"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "symlinks are not allowed"),
    ({"type": tarfile.LNKTYPE, "linkname": "config.dump"}, "hardlinks are not allowed"),
    ({"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, "device nodes are not allowed"),
    ({"type": tarfile.BLKTYPE, "devmajor": 8, "devminor": 0}, "device nodes are not allowed"),
    ({"type": tarfile.FIFOTYPE}, "fifos are not allowed"),
    ({"type": tarfile.CONTTYPE}, "unsupported type '7'"),
])
def test_special_members_are_refused(tmp_path, attrs, match):
    path = hostile(tmp_path / "a.tar", [("config.dump", b"{}", {}), ("checkpoint/special", None, attrs)],
                   _manifest([_member("config.dump", b"{}"), _member("checkpoint/special", b"")]))
    assert_refused(path, tmp_path, f"^member checkpoint/special: {match}$")


def test_directory_entries_must_be_parents_of_members(tmp_path):
    path = hostile(tmp_path / "a.tar", [("config.dump", b"{}", {}), ("other/", None, {"type": tarfile.DIRTYPE})],
                   _manifest([_member("config.dump", b"{}")]))
    assert_refused(path, tmp_path, "directory not in the manifest")


def test_member_larger_than_the_manifest_says_is_refused_before_writing(tmp_path):
    big = os.urandom(1 << 20)
    path = hostile(tmp_path / "a.tar", [("checkpoint/pages-1.img", big, {})],
                   _manifest([_member("checkpoint/pages-1.img", big[:10])]))
    seen = []
    with pytest.raises(BadArchive, match=r"^member checkpoint/pages-1.img: size 1048576 differs "
                                         r"from the manifest's 10$"):
        read_archive(path, str(tmp_path / "dest"), progress=lambda *call: seen.append(call))
    assert all(done == 0 for _, done, _ in seen), "bytes were written past the manifest's size"
    assert not (tmp_path / "dest").exists()


def test_manifest_must_come_first(tmp_path):
    path = hostile(tmp_path / "a.tar", [("notes.txt", b"{}", {})], manifest_first=False)
    assert_refused(path, tmp_path, f"does not begin with {MANIFEST_NAME}")
    with pytest.raises(BadArchive, match=f"does not begin with {MANIFEST_NAME}"):
        read_manifest(path)


def test_unknown_format_version_is_refused(tmp_path):
    data = json.loads(_manifest([_member("config.dump", b"{}")]).to_json())
    data["format_version"] = 99
    path = hostile(tmp_path / "a.tar", [("config.dump", b"{}", {})], json.dumps(data))
    error = assert_refused(path, tmp_path, "unsupported format version 99")
    assert "format version 2 and 3" in error.hint


@pytest.mark.parametrize("content, match", [
    (b"", "archive is empty"),
    (os.urandom(5000), "not a tar file"),
    (b"\x1f\x8b" + os.urandom(5000), "corrupt|truncated|trailing"),
    (b"\x28\xb5\x2f\xfd" + os.urandom(5000), "corrupt|truncated|trailing"),
])
def test_garbage_files_are_refused(tmp_path, content, match):
    (tmp_path / "garbage.tar").write_bytes(content)
    assert_refused(tmp_path / "garbage.tar", tmp_path, match)


def test_oversized_extended_header_is_refused(tmp_path):
    entries = [("config.dump", b"{}", {"pax_headers": {"comment": "x" * (tarfmt.MAX_EXTENDED_HEADER + 1)}})]
    path = hostile(tmp_path / "a.tar", entries, _manifest([_member("config.dump", b"{}")]))
    assert_refused(path, tmp_path, "oversized extended header")


def test_trailing_zeros_are_bounded(tmp_path, source):
    path = _write(tmp_path, source, "none").path
    with open(path, "ab") as f:
        f.write(bytes(10240))   # a record's worth of padding is normal
    read_archive(path, str(tmp_path / "padded"))
    with open(path, "ab") as f:
        f.write(bytes(reader.MAX_TRAILING_ZEROS))
    assert_refused(path, tmp_path, "trailing data")


def test_destination_must_not_exist(tmp_path, source):
    path = _write(tmp_path, source, "none").path
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine").write_text("keep")
    with pytest.raises(Conflict, match="already exists"):
        read_archive(path, str(dest))
    assert os.listdir(dest) == ["mine"]


def test_missing_archive_creates_nothing(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        read_archive(str(tmp_path / "absent.tar"), str(tmp_path / "dest"))
    assert os.listdir(tmp_path) == []


def test_read_manifest_reads_only_the_first_member(tmp_path, source):
    path = _write(tmp_path, source, "gzip").path
    data = open(path, "rb").read()
    (tmp_path / "cut.tar.gz").write_bytes(data[:len(data) // 2])   # body truncated, head intact
    head = read_manifest(str(tmp_path / "cut.tar.gz"))
    assert isinstance(head, Head) and head.container == CONTAINER and head.host == HOST
    assert head.size_bound == head.total_size == sum(map(len, source[2].values()))


def test_read_manifest_reads_format_2(tmp_path):
    path = hostile(tmp_path / "a.tar", [("config.dump", b"{}", {}), ("checkpoint/core-1.img", b"core", {})])
    manifest = read_manifest(path)
    assert isinstance(manifest, ManifestV2) and manifest.size_bound == 6 and manifest.container == CONTAINER
