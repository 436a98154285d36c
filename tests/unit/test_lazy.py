"""The pieces of a lazy migration that need no CRIU: the one-time key pairs,
the peer certificate as it comes off the wire, the guard that fails a page
server whose migrate died, and the abort of a page server."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading

import pytest

from ferry.checkpoint import lazy
from ferry.migration import wire
from ferry.util.errors import BadArchive


def test_each_side_trusts_exactly_the_other_s_one_time_certificate(tmp_path):
    source, destination = lazy.Identity(str(tmp_path / "s")), lazy.Identity(str(tmp_path / "d"))
    source_pem, destination_pem = source.create("server"), destination.create("client")
    assert source_pem != destination_pem
    config = source.trust(destination_pem)
    with open(config) as f:
        lines = f.read().splitlines()
    assert lines == ["tls", f"tls-cacert {source.peer}", f"tls-cert {source.cert}", f"tls-key {source.key}",
                     "tls-no-cn-verify"]
    with open(source.peer) as f:
        assert f.read() == destination_pem
    for path in (source.key, source.cert, source.peer, config):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(source.directory).st_mode) == 0o700
    # The certificate passes the wire's own check.
    wire.MigrationTicket(id="0" * 32, container_id="a" * 64, page_client_cert=destination_pem)


@pytest.mark.parametrize("forged", [
    "",
    "not a certificate",
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    "-----BEGIN CERTIFICATE-----\n" + "A" * 9000 + "\n-----END CERTIFICATE-----\n",
])
def test_a_forged_peer_certificate_is_refused_before_criu_reads_it(tmp_path, forged):
    identity = lazy.Identity(str(tmp_path / "s"))
    identity.create("server")
    with pytest.raises(BadArchive):
        identity.trust(forged)
    assert not os.path.exists(identity.criu_config)


def test_the_wire_refuses_a_certificate_with_anything_beside_pem():
    with pytest.raises(ValueError):
        wire.MigrationTicket(id="0" * 32, container_id="a" * 64,
                             page_client_cert="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n; rm -rf /")


class Listener:
    """A stand-in for CRIU's page server: counts the connections it accepts."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            conn, _ = self.sock.accept()
            conn.close()
            self.accepted.set()
        except OSError:
            pass

    def close(self):
        self.sock.close()


def _dump(port: int, tmp_path, guarded: bool = False) -> lazy.LazyDump:
    guard_fd = lazy.spawn_guard(port) if guarded else None
    runc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    return lazy.LazyDump(runc, port, str(tmp_path), "lazy checkpoint of test", guard_fd)


def test_the_guard_fails_the_page_server_when_migrate_dies_before_the_point_of_no_return(tmp_path):
    server = Listener()
    dump = _dump(server.port, tmp_path, guarded=True)
    try:
        os.close(dump._guard_fd)   # what the kernel does when migrate is killed
        dump._guard_fd = None
        assert server.accepted.wait(30)
    finally:
        dump.runc.kill()
        dump.runc.wait()
        server.close()


def test_the_guard_leaves_a_committed_page_server_alone(tmp_path):
    server = Listener()
    dump = _dump(server.port, tmp_path, guarded=True)
    try:
        dump.commit()
        assert not server.accepted.wait(1.0)
    finally:
        dump.runc.kill()
        dump.runc.wait()
        server.close()


def test_an_abort_pokes_the_page_server_and_kills_a_dump_that_does_not_end(tmp_path, monkeypatch):
    monkeypatch.setattr(lazy, "ABORT_WAIT", 0.5)
    server = Listener()
    dump = _dump(server.port, tmp_path)
    try:
        dump.abort()
        assert server.accepted.wait(5)
        assert dump.runc.returncode == -9   # it ignored the failed handshake: killed with its session
    finally:
        server.close()


def test_a_failed_transfer_quotes_criu(tmp_path):
    with open(tmp_path / "dump.log", "w") as f:
        f.write("(00.1) Error (criu/cr-dump.c:1927): Lazy pages transfer FAILED.\n")
    runc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    with pytest.raises(Exception) as failed:
        lazy.LazyDump(runc, 1, str(tmp_path), "lazy checkpoint of test").wait()
    assert "Lazy pages transfer FAILED" in str(failed.value.message)


FINISHED = """(00.32) uffd: Received PID: 1, uffd: 11
(00.32) uffd: Received PID: 2369, uffd: 12
(00.35) uffd: 1-11: UFFD transferred pages: (10/10)
(00.36) uffd: 2369-12: UFFD transferred pages: (8/8)
(00.36) page-xfer: Disconnect from the page server
"""


@pytest.mark.parametrize("log, complete", [
    (FINISHED, True),
    (FINISHED.replace("(8/8)", "(5/8)"), False),                          # one task short
    ("\n".join(FINISHED.splitlines()[:3]), False),                         # killed before the second task's end
    (FINISHED + "(00.40) Error (criu/page-xfer.c:1112): Can't read\n", False),
    ("", False),
])
def test_the_daemon_s_log_says_whether_every_page_arrived(tmp_path, log, complete):
    (tmp_path / lazy.LOG).write_text(log)
    assert lazy.pages_complete(str(tmp_path)) is complete


def test_no_log_is_no_proof_of_pages(tmp_path):
    assert lazy.pages_complete(str(tmp_path)) is False


def _watcher(tmp_path, daemon_pid: int, container_pid: int):
    """The part of a container's monitor that watches a lazy restore's daemon."""
    import selectors
    from types import SimpleNamespace
    from ferry.runtime.monitor import Monitor
    watcher = Monitor.__new__(Monitor)
    watcher.args = SimpleNamespace(lazy_pages_pid=daemon_pid, restore_work=str(tmp_path))
    watcher.selector = selectors.DefaultSelector()
    watcher.container_pid = container_pid
    return watcher


def _ended(watcher) -> None:
    for key, _ in watcher.selector.select(30):
        assert key.data == "pages"
        watcher.selector.unregister(key.fileobj)
        os.close(key.fileobj)
        watcher._pages_ended()


@pytest.mark.parametrize("log, killed", [(FINISHED, False), (FINISHED.replace("(8/8)", "(5/8)"), True)])
def test_the_monitor_kills_a_container_whose_daemon_ended_short_of_pages(tmp_path, log, killed):
    (tmp_path / lazy.LOG).write_text(log)
    container = subprocess.Popen(["sleep", "60"])
    daemon = subprocess.Popen(["sleep", "60"])
    try:
        watcher = _watcher(tmp_path, daemon.pid, container.pid)
        watcher._watch_pages()
        daemon.kill()
        daemon.wait()
        _ended(watcher)
        if killed:
            assert container.wait(timeout=30) == -9
        else:
            with pytest.raises(subprocess.TimeoutExpired):
                container.wait(timeout=0.5)
    finally:
        container.kill()
        container.wait()


def test_the_monitor_checks_at_once_when_the_daemon_is_gone_already(tmp_path):
    (tmp_path / lazy.LOG).write_text("")
    container = subprocess.Popen(["sleep", "60"])
    daemon = subprocess.Popen(["true"])
    daemon.wait()
    try:
        _watcher(tmp_path, daemon.pid, container.pid)._watch_pages()
        assert container.wait(timeout=30) == -9
    finally:
        container.kill()
        container.wait()
