"""Archives encrypted at rest with age. A checkpoint holds the container's
memory, keys and passwords included, and an archive is made to leave the host.

Debian's `age` (the reference implementation, in Go) encrypts and decrypts
the archive in its own process, between ferry and the file: it runs beside
compression on the other core, and a thread of ours calling pyrage would
take Python's lock for every chunk it moves (at redis 1 GiB a restore's
decryption cost 1.36x, bench/analysis.md). pyrage checks the keys a user
names before anything starts, and holds the passphrase mode's key block.

Two ways to hold the key:
- recipients (`--encrypt-to`): age X25519 (`age1...`) or SSH (`ssh-ed25519`,
  `ssh-rsa`) public keys, given inline or one per line in a file. The archive is
  a plain age file, which `age -d -i KEY` decrypts too; a restore takes the
  matching identity file (`--decrypt-key`).
- a passphrase (`--encrypt-passphrase-file`). age's own passphrase mode reads
  a terminal, and pyrage's encrypts whole buffers only: the archive is
  encrypted to a fresh X25519 identity, and that identity, encrypted with the
  passphrase (scrypt), goes in front of it: ENVELOPE_MAGIC, the block's length,
  the block, then the age stream. Both parts are age's; ferry adds no cryptography.

Keys reach age through a memfd (/dev/fd/N), never a command line or a file.
age runs in a session of its own: a dropped terminal's SIGHUP is ferry's to
act on (it may defer it), and a ferry that dies leaves age its pipe's end.
What ferry reads here may be forged: sizes are bounded before anything is
allocated, and a wrong key or a changed byte is one line, with nothing restored.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import threading
from typing import NamedTuple

from ferry.util import proc
from ferry.util.errors import BadArchive, FerryError, NotFound, UsageError
from ferry.util.fs import read_small_file
from ferry.util.pipes import end_process, grow_pipe, start_writeback, write_all

AGE_MAGIC = b"age-encryption.org/v1\n"
ENVELOPE_MAGIC = b"ferry-age-passphrase/v1\n"
MAX_KEY_BLOCK = 4096          # the passphrase-encrypted identity: about 250 bytes
MAX_KEY_FILE = 64 << 10       # a recipients, identity or passphrase file
RECIPIENT, PASSPHRASE = "age recipients", "age passphrase"
WRONG_KEY_SIGN = "no identity matched"   # what age says when no key opens the archive
WRITEBACK_EVERY = 0.1                    # seconds between writeback hints while age writes a file


def age_binary() -> str:
    import shutil
    found = shutil.which("age", path=proc.TOOL_PATH)
    if not found:
        raise NotFound("encrypted archives need age, which is not installed", hint="run 'make setup' as root")
    return found


def _key_fd(name: str, text: str) -> int:
    """A memfd holding `text`, for age to open as /dev/fd/N."""
    fd = os.memfd_create(name)
    write_all(fd, text.encode())
    return fd


def _said(process: subprocess.Popen) -> str:
    lines = [line.strip() for line in process.stderr.read(65536).decode(errors="replace").splitlines()]
    lines = [line.removeprefix("age: error: ") for line in lines if line and "report unexpected" not in line]
    return lines[-1] if lines else f"exit {process.returncode}"


class Sealing(NamedTuple):
    """How an archive is encrypted."""
    recipients: tuple[str, ...] = ()      # checked recipient lines (age1..., ssh-...)
    passphrase: str | None = None

    def start(self, sink: int, source: int | None = None) -> "Encryptor":
        return Encryptor(self, sink, source)


class Encryptor:
    """`age -e` in its own process, writing into `sink` (from the current
    offset, after the passphrase mode's key block): from `source` when given
    (a file, read to its end), else from the pipe `fd`, which the writer feeds
    and finish() closes. Into a file, the kernel is told to write age's
    output out as it comes, as the writer does its own (start_writeback):
    the fsync at the end then waits for the last of it, not all."""

    def __init__(self, sealing: Sealing, sink: int, source: int | None = None):
        recipients = sealing.recipients
        if sealing.passphrase is not None:
            from pyrage import passphrase, x25519
            identity = x25519.Identity.generate()
            block = passphrase.encrypt(str(identity).encode(), sealing.passphrase)
            write_all(sink, ENVELOPE_MAGIC + b"%d\n" % len(block) + block)
            recipients = (str(identity.to_public()),)
        keys = _key_fd("ferry-age-recipients", "\n".join(recipients) + "\n")
        try:
            self._process = proc.spawn([age_binary(), "-e", "-R", f"/dev/fd/{keys}"], desc="age encryption",
                                       stdin=subprocess.PIPE if source is None else source, stdout=sink,
                                       stderr=subprocess.PIPE, pass_fds=(keys,), new_session=True)
        finally:
            os.close(keys)
        self.fd = self._process.stdin.fileno() if source is None else -1
        if source is None:
            grow_pipe(self.fd)
        self._ended = threading.Event()
        self._writeback = None
        if stat.S_ISREG(os.fstat(sink).st_mode):
            self._writeback = threading.Thread(target=self._write_back, args=(sink,), name="ferry-age-writeback",
                                               daemon=True)
            self._writeback.start()

    def _write_back(self, sink: int) -> None:
        while not self._ended.wait(WRITEBACK_EVERY):
            start_writeback(sink)

    def _stop_writeback(self) -> None:
        self._ended.set()
        if self._writeback is not None:
            self._writeback.join()
            self._writeback = None

    def finish(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        code = self._process.wait()
        self._stop_writeback()
        if code != 0:
            raise FerryError(f"cannot encrypt the archive: age failed: {_said(self._process)}")
        self._process.stderr.close()

    def abort(self) -> None:
        end_process(self._process)
        self._stop_writeback()


class Opening(NamedTuple):
    """How an archive is decrypted."""
    identities: tuple[str, ...] = ()      # checked identity files' texts (age's, or OpenSSH private keys)
    passphrase: str | None = None

    def identity_for(self, source: int, name: str, kind: str | None) -> str:
        """The identity text age takes for an archive encrypted as `kind`,
        read from `source`: a passphrase envelope's key block is read and
        opened here, which leaves `source` at the age stream's start."""
        if kind != PASSPHRASE:
            if not self.identities:
                raise wrong_key(name, RECIPIENT)
            return "\n".join(self.identities) + "\n"
        if self.passphrase is None:
            raise wrong_key(name, kind)
        if _read_up_to(source, len(ENVELOPE_MAGIC)) != ENVELOPE_MAGIC:
            raise BadArchive(f"{name} is not a passphrase-encrypted archive",
                             hint="give the key it was encrypted to (--decrypt-key)")
        length = b""
        while len(length) < 16 and not length.endswith(b"\n"):   # byte by byte: age reads what follows
            length += _read_up_to(source, 1) or b"?"
        if not length[:-1].isdigit() or not length.endswith(b"\n") or int(length) > MAX_KEY_BLOCK:
            raise BadArchive(f"{name} is not a whole encrypted archive: its key block is damaged")
        block = _read_up_to(source, int(length))
        import pyrage
        from pyrage import passphrase, x25519
        try:
            identity = passphrase.decrypt(block, self.passphrase).decode()
            x25519.Identity.from_str(identity)
        except (pyrage.DecryptError, pyrage.IdentityError, UnicodeDecodeError, ValueError):
            raise wrong_key(name, kind) from None
        return identity + "\n"


def _read_up_to(fd: int, count: int) -> bytes:
    data = b""
    while len(data) < count and (more := os.read(fd, count - len(data))):
        data += more
    return data


def wrong_key(name: str, kind: str) -> FerryError:
    if kind == PASSPHRASE:
        return FerryError(f"cannot decrypt {name}: the passphrase is wrong or missing",
                          hint="give the passphrase file it was encrypted with (--decrypt-passphrase-file)")
    return FerryError(f"cannot decrypt {name}: none of the keys given opens it",
                      hint="give the identity file of one of its recipients (--decrypt-key)")


def _decrypt_failure(name: str, kind: str, said: str) -> FerryError:
    if WRONG_KEY_SIGN in said:
        return wrong_key(name, kind)
    return BadArchive(f"{name} cannot be decrypted: {said}",
                      hint="the archive is damaged or was changed; do not restore from it")


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


def sealing_argv(encrypt_to: tuple[str, ...], passphrase_file: str | None) -> list[str]:
    """The same encryption options for a ferry command that runs elsewhere
    (a schedule's, a drain's): files by absolute path, never their keys."""
    argv = []
    for given in encrypt_to:
        argv += ["--encrypt-to", given if given.startswith(("age1", "ssh-")) else os.path.abspath(given)]
    return argv + (["--encrypt-passphrase-file", os.path.abspath(passphrase_file)] if passphrase_file else [])


def opening(decrypt_keys: tuple[str, ...], passphrase_file: str | None) -> Opening | None:
    """The keys a restore, inspect or verify was given, or None."""
    if not decrypt_keys and not passphrase_file:
        return None
    identities = []
    for path in decrypt_keys:
        text = _read_key_file(path, "identity file")
        if "OPENSSH PRIVATE KEY" in text:
            identities.append(_ssh_identity(text, path))
        else:
            identities += [_identity(line, path) for line in _key_lines(path, "identity file", text)]
    return Opening(identities=tuple(identities),
                   passphrase=read_passphrase(passphrase_file) if passphrase_file else None)


def _key_lines(path: str, what: str, text: str | None = None) -> list[str]:
    text = _read_key_file(path, what) if text is None else text
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _recipient(text: str) -> str:
    """`text`, once pyrage has read it as a public key."""
    import pyrage
    from pyrage import ssh, x25519
    try:
        ssh.Recipient.from_str(text) if text.startswith("ssh-") else x25519.Recipient.from_str(text)
    except pyrage.RecipientError as error:
        raise UsageError(f"not an age or SSH public key: {text[:40]!r} ({error})") from None
    return text


def _identity(text: str, path: str) -> str:
    import pyrage
    from pyrage import x25519
    try:
        x25519.Identity.from_str(text)
    except pyrage.IdentityError:
        raise UsageError(f"identity file {path} holds a line that is not an age identity (AGE-SECRET-KEY-1...)") \
            from None
    return text


def _ssh_identity(text: str, path: str) -> str:
    import pyrage
    from pyrage import ssh
    try:
        ssh.Identity.from_buffer(text.encode())
    except pyrage.IdentityError as error:
        raise UsageError(f"identity file {path} is not an SSH private key age can use: {error}") from None
    return text


# ---- decrypting into the archive reader ---------------------------------------------

def decrypted_fd(path: str, keys: Opening | None):
    """A pipe's read end carrying the decrypted archive at `path` (a context
    manager), which age decrypts as the reader reads."""
    if keys is None:
        raise FerryError(f"{path} is encrypted ({encryption_of(path)})",
                         hint="give --decrypt-key FILE or --decrypt-passphrase-file FILE")
    with open(path, "rb", buffering=0) as source:
        kind = kind_of(os.pread(source.fileno(), len(ENVELOPE_MAGIC), 0))
        return _decrypting(source.fileno(), path, kind, keys)


def decrypted_stream(fd: int, name: str, keys: Opening):
    """decrypted_fd for an archive read from a pipe, which cannot be looked at
    before it is read: the keys given say how it was encrypted."""
    if keys.identities and keys.passphrase is not None:
        raise UsageError(f"{name} is a stream: give --decrypt-key or --decrypt-passphrase-file, not both")
    return _decrypting(fd, name, RECIPIENT if keys.identities else PASSPHRASE, keys)


@contextlib.contextmanager
def _running(process: subprocess.Popen, name: str, kind: str):
    """age's output for the reader. A wrong key, or bytes age's tags refuse,
    is the error the command ends with, whatever the reader made of the short stream."""
    try:
        yield process.stdout.fileno()
    except BaseException:
        said = _ended(process)
        if said and "broken pipe" not in said:
            raise _decrypt_failure(name, kind, said) from None
        raise
    said = _ended(process)   # the reader read to the end: age has ended, or ends now
    if said:
        raise _decrypt_failure(name, kind, said)


def _decrypting(source: int, name: str, kind: str | None, keys: Opening):
    key = _key_fd("ferry-age-identity", keys.identity_for(source, name, kind))
    try:
        process = proc.spawn([age_binary(), "-d", "-i", f"/dev/fd/{key}"], desc="age decryption",
                             stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(key,),
                             new_session=True)
    finally:
        os.close(key)
    grow_pipe(process.stdout.fileno())
    return _running(process, name, kind)


def _ended(process: subprocess.Popen) -> str:
    """Close the reader's end, reap age, and return what it said if it failed
    (not when the closed pipe or a signal ended it)."""
    process.stdout.close()   # age stops at its next write, unless it has stopped already
    said = _said(process) if process.wait() > 0 else ""
    end_process(process)
    return said


def archive_source(path: str, keys: Opening | None):
    """Where a reader reads the archive at `path` (an Endpoint, a context manager):
    import_endpoint's, or a pipe it is decrypted into when it is encrypted (a
    stream is, when keys are given)."""
    from ferry.checkpoint.archive.endpoints import import_endpoint
    source = import_endpoint(path)
    if source.stream:
        return source if keys is None else decrypted_endpoint(source, keys)
    if not encryption_of(source.target):
        return source
    return decrypted_endpoint(source, keys)


@contextlib.contextmanager
def decrypted_endpoint(source, keys: Opening | None):
    """The Endpoint of the decrypted archive that `source` (an Endpoint) holds."""
    from ferry.checkpoint.archive.endpoints import Endpoint
    with source:
        decrypted = decrypted_stream(source.target, source.name, keys) if source.stream \
            else decrypted_fd(source.target, keys)
        with decrypted as fd:
            yield Endpoint(fd, source.name)
