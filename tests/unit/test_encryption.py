"""checkpoint/encryption.py: age through pyrage, both ways of holding the key,
and what a forged or damaged encrypted archive meets; the writer's encrypted
target leaves no plaintext behind."""

from __future__ import annotations

import io
import os

import pytest

pyrage = pytest.importorskip("pyrage", reason="pyrage is a dependency: make setup installs it")

from pyrage import x25519  # noqa: E402

from ferry.checkpoint import encryption as enc  # noqa: E402
from ferry.util.errors import BadArchive, FerryError, NotFound, UsageError  # noqa: E402

DATA = os.urandom(200_000) + b"ferrymarker" * 1000


def sealed(sealing: enc.Sealing, data: bytes = DATA) -> bytes:
    out = io.BytesIO()
    sealing.seal(io.BytesIO(data), out)
    return out.getvalue()


def opened(opening: enc.Opening, blob: bytes) -> bytes:
    out = io.BytesIO()
    opening.open(io.BytesIO(blob), out, "a.tar")
    return out.getvalue()


@pytest.fixture(scope="module")
def keys():
    return x25519.Identity.generate(), x25519.Identity.generate()


@pytest.fixture(scope="module")
def by_passphrase():
    return sealed(enc.Sealing(passphrase="correct horse"))   # scrypt: about a second, once


def test_recipients_round_trip_and_a_wrong_identity_is_one_line(keys):
    mine, other = keys
    blob = sealed(enc.Sealing(recipients=(mine.to_public(),)))
    assert blob.startswith(enc.AGE_MAGIC) and b"ferrymarker" not in blob
    assert enc.kind_of(blob[:len(enc.ENVELOPE_MAGIC)]) == enc.RECIPIENT
    assert opened(enc.Opening(identities=(other, mine)), blob) == DATA
    with pytest.raises(FerryError, match="cannot decrypt a.tar: none of the keys given opens it") as refused:
        opened(enc.Opening(identities=(other,)), blob)
    assert "--decrypt-key" in refused.value.hint
    with pytest.raises(FerryError, match="none of the keys given opens it"):
        opened(enc.Opening(passphrase="x"), blob)


def test_a_passphrase_round_trip_and_a_wrong_one_is_one_line(by_passphrase):
    assert by_passphrase.startswith(enc.ENVELOPE_MAGIC) and b"ferrymarker" not in by_passphrase
    assert enc.kind_of(by_passphrase[:len(enc.ENVELOPE_MAGIC)]) == enc.PASSPHRASE
    assert opened(enc.Opening(passphrase="correct horse"), by_passphrase) == DATA
    for wrong in (enc.Opening(passphrase="wrong"), enc.Opening(identities=(x25519.Identity.generate(),))):
        with pytest.raises(FerryError, match="the passphrase is wrong or missing"):
            opened(wrong, by_passphrase)


@pytest.mark.parametrize("damage, says", [
    (lambda b: b[:-1000], "cannot be decrypted"),                       # cut short
    (lambda b: b[:-2000] + bytes([b[-2000] ^ 1]) + b[-1999:], "cannot be decrypted"),   # one bit
    (lambda b: b + b"extra", "cannot be decrypted"),
])
def test_a_damaged_archive_is_refused(keys, damage, says):
    mine, _ = keys
    blob = sealed(enc.Sealing(recipients=(mine.to_public(),)))
    with pytest.raises(BadArchive, match=says):
        opened(enc.Opening(identities=(mine,)), damage(blob))


@pytest.mark.parametrize("envelope, error", [
    (enc.ENVELOPE_MAGIC + b"99999999999999999999\n", BadArchive),   # a length beyond the bound: no allocation
    (enc.ENVELOPE_MAGIC + b"12x\n", BadArchive),
    (enc.ENVELOPE_MAGIC + b"\n", BadArchive),
    (enc.ENVELOPE_MAGIC + b"%d\n" % (enc.MAX_KEY_BLOCK + 1), BadArchive),
    (enc.ENVELOPE_MAGIC + b"300\nshort", FerryError),   # a block that is not age's: the passphrase cannot open it
])
def test_a_forged_passphrase_envelope_is_refused(envelope, error):
    with pytest.raises(error):
        opened(enc.Opening(passphrase="anything"), envelope + b"\0" * 64)


def test_the_passphrase_block_must_hold_an_identity(by_passphrase):
    """A block that decrypts with the passphrase but holds no age identity."""
    from pyrage import passphrase
    block = passphrase.encrypt(b"not an identity", "correct horse")
    forged = enc.ENVELOPE_MAGIC + b"%d\n" % len(block) + block + by_passphrase[-500:]
    with pytest.raises(FerryError, match="the passphrase is wrong or missing"):
        opened(enc.Opening(passphrase="correct horse"), forged)


