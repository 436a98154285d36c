"""Format 3's authenticity: the trailer's BLAKE3 digests, the head's digest
and max_size, the Ed25519 signature, and the records' strictness. Forgeries
are made the way an attacker would: unpack, edit, recompute, repack."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile

import blake3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ferry.checkpoint import signing
from ferry.checkpoint.archive import (CHECKSUMS_NAME, MANIFEST_NAME, SIGNATURE_NAME, ArchiveWriter, Checksum,
                                      Checksums, Head, Signature, manifest, read_archive, read_manifest, reader,
                                      write_archive)
from ferry.util.errors import BadArchive
from tests.unit.test_archive import (CONTAINER, HOST, SUFFIX, add_member, assert_refused, listing,
                                     source, tar_bytes_of)  # noqa: F401  (source: a fixture)

# Written by ferry before format 3 (zstd, format 2): config.dump, checkpoint/core-1.img, checkpoint/pages-1.img.
V2_ARCHIVE = base64.b64decode("""
KLUv/WQALd0UAEZhZiUQj+YBjP7FFE/Gixgd6ZYZFj4A+3CC+R/vecuyrBEIAgAA1QEUWQBhAFwAkOegkMQLl1KLhYJWxlayHk5D
jEHOFx7WcG881mwpaMnP8G9cagFgClrVTnx/ApIhvVZaarFoxoUZU1oxmtO0N8NpjTfdujlnuGvW3a+7m1EtjmAyfmlWSAMHEw8a
TQwGMUJA4XEJ6CMC6YRYqU7KFGEjY0thlfNGFQlkotgbiY5xxmOl3OUMY5pFmfdCqQXiwmkmLUUYWEg4mJBrZf2JpZRSanlQ0Krc
XJ8yxYw/N5px5k2+3pdYqnkBrXlcfNE38hvnW5IeKFmMzx3MIU1CQbGU84qJl5ooRTKRKVUb8f2IPl0ZVyz8d6IReo5BCV4KikwZ
OVBA5cIbzUmAncx9iWglnvJvo0Lh/TphrjauZU1kg0OeFATtNevnmqtux9nFkhP7mDvevVwsEGpx6FrjcJG7BuE/zZmUUmvy3ZMc
LqPuhz8Cp5c+aryjBjpRNynd0090/jyJOe6uI3Qy3vhrY0Cu004S8SXLcZw9/QRgqHEZYQiimWBGUpAU0hiAghGiKm4DEiAjPUZB
EAcJHREQRIjwihAJiTCHjMhzwUer7kBBZIJfeXCMwrBSgfwo6wAimoaO2iPgiNJEkfCYwsY6wDbZFRe0KlEZatiBVm+kiewd5Y8D
iG6uIoIGKQXIL5rET6WLuJwbp/5AT3zuPEiEDqlm06Q2pxdyJ5o9vqI65yk0xFowXUWe/jOCMj8KKiARZMbBGStLJP1+tpv0SpGp
+BKwYRWGB4r0kBRIhcvS3bHIErg9vlep5yUDXqoqH70mf1epzsvtB19LjOdSq1rHB9VdTBPEzMHspMcY0gSK91HJUiLEaArtXI5q
ogHc7C/j""")


def keypair(directory, name: str) -> tuple[signing.PrivateKey, signing.PublicKey]:
    """An Ed25519 key pair as PEM files, loaded the way the CLI loads them."""
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.pub")
    with open(private, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(public, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return signing.load_private_key(private), signing.load_public_key(public)


@pytest.fixture
def keys(tmp_path):
    """The signer's key pair and an attacker's."""
    directory = tmp_path / "keys"
    directory.mkdir()
    return keypair(str(directory), "owner"), keypair(str(directory), "attacker")


def _head(max_size: int) -> bytes:
    return Head(3, "2024-05-01T12:00:00Z", HOST, dict(CONTAINER), "none", "blake3", max_size).to_json()


def _checksums(members, head: bytes) -> bytes:
    """The trailer as an attacker writes it: plain JSON, whatever the names."""
    return json.dumps({"format_version": 3, "manifest_blake3": blake3.blake3(head).hexdigest(),
                       "members": [{"name": n, "size": len(d), "blake3": blake3.blake3(d).hexdigest()}
                                   for n, d in members]}, indent=1).encode()


def _signature(key: signing.PrivateKey, trailer: bytes) -> bytes:
    return Signature.make(key.public.raw, key.sign(trailer)).to_json()



def forge(path, members, *, head: bytes | None = None, checksums: bytes | None = None, sign_with=None,
          signature: bytes | None = None, entries=None, after=()) -> str:
    """A plain format 3 tar built with tarfile: the head, `entries` (name,
    data, attrs) or else `members` (name, data), the trailer, the signature
    and `after`. What is not given is computed from `members` as ferry would."""
    head = _head(sum(len(d) for _, d in members)) if head is None else head
    checksums = _checksums(members, head) if checksums is None else checksums
    if signature is None and sign_with is not None:
        signature = _signature(sign_with, checksums)
    with tarfile.open(str(path), "w", format=tarfile.PAX_FORMAT) as tar:
        add_member(tar, MANIFEST_NAME, head)
        for name, data, attrs in entries if entries is not None else [(n, d, {}) for n, d in members]:
            add_member(tar, name, data, **attrs)
        add_member(tar, CHECKSUMS_NAME, checksums)
        if signature is not None:
            add_member(tar, SIGNATURE_NAME, signature)
        for name, data, attrs in after:
            add_member(tar, name, data, **attrs)
    return str(path)


MEMBERS = [("config.dump", b'{"name": "my-redis"}'), ("checkpoint/core-1.img", b"core"),
           ("checkpoint/pages-1.img", os.urandom(3000))]


def _unpack(path: str) -> dict[str, bytes]:
    """An attacker's view: every entry of a (decompressed) archive, in order."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes_of(path))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _repack(path: str, entries: dict[str, bytes]) -> str:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries.items():
            add_member(tar, name, data)
    return path


