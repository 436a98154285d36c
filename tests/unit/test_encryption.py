"""checkpoint/encryption.py: age (Debian's, in its own process) with keys
checked by pyrage, both ways of holding the key, and what a forged or damaged
encrypted archive meets; the writer's encrypted targets leave no plaintext
behind."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

pyrage = pytest.importorskip("pyrage", reason="pyrage is a dependency: make setup installs it")
if shutil.which("age", path="/usr/bin:/usr/local/bin") is None:
    pytest.fail("age is not installed: make setup installs it", pytrace=False)

from pyrage import x25519  # noqa: E402

from ferry.checkpoint import encryption as enc  # noqa: E402
from ferry.util.errors import BadArchive, FerryError, NotFound, UsageError  # noqa: E402

DATA = os.urandom(200_000) + b"ferrymarker" * 1000


def sealed(sealing: enc.Sealing, data: bytes = DATA) -> bytes:
    with tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as sink:
        source.write(data)
        source.seek(0)
        encryptor = sealing.start(sink.fileno(), source=source.fileno())
        encryptor.finish()
        sink.seek(0)
        return sink.read()


def opened(opening: enc.Opening, blob: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "a.tar")
        with open(path, "wb") as f:
            f.write(blob)
        with enc.decrypted_fd(path, opening) as fd:
            return b"".join(iter(lambda: os.read(fd, 1 << 20), b""))


def public(identity) -> str:
    return str(identity.to_public())


@pytest.fixture(scope="module")
def keys():
    return x25519.Identity.generate(), x25519.Identity.generate()


@pytest.fixture(scope="module")
def by_passphrase():
    return sealed(enc.Sealing(passphrase="correct horse"))   # scrypt: about a second, once


def test_recipients_round_trip_and_a_wrong_identity_is_one_line(keys):
    mine, other = keys
    blob = sealed(enc.Sealing(recipients=(public(mine),)))
    assert blob.startswith(enc.AGE_MAGIC) and b"ferrymarker" not in blob
    assert enc.kind_of(blob[:len(enc.ENVELOPE_MAGIC)]) == enc.RECIPIENT
    assert opened(enc.Opening(identities=(str(other), str(mine))), blob) == DATA
    with pytest.raises(FerryError, match="cannot decrypt .*a.tar: none of the keys given opens it") as refused:
        opened(enc.Opening(identities=(str(other),)), blob)
    assert "--decrypt-key" in refused.value.hint
    with pytest.raises(FerryError, match="none of the keys given opens it"):
        opened(enc.Opening(passphrase="x"), blob)


def test_a_passphrase_round_trip_and_a_wrong_one_is_one_line(by_passphrase):
    assert by_passphrase.startswith(enc.ENVELOPE_MAGIC) and b"ferrymarker" not in by_passphrase
    assert enc.kind_of(by_passphrase[:len(enc.ENVELOPE_MAGIC)]) == enc.PASSPHRASE
    assert opened(enc.Opening(passphrase="correct horse"), by_passphrase) == DATA
    for wrong in (enc.Opening(passphrase="wrong"), enc.Opening(identities=(str(x25519.Identity.generate()),))):
        with pytest.raises(FerryError, match="the passphrase is wrong or missing"):
            opened(wrong, by_passphrase)


@pytest.mark.parametrize("damage, says", [
    (lambda b: b[:-1000], "cannot be decrypted"),                       # cut short
    (lambda b: b[:-2000] + bytes([b[-2000] ^ 1]) + b[-1999:], "cannot be decrypted"),   # one bit
    (lambda b: b + b"extra", "cannot be decrypted"),
])
def test_a_damaged_archive_is_refused(keys, damage, says):
    mine, _ = keys
    blob = sealed(enc.Sealing(recipients=(public(mine),)))
    with pytest.raises(BadArchive, match=says):
        opened(enc.Opening(identities=(str(mine),)), damage(blob))


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
    assert enc.sealing((str(recipients), public(mine)), None).recipients == (public(mine), public(other),
                                                                               public(mine))
    identity = tmp_path / "id"
    identity.write_text(f"# created by age-keygen\n{mine}\n")
    assert enc.opening((str(identity),), None).identities == (str(mine),)
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
    path.write_bytes(sealed(enc.Sealing(recipients=(public(mine),))))
    assert enc.encryption_of(str(path)) == enc.RECIPIENT and enc.encryption_of(str(tmp_path / "none")) is None
    with enc.decrypted_fd(str(path), enc.Opening(identities=(str(mine),))) as fd:
        got = b"".join(iter(lambda: os.read(fd, 65536), b""))
    assert got == DATA
    # The reader sees an empty stream and fails its own way; the command ends with the key's error.
    with pytest.raises(FerryError, match="none of the keys given opens it"):
        with enc.decrypted_fd(str(path), enc.Opening(identities=(str(other),))) as fd:
            if os.read(fd, 10) == b"":
                raise BadArchive("the archive stream ended before its head")
    # A reader that stops early neither hangs age nor hides its own error.
    with pytest.raises(BadArchive, match="stopped"):
        with enc.decrypted_fd(str(path), enc.Opening(identities=(str(mine),))) as fd:
            os.read(fd, 10)
            raise BadArchive("stopped")
    with pytest.raises(FerryError, match="is encrypted") as missing:
        with enc.decrypted_fd(str(path), None):
            pass
    assert "--decrypt-key" in missing.value.hint


def _piped(blob: bytes) -> int:
    """A pipe's read end that yields `blob` (a thread writes it)."""
    import threading
    read_end, write_end = os.pipe()

    def feed():
        with os.fdopen(write_end, "wb") as sink:
            sink.write(blob)
    threading.Thread(target=feed, daemon=True).start()
    return read_end


