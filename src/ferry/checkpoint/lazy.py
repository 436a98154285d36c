"""CRIU's lazy pages (post-copy), at both ends of a migration.

The source: `runc checkpoint --lazy-pages` dumps everything but memory, says
so on its status fd, and then serves the pages from its frozen tasks until the
destination has them all (LazyDump). The destination: CRIU's lazy-pages
daemon (start_daemon) fetches each page as a restored task faults on it, and
the rest in the background, then exits.

The page server carries the container's memory across the network, and CRIU
ignores the address of a lazy page server: it listens on every address. So
both ends speak CRIU's TLS (GnuTLS), each with a key pair made for this one
migration, each trusting only the other's certificate, which the two sides
exchanged over the agent's authenticated channel. A passive listener sees
ciphertext; anyone else who connects fails the handshake, which makes the
dump fail and the source run on (a denial of service, never a leak).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from ferry.host.criulog import quote_log
from ferry.util import proc
from ferry.util.errors import BadArchive, ToolError
from ferry.util.fs import atomic_write

MAX_CERT = 8 << 10          # bytes of a peer's PEM certificate (ours are about 600)
READY_WAIT = 1800.0         # seconds the dump of all but memory may take (as a whole dump)
SOCKET_WAIT = 30.0          # seconds for the lazy-pages daemon to open its socket
ABORT_WAIT = 30.0           # seconds for a failed handshake to end the dump, before it is killed
LOG = "lazy-pages.log"
SOCKET = "lazy-pages.socket"   # in the restore's work dir, where `runc restore` looks for it

# Run by a fresh interpreter beside the dump, in a session of its own: when the
# migrate command dies before the point of no return (its pipe ends without
# the word "c"), it fails the page server's handshake, so CRIU thaws the tasks
# rather than keep them frozen for a destination that will never come.
GUARD = """
import os, socket, sys
fd, port = int(sys.argv[1]), int(sys.argv[2])
try:
    word = os.read(fd, 1)
except OSError:
    word = b""
if word != b"c":
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        pass
"""


# ---- the key pairs --------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """One side's key pair and, once known, the peer's certificate, in one
    directory (0700) that lives as long as the migration."""
    directory: str

    @property
    def cert(self) -> str:
        return os.path.join(self.directory, "cert.pem")

    @property
    def key(self) -> str:
        return os.path.join(self.directory, "key.pem")

    @property
    def peer(self) -> str:
        return os.path.join(self.directory, "peer.pem")

    @property
    def criu_config(self) -> str:
        return os.path.join(self.directory, "criu-tls.conf")

    def create(self, name: str) -> str:
        """A fresh P-256 key and a self-signed certificate for one day; returns the certificate (PEM)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(key, hashes.SHA256()))
        atomic_write(self.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()).decode(), mode=0o600)
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        atomic_write(self.cert, pem, mode=0o600)
        return pem

    def trust(self, peer_pem: str) -> str:
        """Trust exactly the peer's certificate (checked to be one); returns
        the CRIU config file that turns TLS on with this pair."""
        atomic_write(self.peer, parse_certificate(peer_pem), mode=0o600)
        # The trust anchor is the peer's own one-time certificate, so there is
        # no name to check: no other certificate can chain to it.
        atomic_write(self.criu_config, f"tls\ntls-cacert {self.peer}\ntls-cert {self.cert}\n"
                                       f"tls-key {self.key}\ntls-no-cn-verify\n", mode=0o600)
        return self.criu_config