def _signed_archive(tmp_path, source, key, compression="zstd") -> str:
    root, names, _ = source
    return write_archive(str(tmp_path / f"signed.{SUFFIX[compression]}"), root, names, container=CONTAINER,
                         compression=compression, host=HOST, signer=key).path


# ---- signatures ----------------------------------------------------------------

@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_signed_archive_verifies_with_its_key(tmp_path, source, keys, compression):
    (owner, owner_pub), _ = keys
    root, names, files = source
    result = write_archive(str(tmp_path / f"out.{SUFFIX[compression]}"), root, names, container=CONTAINER,
                           compression=compression, host=HOST, signer=owner)
    assert result.signer == owner.fingerprint == owner_pub.fingerprint
    with tarfile.open(fileobj=io.BytesIO(tar_bytes_of(result.path))) as tar:
        assert tar.getnames() == [MANIFEST_NAME, *names, CHECKSUMS_NAME, SIGNATURE_NAME]
    contents = read_archive(result.path, str(tmp_path / "dest"), verify_key=owner_pub)
    assert (contents.signed, contents.verified, contents.signer) == (True, True, owner.fingerprint)
    for name, data in files.items():
        assert (tmp_path / "dest" / name).read_bytes() == data
    # Without a key the signature is still checked against the key it names,
    # which says who signed, not that this signer is trusted.
    contents = read_archive(result.path, str(tmp_path / "dest2"))
    assert (contents.signed, contents.verified, contents.signer) == (True, False, owner.fingerprint)


def test_keys_may_be_given_as_paths(tmp_path, source, keys):
    (owner, owner_pub), _ = keys
    root, names, _ = source
    path = write_archive(str(tmp_path / "out.tar"), root, names, container=CONTAINER, compression="none",
                         host=HOST, signer=owner.path).path
    assert read_archive(path, str(tmp_path / "dest"), verify_key=owner_pub.path).verified