def test_key_files(tmp_path, keys):
    mine, other = keys
    recipients = tmp_path / "recipients"
    recipients.write_text(f"# team\n\n{mine.to_public()}\n  {other.to_public()}\n")
    assert len(enc.sealing((str(recipients), str(mine.to_public())), None).recipients) == 3
    identity = tmp_path / "id"
    identity.write_text(f"# created by age-keygen\n{mine}\n")
    assert len(enc.opening((str(identity),), None).identities) == 1
    phrase = tmp_path / "phrase"
    phrase.write_text("two words\r\nnot this line\n")
    assert enc.sealing((), str(phrase)).passphrase == "two words"
    assert enc.sealing((), None) is None and enc.opening((), None) is None
    refusals = [
        (lambda: enc.sealing((str(recipients),), str(phrase)), UsageError, "not both"),
        (lambda: enc.sealing(("age1notakey",), None), UsageError, "not an age or SSH public key"),
        (lambda: enc.sealing((str(tmp_path / "absent"),), None), NotFound, "does not exist"),
        (lambda: enc.opening((str(recipients),), None), UsageError, "not an age identity"),
    ]
    empty = tmp_path / "empty"
    empty.write_text("\nsecond\n")
    refusals.append((lambda: enc.sealing((), str(empty)), UsageError, "empty first line"))
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    refusals.append((lambda: enc.opening((), str(binary)), UsageError, "is not text"))
    huge = tmp_path / "huge"
    huge.write_bytes(b"a" * (enc.MAX_KEY_FILE + 1))
    refusals.append((lambda: enc.opening((str(huge),), None), UsageError, "larger than"))
    nothing = tmp_path / "nothing"
    nothing.write_text("# no key here\n")
    refusals.append((lambda: enc.sealing((str(nothing),), None), UsageError, "names no recipient"))
    for call, kind, says in refusals:
        with pytest.raises(kind, match=says):
            call()


def test_decrypted_fd_hands_the_reader_plaintext_and_the_key_error_wins(tmp_path, keys):
    mine, other = keys
    path = tmp_path / "a.tar.zst"
    path.write_bytes(sealed(enc.Sealing(recipients=(mine.to_public(),))))
    assert enc.encryption_of(str(path)) == enc.RECIPIENT and enc.encryption_of(str(tmp_path / "none")) is None
    with enc.decrypted_fd(str(path), enc.Opening(identities=(mine,))) as fd:
        got = b"".join(iter(lambda: os.read(fd, 65536), b""))
    assert got == DATA
    # The reader sees an empty stream and fails its own way; the command ends with the key's error.
    with pytest.raises(FerryError, match="none of the keys given opens it"):
        with enc.decrypted_fd(str(path), enc.Opening(identities=(other,))) as fd:
            if os.read(fd, 10) == b"":
                raise BadArchive("the archive stream ended before its head")
    # A reader that stops early neither hangs the thread nor hides its own error.
    with pytest.raises(BadArchive, match="stopped"):
        with enc.decrypted_fd(str(path), enc.Opening(identities=(mine,))) as fd:
            os.read(fd, 10)
            raise BadArchive("stopped")
    with pytest.raises(FerryError, match="is encrypted") as missing:
        with enc.decrypted_fd(str(path), None):
            pass
    assert "--decrypt-key" in missing.value.hint


def test_the_writer_encrypts_into_place_and_leaves_no_plaintext(tmp_path, keys):
    from ferry.checkpoint.archive import ArchiveWriter, read_archive
    from tests.unit.test_archive import CONTAINER, HOST   # noqa: F401  (shared records)
    mine, _ = keys
    members = tmp_path / "members"
    members.mkdir()
    (members / "config.dump").write_bytes(b'{"a": 1}' + b"ferrymarker" * 100)
    work = tmp_path / "work"
    work.mkdir()
    target = tmp_path / "out" / "a.tar.zst"
    target.parent.mkdir()
    plain = str(work / "archive.unencrypted")
    writer = ArchiveWriter(str(target), container=CONTAINER, compression="none", host=HOST,
                           sealing=enc.Sealing(recipients=(mine.to_public(),)), plain=plain)
    assert writer.temp_path.startswith(str(target.parent)) and os.path.exists(plain)
    writer.commit(str(members), ["config.dump"])
    assert os.listdir(target.parent) == ["a.tar.zst"] and os.listdir(work) == []
    data = target.read_bytes()
    assert data.startswith(enc.AGE_MAGIC) and b"ferrymarker" not in data
    assert target.stat().st_mode & 0o777 == 0o600
    decrypted = tmp_path / "decrypted.tar"
    with open(target, "rb") as source, open(decrypted, "wb") as sink:
        enc.Opening(identities=(mine,)).open(source, sink, "a.tar.zst")
    contents = read_archive(str(decrypted), str(tmp_path / "unpacked"))
    assert [m.name for m in contents.members] == ["config.dump"]
    aborted = ArchiveWriter(str(tmp_path / "out" / "b.tar.zst"), container=CONTAINER, compression="none",
                            host=HOST, sealing=enc.Sealing(recipients=(mine.to_public(),)), plain=plain)
    aborted.abort()
    assert os.listdir(target.parent) == ["a.tar.zst"] and os.listdir(work) == []