def test_a_stream_is_decrypted_as_the_keys_given_say(keys, by_passphrase):
    mine, _ = keys
    for blob, opening in ((sealed(enc.Sealing(recipients=(public(mine),))), enc.Opening(identities=(str(mine),))),
                          (by_passphrase, enc.Opening(passphrase="correct horse"))):
        fd = _piped(blob)
        try:
            with enc.decrypted_stream(fd, "stdin", opening) as plain:
                assert b"".join(iter(lambda: os.read(plain, 1 << 20), b"")) == DATA
        finally:
            os.close(fd)
    with pytest.raises(UsageError, match="not both"):
        enc.decrypted_stream(0, "stdin", enc.Opening(identities=(str(mine),), passphrase="x"))
    fd = _piped(b"not an envelope" * 4)
    try:
        with pytest.raises(BadArchive, match="not a passphrase-encrypted archive"):
            enc.decrypted_stream(fd, "stdin", enc.Opening(passphrase="x"))
    finally:
        os.close(fd)


def test_an_encrypted_archive_read_without_keys_says_so(tmp_path, keys):
    from ferry.checkpoint.archive import read_archive
    path = tmp_path / "a.tar.zst"
    path.write_bytes(sealed(enc.Sealing(recipients=(public(keys[0]),))))
    with pytest.raises(FerryError, match="the archive is encrypted") as refused:
        read_archive(str(path), str(tmp_path / "unpacked"))
    assert "--decrypt-key" in refused.value.hint and not (tmp_path / "unpacked").exists()


@pytest.mark.parametrize("how", ["followed", "piped", "stream"])
def test_the_writer_encrypts_into_place_and_leaves_no_plaintext(tmp_path, keys, how):
    """`followed`: grown in plain in the work dir, then encrypted; `piped`:
    through age into the temp file; `stream`: through age into a descriptor."""
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
    plain = str(work / "archive.unencrypted") if how == "followed" else None
    sealing = enc.Sealing(recipients=(public(mine),))
    stream = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600) if how == "stream" else None
    writer = ArchiveWriter(str(target) if stream is None else stream, container=CONTAINER, compression="none",
                           host=HOST, sealing=sealing, plain=plain)
    if how != "stream":
        assert writer.temp_path.startswith(str(target.parent))
    assert os.path.exists(plain) if plain else os.listdir(work) == []
    writer.commit(str(members), ["config.dump"])
    if stream is not None:
        os.close(stream)
    assert os.listdir(target.parent) == ["a.tar.zst"] and os.listdir(work) == []
    data = target.read_bytes()
    assert data.startswith(enc.AGE_MAGIC) and b"ferrymarker" not in data
    assert target.stat().st_mode & 0o777 == 0o600
    with enc.decrypted_fd(str(target), enc.Opening(identities=(str(mine),))) as fd:
        contents = read_archive(fd, str(tmp_path / "unpacked"))
    assert [m.name for m in contents.members] == ["config.dump"]
    if stream is None:
        aborted = ArchiveWriter(str(tmp_path / "out" / "b.tar.zst"), container=CONTAINER, compression="none",
                                host=HOST, sealing=sealing, plain=plain)
        aborted.abort()
        assert os.listdir(target.parent) == ["a.tar.zst"] and os.listdir(work) == []