def test_tampered_member_with_recomputed_digests_is_caught_by_the_signature(tmp_path, source, keys):
    """The attack of issue 9: edit config.dump, recompute its digest, repack."""
    (owner, owner_pub), (attacker, _) = keys
    entries = _unpack(_signed_archive(tmp_path, source, owner))
    entries["config.dump"] = b'{"name": "evil", "bind": "/", "more": "room"}'
    head = json.loads(entries[MANIFEST_NAME])
    head["max_size"] += 100
    entries[MANIFEST_NAME] = json.dumps(head).encode()
    trailer = json.loads(entries[CHECKSUMS_NAME])
    trailer["manifest_blake3"] = blake3.blake3(entries[MANIFEST_NAME]).hexdigest()
    for member in trailer["members"]:
        if member["name"] == "config.dump":
            member.update(size=len(entries["config.dump"]), blake3=blake3.blake3(entries["config.dump"]).hexdigest())
    entries[CHECKSUMS_NAME] = json.dumps(trailer).encode()

    kept = _repack(str(tmp_path / "kept-signature.tar"), entries)
    assert_refused(kept, tmp_path, f"^archive's signature does not match its {CHECKSUMS_NAME}$")
    with pytest.raises(BadArchive, match="signature does not match"):
        read_archive(kept, str(tmp_path / "dest"), verify_key=owner_pub)

    stripped = dict(entries)
    del stripped[SIGNATURE_NAME]
    stripped = _repack(str(tmp_path / "stripped.tar"), stripped)
    error = _refused_with_key(stripped, tmp_path, owner_pub, "^archive carries no signature")
    assert "--verify-key" in error.hint
    # The documented limit: without a key to verify with, digests prove nothing.
    contents = read_archive(stripped, str(tmp_path / "accepted"))
    assert (contents.signed, contents.verified) == (False, False)
    assert (tmp_path / "accepted" / "config.dump").read_bytes() == entries["config.dump"]

    resigned = dict(entries)
    resigned[SIGNATURE_NAME] = _signature(attacker, entries[CHECKSUMS_NAME])
    resigned = _repack(str(tmp_path / "resigned.tar"), resigned)
    error = _refused_with_key(resigned, tmp_path, owner_pub,
                              f"^archive is signed by key {attacker.fingerprint}, not by {owner.fingerprint}")
    assert error.hint == manifest.HINT_FORGED
    contents = read_archive(resigned, str(tmp_path / "attacker-signed"))
    assert (contents.signed, contents.verified, contents.signer) == (True, False, attacker.fingerprint)


def _refused_with_key(path, tmp_path, key, match: str) -> BadArchive:
    before = listing(tmp_path)
    with pytest.raises(BadArchive, match=match) as caught:
        read_archive(str(path), str(tmp_path / "dest-keyed"), verify_key=key)
    assert listing(tmp_path) == before
    assert "\n" not in caught.value.message and caught.value.hint
    return caught.value


def test_wrong_key_is_refused(tmp_path, source, keys):
    (owner, _), (_, attacker_pub) = keys
    path = _signed_archive(tmp_path, source, owner)
    _refused_with_key(path, tmp_path, attacker_pub, f"signed by key {owner.fingerprint}, not by "
                                                    f"{attacker_pub.fingerprint}")


def test_unsigned_archive_is_refused_with_a_key(tmp_path, source, keys):
    (_, owner_pub), _ = keys
    root, names, _ = source
    path = write_archive(str(tmp_path / "plain.tar.zst"), root, names, container=CONTAINER, compression="zstd",
                         host=HOST).path
    _refused_with_key(path, tmp_path, owner_pub, "carries no signature")


def test_format_2_archive_still_reads_as_unauthenticated(tmp_path, keys):
    (_, owner_pub), _ = keys
    path = tmp_path / "old.tar.zst"
    path.write_bytes(V2_ARCHIVE)
    head = read_manifest(str(path))
    assert head.format_version == 2 and head.size_bound == head.total_size == 6025
    contents = read_archive(str(path), str(tmp_path / "dest"))
    assert (contents.format_version, contents.signed, contents.verified, contents.signer) == (2, False, False, None)
    assert [m.name for m in contents.members] == ["config.dump", "checkpoint/core-1.img", "checkpoint/pages-1.img"]
    assert contents.container == CONTAINER and contents.total_size == 6025
    assert (tmp_path / "dest" / "checkpoint" / "pages-1.img").read_bytes() == bytes(6000)
    _refused_with_key(path, tmp_path, owner_pub, "format 2 archives carry no signature")


def test_flipped_signature_byte_is_refused(tmp_path, keys):
    (owner, owner_pub), _ = keys
    trailer = _checksums(MEMBERS, _head(sum(len(d) for _, d in MEMBERS)))
    record = json.loads(_signature(owner, trailer))
    raw = bytearray(base64.b64decode(record["signature"]))
    raw[10] ^= 1
    record["signature"] = base64.b64encode(bytes(raw)).decode()
    path = forge(tmp_path / "a.tar", MEMBERS, signature=json.dumps(record).encode())
    assert_refused(path, tmp_path, "signature does not match")
    _refused_with_key(path, tmp_path, owner_pub, "signature does not match")


# ---- the trailer, the head and the member set ----------------------------------