def parse_certificate(pem: str) -> str:
    """A peer's certificate as it came over the wire: one PEM X.509 certificate, or BadArchive."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    if len(pem) > MAX_CERT:
        raise BadArchive(f"the peer's page server certificate is over {MAX_CERT} bytes")
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise BadArchive("the peer's page server certificate is not a PEM X.509 certificate") from None
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def free_port() -> int:
    """A TCP port free on every address now (CRIU binds it a moment later; a
    race lost makes the dump fail, and the container runs on)."""
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


# ---- the source ------------------------------------------------------------------
@dataclass(frozen=True)
class LazyServe:
    """How a lazy checkpoint serves its pages."""
    port: int
    tls_config: str       # Identity.criu_config of this side


class LazyDump:
    """A `runc checkpoint --lazy-pages` past its status-ready: every image but
    the pages is written, the tasks are frozen, and CRIU serves their pages on
    `port` until the destination has all of them; then runc ends, and the
    container with it. A failure ends it too, with the tasks thawed (CRIU)."""

    def __init__(self, runc: subprocess.Popen, port: int, work: str, desc: str, guard_fd: int | None = None):
        self.runc = runc
        self.port = port
        self.work = work
        self.desc = desc
        self._guard_fd = guard_fd   # spawn_guard's: until commit(), this command's death fails the page server

    @property
    def pid(self) -> int:
        return self.runc.pid

    def commit(self) -> None:
        """The destination runs the container: the pages must be served whatever becomes of this command."""
        self._release_guard(b"c")

    def abort(self) -> None:
        """Before the point of no return: end the dump so that CRIU thaws the
        tasks; killed if it does not end (recovery then thaws the cgroup)."""
        self._release_guard(b"c")
        if self.runc.poll() is None:
            end_page_server("127.0.0.1", self.port)
        try:
            proc.wait(self.runc, ABORT_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill_group(self.runc)

    def wait(self, timeout: float | None = None) -> None:
        """Until the last page has gone; ToolError quoting CRIU if the transfer failed."""
        try:
            code = proc.wait(self.runc, timeout)
        except subprocess.TimeoutExpired:
            raise ToolError(self.desc, None, f"its pages were not all served in {timeout:.0f} s") from None
        if code != 0:
            raise dump_failed(self.desc, code, self.work, "the page transfer failed")

    def _release_guard(self, word: bytes) -> None:
        if self._guard_fd is not None:
            release_guard(self._guard_fd, word)
            self._guard_fd = None


def release_guard(fd: int, word: bytes = b"c") -> None:
    """Tell the guard (c: leave the page server alone) and let it go."""
    with contextlib.suppress(OSError):
        os.write(fd, word)
    os.close(fd)


def dump_failed(desc: str, code: int | None, work: str, fallback: str) -> ToolError:
    log_path = os.path.join(work, "dump.log")
    return ToolError(desc, code, quote_log(log_path) or fallback, hint=f"CRIU's log is kept at {log_path}",
                     log_path=log_path)


def spawn_guard(port: int) -> int:
    """Start the guard of a page server on `port` (before the dump: its start
    costs CPU that the frozen window should not share); returns the pipe end
    whose closing without the word "c" makes it fail the page server."""
    read_fd, write_fd = os.pipe()
    try:
        proc.spawn([sys.executable, "-I", "-S", "-c", GUARD, str(read_fd), str(port)],
                   desc="lazy dump guard", pass_fds=[read_fd], new_session=True)
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    return write_fd


def end_page_server(address: str, port: int) -> None:
    """Fail a lazy page server that no daemon has taken yet: a connection that
    is not a TLS client with the right key fails its handshake, and CRIU ends
    the dump with the tasks thawed. A server already taken is not listening."""
    try:
        socket.create_connection((address, port), timeout=5).close()
    except OSError:
        pass


def await_ready(runc: subprocess.Popen, status_fd: int, desc: str, work: str,
                timeout: float = READY_WAIT) -> None:
    """Until runc's status fd says that all but memory is dumped; a runc that
    ends first failed (ToolError quoting CRIU)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill_group(runc)
            raise ToolError(desc, None, f"it did not dump in {timeout:.0f} s")
        ready, _, _ = select.select([status_fd], [], [], min(left, 1.0))
        if ready:
            if os.read(status_fd, 1):
                return
            break   # closed without a word: runc ended
        if runc.poll() is not None:
            break
    raise dump_failed(desc, runc.wait(), work, "runc ended before the dump was ready")


# ---- the destination -------------------------------------------------------------
@dataclass(frozen=True)
class LazySource:
    """Where a lazy restore's pages come from."""
    address: str          # the source's page server: the address its migrate command connected from
    port: int
    tls_config: str       # Identity.criu_config of this side


def start_daemon(images: str, work: str, source: LazySource) -> subprocess.Popen:
    """CRIU's lazy-pages daemon for a restore from `images` whose work dir is
    `work` (runc's restore finds the daemon's socket there; await_socket before
    it). It runs in a session of its own: it must outlive the agent that
    started it, for as long as pages are due."""
    argv = [proc.criu_binary() or "criu", "lazy-pages", "--page-server", "--address", source.address,
            "--port", str(source.port), "-D", images, "-W", work, "-o", LOG, "-v4"]
    return proc.spawn(argv, desc="criu lazy-pages", env={"CRIU_CONFIG_FILE": source.tls_config},
                      new_session=True)


def await_socket(daemon: subprocess.Popen, work: str, wait: float = SOCKET_WAIT) -> None:
    """Until the daemon listens on its socket; ToolError (the daemon stopped) if it fails first."""
    deadline = time.monotonic() + wait
    while not os.path.exists(os.path.join(work, SOCKET)):
        if daemon.poll() is not None or time.monotonic() > deadline:
            stop_daemon(daemon)
            log_path = os.path.join(work, LOG)
            raise ToolError("criu lazy-pages", daemon.returncode,
                            quote_log(log_path) or f"its socket did not appear in {wait:.0f} s",
                            log_path=log_path)
        time.sleep(0.002)


def stop_daemon(daemon: subprocess.Popen) -> None:
    proc.kill_group(daemon)


def daemon_failure(work: str, code: int) -> str:
    return quote_log(os.path.join(work, LOG)) or f"criu lazy-pages exited with {code}"


def pages_arriving(pid_file: str) -> bool:
    """Whether the lazy-pages daemon named in pid_file still fetches a container's memory."""
    try:
        with open(pid_file) as f:
            return daemon_alive(int(f.read().strip()))
    except (OSError, ValueError):
        return False


def daemon_alive(pid: int) -> bool:
    """Whether `pid` is a lazy-pages daemon still (its cmdline is checked: pids are reused)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"lazy-pages" in f.read()
    except OSError:
        return False


def pages_complete(work: str) -> bool:
    """Whether the lazy-pages daemon whose work dir is `work` delivered every
    page: its log names each task it took ("Received PID: P"), and a finished
    task ends with "UFFD transferred pages: (N/N)"; an error, or a daemon
    killed halfway, leaves a task short (criu/uffd.c)."""
    try:
        with open(os.path.join(work, LOG), "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return False
    if "Error (" in text:
        return False
    tasks = set(re.findall(r"uffd: Received PID: (\d+),", text))
    done = {pid for pid, got, total in re.findall(r"uffd: (\d+)-\d+: UFFD transferred pages: \((\d+)/(\d+)\)", text)
            if got == total}
    return bool(tasks) and tasks <= done
