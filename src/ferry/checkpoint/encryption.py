"""Archives encrypted at rest with age (pyrage, the Rust implementation's
bindings). A checkpoint holds the container's memory, keys and passwords
included, and an archive is made to leave the host.

Two ways to hold the key:
- recipients (`--encrypt-to`): age X25519 (`age1...`) or SSH (`ssh-ed25519`,
  `ssh-rsa`) public keys, given inline or one per line in a file. The archive is
  a plain age file, which `age -d -i KEY` decrypts too; a restore takes the
  matching identity file (`--decrypt-key`).
- a passphrase (`--encrypt-passphrase-file`). pyrage offers age's scrypt
  recipient for whole buffers only, and an archive is streamed: it is encrypted
  to a fresh X25519 identity, and that identity, encrypted with the passphrase
  (scrypt), goes in front of it: ENVELOPE_MAGIC, the block's length, the block,
  then the age stream. Both parts are age's; ferry adds no cryptography.

What ferry reads here may be forged: sizes are bounded before anything is
allocated, and a wrong key or a changed byte is one line, with nothing restored.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import BinaryIO, NamedTuple

from ferry.util.errors import BadArchive, FerryError, UsageError
from ferry.util.fs import read_small_file

AGE_MAGIC = b"age-encryption.org/v1\n"
ENVELOPE_MAGIC = b"ferry-age-passphrase/v1\n"
MAX_KEY_BLOCK = 4096          # the passphrase-encrypted identity: about 250 bytes
MAX_KEY_FILE = 64 << 10       # a recipients, identity or passphrase file
CHUNK = 1 << 20
RECIPIENT, PASSPHRASE = "age recipients", "age passphrase"


class Sealing(NamedTuple):
    """How an archive is encrypted."""
    recipients: tuple = ()            # pyrage recipient objects
    passphrase: str | None = None

    def seal(self, source: BinaryIO, sink: BinaryIO) -> None:
        import pyrage
        from pyrage import passphrase, x25519
        recipients = list(self.recipients)
        if self.passphrase is not None:
            identity = x25519.Identity.generate()
            block = passphrase.encrypt(str(identity).encode(), self.passphrase)
            sink.write(ENVELOPE_MAGIC + b"%d\n" % len(block) + block)
            recipients = [identity.to_public()]
        pyrage.encrypt_io(source, sink, recipients)


class Opening(NamedTuple):
    """How an archive is decrypted."""
    identities: tuple = ()            # pyrage identity objects
    passphrase: str | None = None

    def open(self, source: BinaryIO, sink: BinaryIO, name: str) -> None:
        import pyrage
        from pyrage import passphrase, x25519
        kind = kind_of(source.read(len(ENVELOPE_MAGIC)))
        source.seek(0)
        identities = list(self.identities)
        if kind == PASSPHRASE:
            if self.passphrase is None:
                raise wrong_key(name, kind)
            source.read(len(ENVELOPE_MAGIC))
            length = source.readline(16)
            if not length.endswith(b"\n") or not length[:-1].isdigit() or int(length) > MAX_KEY_BLOCK:
                raise BadArchive(f"{name} is not a whole encrypted archive: its key block is damaged")
            block = source.read(int(length))
            try:
                identities = [x25519.Identity.from_str(passphrase.decrypt(block, self.passphrase).decode())]
            except (pyrage.DecryptError, pyrage.IdentityError, UnicodeDecodeError, ValueError):
                raise wrong_key(name, kind) from None
        elif kind == RECIPIENT and not identities:
            raise wrong_key(name, kind)
        try:
            pyrage.decrypt_io(source, sink, identities)
        except BrokenPipeError:
            raise
        except (pyrage.DecryptError, OSError) as error:   # a tag that does not match is an OSError
            if "no matching keys" in str(error).lower():
                raise wrong_key(name, kind) from None
            raise BadArchive(f"{name} cannot be decrypted: {error or 'it is cut short'}",
                             hint="the archive is damaged or was changed; do not restore from it") from None


def wrong_key(name: str, kind: str) -> FerryError:
    if kind == PASSPHRASE:
        return FerryError(f"cannot decrypt {name}: the passphrase is wrong or missing",
                          hint="give the passphrase file it was encrypted with (--decrypt-passphrase-file)")
    return FerryError(f"cannot decrypt {name}: none of the keys given opens it",
                      hint="give the identity file of one of its recipients (--decrypt-key)")


def kind_of(head: bytes) -> str | None:
    """RECIPIENT, PASSPHRASE, or None for an archive that is not encrypted."""
    if head.startswith(ENVELOPE_MAGIC):
        return PASSPHRASE
    if head.startswith(AGE_MAGIC[:len(head)]) and len(head) >= len(AGE_MAGIC):
        return RECIPIENT
    return None


def encryption_of(path: str) -> str | None:
    """Whether the file at `path` is an encrypted archive, and how."""
    try:
        with open(path, "rb") as f:
            return kind_of(f.read(len(ENVELOPE_MAGIC)))
    except OSError:
        return None


# ---- keys, from the command line ------------------------------------------------

def _read_key_file(path: str, what: str) -> str:
    data = read_small_file(path, what, MAX_KEY_FILE)
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not text") from None


def read_passphrase(path: str) -> str:
    """A passphrase file's first line, without its newline; it must not be empty."""
    text = _read_key_file(path, "passphrase file")
    phrase = text.split("\n", 1)[0].rstrip("\r")
    if not phrase:
        raise UsageError(f"passphrase file {path} holds an empty first line")
    return phrase