def test_forged_archive_reads_when_everything_agrees(tmp_path, keys):
    """The forge itself makes archives the reader takes: the refusals below are the edits'."""
    (owner, owner_pub), _ = keys
    path = forge(tmp_path / "a.tar", MEMBERS, sign_with=owner)
    contents = read_archive(path, str(tmp_path / "dest"), verify_key=owner_pub)
    assert [m.name for m in contents.members] == [n for n, _ in MEMBERS] and contents.verified


def test_extra_member_is_refused(tmp_path):
    checksums = _checksums(MEMBERS[:2], _head(sum(len(d) for _, d in MEMBERS)))
    path = forge(tmp_path / "a.tar", MEMBERS, checksums=checksums)
    assert_refused(path, tmp_path, f"^member checkpoint/pages-1.img: not listed in {CHECKSUMS_NAME}$")


def test_missing_member_is_refused(tmp_path):
    head = _head(10_000)
    path = forge(tmp_path / "a.tar", MEMBERS[:2], head=head, checksums=_checksums(MEMBERS, head))
    assert_refused(path, tmp_path, "^member checkpoint/pages-1.img: missing$")


def test_member_in_another_order_is_refused(tmp_path):
    head = _head(10_000)
    path = forge(tmp_path / "a.tar", MEMBERS[::-1], head=head, checksums=_checksums(MEMBERS, head))
    assert_refused(path, tmp_path, "not in the order")


def test_member_of_another_size_is_refused(tmp_path):
    head = _head(10_000)
    listed = [("config.dump", b"{}")] + MEMBERS[1:]
    path = forge(tmp_path / "a.tar", MEMBERS, head=head, checksums=_checksums(listed, head))
    assert_refused(path, tmp_path, f"^member config.dump: size 20 differs from {CHECKSUMS_NAME}'s 2$")


def test_changed_member_is_refused(tmp_path):
    head = _head(10_000)
    changed = [("config.dump", b'{"name": "my-redix"}')] + MEMBERS[1:]
    path = forge(tmp_path / "a.tar", changed, head=head, checksums=_checksums(MEMBERS, head))
    assert_refused(path, tmp_path, "^member config.dump: checksum mismatch$")


def test_changed_head_is_refused(tmp_path):
    """The trailer (and so the signature) covers the head: its max_size, host and container."""
    checksums = _checksums(MEMBERS, _head(10_000))
    path = forge(tmp_path / "a.tar", MEMBERS, head=_head(10_001), checksums=checksums)
    assert_refused(path, tmp_path, f"^{MANIFEST_NAME} does not match its digest in {CHECKSUMS_NAME}$")


def test_members_beyond_max_size_are_refused_before_they_are_written(tmp_path):
    big = [("checkpoint/pages-1.img", os.urandom(1 << 20))]
    head = _head(1000)
    path = forge(tmp_path / "a.tar", big, head=head, checksums=_checksums(big, head))
    seen = []
    with pytest.raises(BadArchive, match=r"^member checkpoint/pages-1.img: the members exceed the archive's "
                                         r"declared max_size of 1000 bytes$"):
        read_archive(path, str(tmp_path / "dest"), progress=lambda *call: seen.append(call))
    assert seen and all(done == 0 for _, done, _ in seen)
    assert not (tmp_path / "dest").exists()


def test_max_size_counts_every_member(tmp_path):
    head = _head(sum(len(d) for _, d in MEMBERS) - 1)
    path = forge(tmp_path / "a.tar", MEMBERS, head=head, checksums=_checksums(MEMBERS, head))
    assert_refused(path, tmp_path, "^member checkpoint/pages-1.img: the members exceed")


@pytest.mark.parametrize("record, limit", [(MANIFEST_NAME, "MAX_HEAD_BYTES"), (CHECKSUMS_NAME, "MAX_CHECKSUMS_BYTES"),
                                           (SIGNATURE_NAME, "MAX_SIGNATURE_BYTES")])
def test_oversized_records_are_refused(tmp_path, monkeypatch, keys, record, limit):
    (owner, _), _ = keys
    monkeypatch.setattr(reader, limit, 2048)
    head = _head(10_000)
    checksums = _checksums(MEMBERS, head)
    signature = _signature(owner, checksums)
    grown = {MANIFEST_NAME: head, CHECKSUMS_NAME: checksums, SIGNATURE_NAME: signature}
    grown[record] = grown[record] + b" " * 4096   # valid JSON, only too large
    if record == MANIFEST_NAME:
        grown[CHECKSUMS_NAME] = _checksums(MEMBERS, grown[MANIFEST_NAME])
    if record != SIGNATURE_NAME:
        grown[SIGNATURE_NAME] = _signature(owner, grown[CHECKSUMS_NAME])
    path = forge(tmp_path / "a.tar", MEMBERS, head=grown[MANIFEST_NAME], checksums=grown[CHECKSUMS_NAME],
                 signature=grown[SIGNATURE_NAME])
    assert_refused(path, tmp_path, f"^{record} is too large")


def test_the_first_member_is_bounded_before_it_is_read(tmp_path):
    path = tmp_path / "a.tar"
    with tarfile.open(str(path), "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(MANIFEST_NAME)
        info.size = manifest.MAX_MANIFEST_BYTES + 1
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert_refused(path, tmp_path, f"^{MANIFEST_NAME} is too large")


def test_too_many_members_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "MAX_MEMBERS", 2)
    head = _head(10_000)
    path = forge(tmp_path / "a.tar", MEMBERS, head=head, checksums=_checksums(MEMBERS[:2], head))
    assert_refused(path, tmp_path, "more than 2 members")


# ---- strict records ----------------------------------------------------------------

def _json_edit(data: bytes, change) -> bytes:
    record = json.loads(data)
    change(record)
    return json.dumps(record).encode()


def _set(key, value):
    def change(record):
        target = record
        *parents, last = key.split(".")
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[int(last) if isinstance(target, list) else last] = value
    return change


def _drop(key):
    return lambda record: record.pop(key)


@pytest.mark.parametrize("change, match", [
    (_set("surprise", 1), "unknown surprise"),
    (_drop("max_size"), "lacks max_size"),
    (_drop("digest"), "lacks digest"),
    (_set("digest", "sha256"), "digest must be blake3"),
    (_set("max_size", -1), "max_size"),
    (_set("max_size", True), "max_size"),
    (_set("max_size", 1.5), "max_size"),
    (_set("max_size", "10"), "max_size"),
    (_set("max_size", 1 << 70), "max_size"),
    (_set("format_version", 4), "unsupported format version 4"),
    (_set("container.id", "a" * 64 + "\n"), "container.id"),
    (_set("container.name", "../x"), "container.name"),
    (_set("host.cpu", []), "host.cpu"),
    (_set("compression", "lz4"), "compression"),
    (_set("created", "2024-05-01T12:00:00Z\n"), "RFC 3339"),
])
def test_head_is_strict(tmp_path, change, match):
    head = _json_edit(_head(10_000), change)
    with pytest.raises(BadArchive, match=match):
        Head.from_json(head)
    path = forge(tmp_path / "a.tar", MEMBERS, head=head, checksums=_checksums(MEMBERS, head))
    assert_refused(path, tmp_path, match)


@pytest.mark.parametrize("change, match", [
    (_set("surprise", 1), "unknown surprise"),
    (_drop("manifest_blake3"), "lacks manifest_blake3"),
    (_set("format_version", 2), "format_version"),
    (_set("manifest_blake3", "A" * 64), "manifest_blake3"),
    (_set("members", {}), "members must be a list"),
    (_set("members.0.extra", 1), "unknown extra"),
    (_set("members.0.blake3", "0" * 32), "blake3 must be 64"),
    (_set("members.0.size", -1), "size"),
    (_set("members.0.size", "20"), "size"),
    (_set("members.0.name", "../config.dump"), "unsafe path"),
    (_set("members.0.name", MANIFEST_NAME), "reserved"),
    (_set("members.0.name", SIGNATURE_NAME), "reserved"),
    (_set("members.1.name", "config.dump"), "listed twice"),
    (_set("members.1.name", "config.dump/core-1.img"), "both a file and a directory"),
])
def test_trailer_is_strict(tmp_path, change, match):
    head = _head(10_000)
    checksums = _json_edit(_checksums(MEMBERS, head), change)
    with pytest.raises(BadArchive, match=match):
        Checksums.from_json(checksums)
    path = forge(tmp_path / "a.tar", MEMBERS, head=head, checksums=checksums)
    assert_refused(path, tmp_path, match)