def sealing(encrypt_to: tuple[str, ...], passphrase_file: str | None) -> Sealing | None:
    """The encryption the checkpoint's options ask for, or None."""
    if encrypt_to and passphrase_file:
        raise UsageError("give --encrypt-to or --encrypt-passphrase-file, not both")
    if passphrase_file:
        return Sealing(passphrase=read_passphrase(passphrase_file))
    if not encrypt_to:
        return None
    recipients = []
    for given in encrypt_to:
        lines = [given] if given.startswith(("age1", "ssh-")) else _key_lines(given, "recipients file")
        recipients += [_recipient(line) for line in lines]
    if not recipients:
        raise UsageError("--encrypt-to names no recipient")
    return Sealing(recipients=tuple(recipients))


def opening(decrypt_keys: tuple[str, ...], passphrase_file: str | None) -> Opening | None:
    """The keys a restore, inspect or verify was given, or None."""
    if not decrypt_keys and not passphrase_file:
        return None
    identities = []
    for path in decrypt_keys:
        text = _read_key_file(path, "identity file")
        if "OPENSSH PRIVATE KEY" in text:
            identities.append(_ssh_identity(text.encode(), path))
        else:
            identities += [_identity(line, path) for line in _key_lines(path, "identity file", text)]
    return Opening(identities=tuple(identities),
                   passphrase=read_passphrase(passphrase_file) if passphrase_file else None)


def _key_lines(path: str, what: str, text: str | None = None) -> list[str]:
    text = _read_key_file(path, what) if text is None else text
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _recipient(text: str):
    import pyrage
    from pyrage import ssh, x25519
    try:
        return ssh.Recipient.from_str(text) if text.startswith("ssh-") else x25519.Recipient.from_str(text)
    except pyrage.RecipientError as error:
        raise UsageError(f"not an age or SSH public key: {text[:40]!r} ({error})") from None


def _identity(text: str, path: str):
    import pyrage
    from pyrage import x25519
    try:
        return x25519.Identity.from_str(text)
    except pyrage.IdentityError:
        raise UsageError(f"identity file {path} holds a line that is not an age identity (AGE-SECRET-KEY-1...)") \
            from None


def _ssh_identity(data: bytes, path: str):
    import pyrage
    from pyrage import ssh
    try:
        return ssh.Identity.from_buffer(data)
    except pyrage.IdentityError as error:
        raise UsageError(f"identity file {path} is not an SSH private key pyrage can use: {error}") from None


# ---- decrypting into the archive reader ---------------------------------------------

@contextlib.contextmanager
def decrypted_fd(path: str, keys: Opening | None):
    """A pipe's read end carrying the decrypted archive at `path`, which a thread
    decrypts as the reader reads. A wrong key, or bytes age's tags refuse, is
    the error the command ends with, whatever the reader made of the short stream."""
    if keys is None:
        raise FerryError(f"{path} is encrypted ({encryption_of(path)})",
                         hint="give --decrypt-key FILE or --decrypt-passphrase-file FILE")
    read_end, write_end = os.pipe()
    failure: list[BaseException] = []

    def pump() -> None:
        try:
            with open(path, "rb") as source, os.fdopen(write_end, "wb", buffering=CHUNK) as sink:
                keys.open(source, sink, path)
        except BrokenPipeError:
            pass   # the reader stopped first: its error is the one to tell
        except BaseException as error:   # handed to the command's thread
            failure.append(error)
    thread = threading.Thread(target=pump, name="ferry-decrypt", daemon=True)
    thread.start()
    try:
        yield read_end
    except BaseException:
        os.close(read_end)
        read_end = -1
        thread.join()
        if failure and isinstance(failure[0], FerryError):
            raise failure[0] from None
        raise
    finally:
        if read_end >= 0:
            os.close(read_end)
        thread.join()
    if failure:
        raise failure[0]


def archive_source(path: str, keys: Opening | None):
    """Where a reader reads the archive at `path` (an Endpoint, a context manager):
    import_endpoint's, or a pipe it is decrypted into when it is encrypted."""
    from ferry.checkpoint.archive.endpoints import import_endpoint
    source = import_endpoint(path)
    if source.stream or not encryption_of(source.target):
        return source
    return _decrypted_endpoint(source.target, keys)


@contextlib.contextmanager
def _decrypted_endpoint(path: str, keys: Opening | None):
    from ferry.checkpoint.archive.endpoints import Endpoint
    with decrypted_fd(path, keys) as fd:
        yield Endpoint(fd, path)