@pytest.mark.parametrize("change, match", [
    (_set("surprise", 1), "unknown surprise"),
    (_drop("public_key"), "lacks public_key"),
    (_set("algorithm", "rsa"), "algorithm must be ed25519"),
    (_set("public_key", base64.b64encode(bytes(31)).decode()), "base64 of 32 bytes"),
    (_set("public_key", "not base64!"), "base64 of 32 bytes"),
    (_set("signature", base64.b64encode(bytes(64)).decode().rstrip("=") + "\n"), "base64 of 64 bytes"),
    (_set("signature", 7), "base64 of 64 bytes"),
])
def test_signature_record_is_strict(tmp_path, keys, change, match):
    (owner, _), _ = keys
    checksums = _checksums(MEMBERS, _head(sum(len(d) for _, d in MEMBERS)))
    signature = _json_edit(_signature(owner, checksums), change)
    with pytest.raises(BadArchive, match=match):
        Signature.from_json(signature)
    path = forge(tmp_path / "a.tar", MEMBERS, checksums=checksums, signature=signature)
    assert_refused(path, tmp_path, match)


@pytest.mark.parametrize("record", [MANIFEST_NAME, CHECKSUMS_NAME, SIGNATURE_NAME])
def test_duplicate_keys_are_refused_in_every_record(tmp_path, keys, record):
    (owner, _), _ = keys
    head = _head(sum(len(d) for _, d in MEMBERS))
    texts = {MANIFEST_NAME: head, CHECKSUMS_NAME: _checksums(MEMBERS, head)}
    texts[SIGNATURE_NAME] = _signature(owner, texts[CHECKSUMS_NAME])
    texts[record] = texts[record].replace(b"{", b'{"format_version": 3, ' if record != SIGNATURE_NAME
                                          else b'{"algorithm": "ed25519", ', 1)
    if record == MANIFEST_NAME:
        texts[CHECKSUMS_NAME] = _checksums(MEMBERS, texts[MANIFEST_NAME])
        texts[SIGNATURE_NAME] = _signature(owner, texts[CHECKSUMS_NAME])
    path = forge(tmp_path / "a.tar", MEMBERS, head=texts[MANIFEST_NAME], checksums=texts[CHECKSUMS_NAME],
                 signature=texts[SIGNATURE_NAME])
    assert_refused(path, tmp_path, f"^{record} is invalid: key .* appears twice$")


# ---- the tar layout ------------------------------------------------------------------

def _entries(*items):
    return [(n, d, attrs) for n, d, attrs in items]


def test_continued_entries_make_one_member(tmp_path):
    data = os.urandom(5000)
    members = [("checkpoint/pages-1.img", data)]
    cont = {"pax_headers": {"FERRY.continue": "1"}}
    entries = _entries(("checkpoint/pages-1.img", data[:1024], {}), ("checkpoint/pages-1.img", data[1024:3000], cont),
                       ("checkpoint/pages-1.img", data[3000:], cont))
    path = forge(tmp_path / "a.tar", members, entries=entries)
    contents = read_archive(path, str(tmp_path / "dest"))
    assert contents.members == (Checksum("checkpoint/pages-1.img", 5000, blake3.blake3(data).hexdigest()),)
    assert (tmp_path / "dest" / "checkpoint" / "pages-1.img").read_bytes() == data


@pytest.mark.parametrize("entries, match", [
    (_entries(("config.dump", b"{}", {"pax_headers": {"FERRY.continue": "1"}})), "continues no member"),
    (_entries(("config.dump", b"{", {}), ("other", b"}", {"pax_headers": {"FERRY.continue": "1"}})),
     "^member other: continues no member"),
    (_entries(("a", b"x", {}), ("b", b"y", {}), ("a", b"z", {"pax_headers": {"FERRY.continue": "1"}})),
     "^member a: continues no member"),
    (_entries(("config.dump", b"{}", {"pax_headers": {"FERRY.continue": "2"}})), "unknown pax record FERRY.continue"),
    (_entries(("config.dump", b"{}", {"pax_headers": {"FERRY.compress": "1"}})), "unknown pax record FERRY.compress"),
    (_entries(("config.dump", b"{}", {}), ("config.dump", b"{}", {})), "^member config.dump: appears twice$"),
    (_entries(("config.dump", b"{}", {}), (MANIFEST_NAME, b"{}", {})), f"^member {MANIFEST_NAME}: appears twice$"),
    (_entries((SIGNATURE_NAME, b"{}", {})), f"^member {SIGNATURE_NAME}: comes before {CHECKSUMS_NAME}$"),
    (_entries(("a", b"x", {}), ("a/b", b"y", {})), "^member a/b: is both a file and a directory$"),
    (_entries(("a/b", b"x", {}), ("a", b"y", {})), "^member a: is both a file and a directory$"),
    (_entries(("other/", None, {"type": tarfile.DIRTYPE}), ("a", b"x", {})),
     "^member other: directory holds no member$"),
    (_entries(("a", b"x", {}), ("a/", None, {"type": tarfile.DIRTYPE})), "directory entry clashes"),
    (_entries(("link", None, {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})), "symlinks are not allowed"),
    (_entries(("hard", None, {"type": tarfile.LNKTYPE, "linkname": "config.dump"})), "hardlinks are not allowed"),
    (_entries(("dev", None, {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3})), "device nodes"),
    (_entries(("../escape", b"evil", {})), "^member ../escape: unsafe path$"),
    (_entries(("a", b"x", {"pax_headers": {"path": "/etc/cron.d/evil"}})), "absolute path"),
])
def test_hostile_layouts_are_refused(tmp_path, entries, match):
    members = [(n, d) for n, d, attrs in entries if d is not None and "pax_headers" not in attrs]
    path = forge(tmp_path / "a.tar", members, head=_head(10_000), entries=entries)
    assert_refused(path, tmp_path, match)
    assert not (tmp_path.parent / "escape").exists()


def test_directory_entries_of_members_are_accepted(tmp_path):
    entries = _entries(("checkpoint/", None, {"type": tarfile.DIRTYPE}), *[(n, d, {}) for n, d in MEMBERS])
    path = forge(tmp_path / "a.tar", MEMBERS, entries=entries)
    assert [m.name for m in read_archive(path, str(tmp_path / "dest")).members] == [n for n, _ in MEMBERS]


@pytest.mark.parametrize("after, match", [
    (_entries(("late", b"x", {})), f"^member late: comes after {CHECKSUMS_NAME}$"),
    (_entries((SIGNATURE_NAME, b"{}", {}), ("late", b"x", {})), f"comes after {SIGNATURE_NAME}|{SIGNATURE_NAME} is"),
    (_entries((CHECKSUMS_NAME, b"{}", {})), f"^member {CHECKSUMS_NAME}: comes after {CHECKSUMS_NAME}$"),
])
def test_nothing_but_a_signature_follows_the_trailer(tmp_path, after, match):
    path = forge(tmp_path / "a.tar", MEMBERS, after=after)
    assert_refused(path, tmp_path, match)


def test_archive_without_trailer_is_refused(tmp_path):
    path = tmp_path / "a.tar"
    with tarfile.open(str(path), "w", format=tarfile.PAX_FORMAT) as tar:
        add_member(tar, MANIFEST_NAME, _head(10_000))
        for name, data in MEMBERS:
            add_member(tar, name, data)
    assert_refused(path, tmp_path, f"^archive ends without {CHECKSUMS_NAME}$")


def test_trailer_that_is_not_a_file_is_refused(tmp_path):
    path = forge(tmp_path / "a.tar", MEMBERS, entries=[(n, d, {}) for n, d in MEMBERS]
                 + [(CHECKSUMS_NAME + "/", None, {"type": tarfile.DIRTYPE})])
    assert_refused(path, tmp_path, f"{CHECKSUMS_NAME}|directory")


# ---- the writer's side ----------------------------------------------------------------

def test_writer_refuses_a_signer_that_is_not_a_key(tmp_path):
    with pytest.raises(TypeError, match="signer"):
        ArchiveWriter(str(tmp_path / "a.tar"), container=CONTAINER, compression="none", host=HOST, signer=42)
    assert os.listdir(tmp_path) == []


def test_writer_loads_a_bad_key_before_it_writes(tmp_path):
    from ferry.util.errors import NotFound, UsageError
    (tmp_path / "bad.pem").write_text("not a key\n")
    with pytest.raises(UsageError, match="is not a PEM private key"):
        ArchiveWriter(str(tmp_path / "a.tar"), container=CONTAINER, compression="none", host=HOST,
                      signer=str(tmp_path / "bad.pem"))
    with pytest.raises(NotFound, match="does not exist"):
        read_archive(str(tmp_path / "none.tar"), str(tmp_path / "dest"), verify_key=str(tmp_path / "absent.pub"))
    assert sorted(os.listdir(tmp_path)) == ["bad.pem"]
