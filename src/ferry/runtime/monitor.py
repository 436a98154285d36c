"""The per-container monitor (ferry's conmon).

It outlives the CLI, owns the container's stdio (pipes, or a pty for -t),
writes the log file, serves attach clients over a unix socket, records the exit
code and then runs the exit command that cleans up. Stdio must be pipes or a
pty owned here, never a host file, because CRIU cannot dump a host file; runc
records these pipes in descriptors.json and re-attaches them at restore.

Run as `python -m ferry.runtime.monitor ...` by runtime.launch; it forks once
so that it is nobody's child but the init process (or a subreaper).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import time

from ferry.host.criulog import quote_log
from ferry.runtime import attach
from ferry.runtime.runc import Runc, quote_runc_log
from ferry.runtime.schedule import Scheduler
from ferry.store.layout import ContainerFiles
from ferry.util import proc
from ferry.util.fs import atomic_write, remove_file
from ferry.util.timefmt import utc_now

PR_SET_CHILD_SUBREAPER = 36
ATTACH_WAIT_SECONDS = 60.0
READ_SIZE = 65536
EXIT_COMMAND_TIMEOUT = 120
EXIT_START_FAILED = 125  # podman's code when the container could not start
# Log entries a monitor keeps while the log cannot take them (a full disk).
PENDING_LIMIT = 1 << 20
# Disk kept from the start and freed at the exit, so that on a full disk the
# exit code (exit.json) and the exit command's record still find room.
RESERVE_BYTES = 64 << 10

log = logging.getLogger("ferry.monitor")


class LogWriter:
    """Podman's k8s-file format: `TIME STREAM F|P TEXT`, one entry per line.

    A write that fails (a full disk) never stops the monitor, which must keep
    draining the container's output, or the container would block or die on
    its stdio. Entries wait in memory (PENDING_LIMIT) until the log can take
    them; beyond that, output is dropped and counted, and one entry on stderr
    says how much and why, where the gap is."""

    def __init__(self, path: str):
        # The container's output may hold secrets: readable by root alone.
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.partial = {"stdout": b"", "stderr": b""}
        self.pending = bytearray()   # whole entries (or the tail of one) not written yet
        self.dropped = 0             # bytes of output lost after them
        self.reason = ""             # why, as the last failed write said

    def write(self, stream: str, data: bytes) -> None:
        buffered = self.partial[stream] + data
        *lines, rest = buffered.split(b"\n")
        self.partial[stream] = rest
        if lines:
            self._append(lambda: b"".join(self._entry(stream, "F", line) for line in lines),
                         len(buffered) - len(rest))

    def flush(self) -> bool:
        """Write partial lines as P entries, and whatever waits, if the log
        takes it now; True when nothing waits."""
        for stream, rest in self.partial.items():
            if rest:
                self._append(lambda: self._entry(stream, "P", rest), len(rest))
                self.partial[stream] = b""
        return self.drain()

    @staticmethod
    def _entry(stream: str, tag: str, text: bytes) -> bytes:
        return f"{utc_now()} {stream} {tag} ".encode() + text + b"\n"

    def _append(self, entries, size: int) -> None:
        """Log the entries `entries()` makes, which hold `size` bytes of output:
        now, later, or never (counted). They are made once what waits is
        written, so that the log's times stay in order."""
        if self.drain():
            self.pending += entries()
            self.drain()
        elif self.dropped or len(self.pending) + size > PENDING_LIMIT:
            self.dropped += size
        else:
            self.pending += entries()

    def drain(self) -> bool:
        """Write what waits, then the note on what was lost; True once nothing waits."""
        while self.pending or self.dropped:
            if not self.pending:
                self.pending += self._entry("stderr", "F", f"ferry: {self.dropped} bytes of output were not "
                                                           f"logged: {self.reason}".encode())
                self.dropped = 0
            try:
                written = os.write(self.fd, self.pending)
            except OSError as error:
                if not self.reason:
                    log.warning("cannot write the container's log (%s): keeping its output in memory",
                                error.strerror)
                self.reason = error.strerror or str(error)
                return False
            del self.pending[:written]   # a short write: the disk filled; the rest waits
        self.reason = ""
        return True


class Monitor:
    def __init__(self, args):
        self.args = args
        self.dir = args.container_dir
        self.runc = Runc(args.runc_root)
        self.selector = selectors.DefaultSelector()
        self.clients: list[socket.socket] = []
        self.readers: dict[socket.socket, attach.FrameReader] = {}
        self.outputs: dict[int, str] = {}    # fd -> "stdout" | "stderr"
        self.stdin_fd: int | None = None      # where attach clients' input goes
        self.pty_master: int | None = None
        self.container_pid = 0
        self.exit_code: int | None = None
        self.files = ContainerFiles(self.dir)
        self.logs = LogWriter(self.files.log)
        self.scheduler = Scheduler(args.checkpoint_schedule, log, self.files.monitor_log)

    # ---- start-up ---------------------------------------------------------
    def report(self, **status) -> None:
        if self.args.status_fd is None:
            return
        try:
            os.write(self.args.status_fd, (json.dumps(status) + "\n").encode())
            os.close(self.args.status_fd)
        except OSError:
            pass
        self.args.status_fd = None

    def create(self) -> None:
        """Run `runc create` (or `runc restore -d`) with stdio that this process owns."""
        child_stdio, console = self._stdio()
        console_socket = self.console_path.path if console else None
        if self.args.restore_images:
            argv = self.runc.restore_argv(self.args.id, self.args.bundle, self.files.container_pid,
                                          self.files.runc_log, images=self.args.restore_images,
                                          work=self.args.restore_work,
                                          tcp_established=self.args.tcp_established,
                                          console_socket=console_socket)
        else:
            argv = self.runc.create_argv(self.args.id, self.args.bundle, self.files.container_pid,
                                         self.files.runc_log, console_socket=console_socket)
        runc = proc.spawn(argv, desc="runc", stdin=child_stdio[0], stdout=child_stdio[1],
                          stderr=child_stdio[2])
        if console is not None:
            self._receive_pty(console, runc)
        code = runc.wait()
        for fd in set(child_stdio):
            if isinstance(fd, int) and fd > 2:
                os.close(fd)
        if code != 0:
            reason = ""
            if self.args.restore_images:
                reason = quote_log(os.path.join(self.args.restore_work, "restore.log"))
            reason = reason or quote_runc_log(self.files.runc_log) or f"runc exited {code}"
            raise RuntimeError(reason)
        with open(self.files.container_pid) as f:
            self.container_pid = int(f.read().strip())

    def _stdio(self):
        if self.args.terminal:
            console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            path = self.files.console_socket
            if os.path.exists(path):
                os.unlink(path)
            # runc connects to this path from its own process, so keep the
            # short form (which names our fd) alive until it has.
            self.console_path = attach.SocketPath(path)
            console.bind(self.console_path.path)
            console.listen(1)
            null = os.open(os.devnull, os.O_RDWR)
            return (null, null, null), console
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self.outputs = {out_r: "stdout", err_r: "stderr"}
        if self.args.interactive:
            in_r, in_w = os.pipe()
            self.stdin_fd = in_w
        else:
            in_r = os.open(os.devnull, os.O_RDONLY)
        return (in_r, out_w, err_w), None

    def _receive_pty(self, console: socket.socket, runc) -> None:
        console.settimeout(30)
        try:
            conn, _ = console.accept()
        except socket.timeout:
            runc.kill()
            raise RuntimeError("runc never sent the container's terminal") from None
        with conn:
            fds = array.array("i")
            _, ancdata, _, _ = conn.recvmsg(1024, socket.CMSG_LEN(fds.itemsize))
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[:fds.itemsize])
        console.close()
        self.console_path.close()
        os.unlink(self.files.console_socket)
        self.pty_master = fds[0]
        self.outputs = {self.pty_master: "stdout"}
        self.stdin_fd = self.pty_master

    # ---- serving ----------------------------------------------------------
    def listen(self) -> None:
        path = self.files.attach_socket
        if os.path.exists(path):
            os.unlink(path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with attach.SocketPath(path) as short:
            self.server.bind(short.path)
        self.server.listen(8)
        self.selector.register(self.server, selectors.EVENT_READ, "accept")
        for fd in self.outputs:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ, "output")
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(wake_r, selectors.EVENT_READ, "wake")
        if self.args.lazy_pages_pid:
            self._watch_pages()

    def _watch_pages(self) -> None:
        """The daemon that brings a lazily restored container's memory is not
        this process's child: a pidfd says when it ends, whoever else has died."""
        try:
            self.selector.register(os.pidfd_open(self.args.lazy_pages_pid), selectors.EVENT_READ, "pages")
        except ProcessLookupError:
            self._pages_ended()

    def _pages_ended(self) -> None:
        from ferry.checkpoint.lazy import pages_complete
        if pages_complete(self.args.restore_work):
            log.info("every page of the lazily restored container has arrived")
            return
        # The kernel would give its tasks zero pages for the rest: it must not run on.
        log.error("the lazy-pages daemon ended short of pages (see %s): killing the container",
                  os.path.join(self.args.restore_work, "lazy-pages.log"))
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.container_pid, signal.SIGKILL)

    def wait_first_client(self) -> None:
        deadline = time.monotonic() + ATTACH_WAIT_SECONDS
        while not self.clients and time.monotonic() < deadline:
            self.poll(timeout=0.5)

    def serve(self) -> None:
        while self.exit_code is None or self.outputs:
            now = time.monotonic()
            if self.exit_code is None:
                self.scheduler.tick(now)
            self.poll(timeout=self.scheduler.wait(now, 1.0))
        self.logs.flush()

    def poll(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            kind = key.data
            if kind == "accept":
                conn, _ = self.server.accept()
                self.clients.append(conn)
                self.selector.register(conn, selectors.EVENT_READ, "client")
            elif kind == "output":
                self._read_output(key.fd)
            elif kind == "client":
                self._read_client(key.fileobj)
            elif kind == "pages":
                self.selector.unregister(key.fileobj)
                os.close(key.fileobj)
                self._pages_ended()
            elif kind == "wake":
                try:
                    os.read(key.fd, 4096)
                except BlockingIOError:
                    pass
        if self.logs.pending or self.logs.dropped:   # room may have come back while the container was quiet
            self.logs.drain()
        self._reap()

    def _read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: every pty slave is closed
            if exc.errno != errno.EIO:
                raise
            data = b""
        stream = self.outputs[fd]
        if not data:
            self.selector.unregister(fd)
            del self.outputs[fd]
            if fd != self.pty_master:
                os.close(fd)
            return
        self.logs.write(stream, data)
        self._broadcast(attach.STDOUT if stream == "stdout" else attach.STDERR, data)

    def _broadcast(self, kind: int, data: bytes) -> None:
        for conn in list(self.clients):
            try:
                conn.sendall(attach.frame(kind, data))
            except OSError:
                self._drop(conn)

    def _read_client(self, conn: socket.socket) -> None:
        reader = self.readers.setdefault(conn, attach.FrameReader())
        try:
            data = conn.recv(READ_SIZE)
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        for kind, payload in reader.feed(data):
            if kind == attach.STDIN and self.stdin_fd is not None:
                try:
                    os.write(self.stdin_fd, payload)
                except OSError:
                    pass
            elif kind == attach.STDIN_EOF and self.stdin_fd is not None and self.pty_master is None:
                os.close(self.stdin_fd)
                self.stdin_fd = None
            elif kind == attach.RESIZE and self.pty_master is not None:
                rows, cols = (int(v) for v in payload.decode().split())
                fcntl.ioctl(self.pty_master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def _drop(self, conn: socket.socket) -> None:
        self.readers.pop(conn, None)
        if conn in self.clients:
            self.clients.remove(conn)
            self.selector.unregister(conn)
            conn.close()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.scheduler.reaped(pid, status):
                continue
            if pid == self.container_pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
                if self.exit_code < 0:  # killed by a signal: report it as the shell does
                    self.exit_code = 128 - self.exit_code

    # ---- the end ----------------------------------------------------------
    def finish(self) -> None:
        # The room kept since the start lets this exit be recorded on a full
        # disk: exit.json and the exit command's record before the log entries
        # still waiting (serve() flushed them already when the disk had room).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.files.space_reserve)
        # CRIU kills what it dumped: that is no failure, and podman records 0.
        checkpointed = os.path.exists(self.files.checkpointing)
        if checkpointed:
            self.exit_code = 0
        try:
            atomic_write(self.files.exit_record,
                         json.dumps({"exit_code": self.exit_code, "finished_at": utc_now(),
                                     **({"checkpointed": True} if checkpointed else {})}))
        except OSError as error:   # the exit still reaches attach clients and the exit command
            log.error("cannot record exit code %s: %s", self.exit_code, describe(error))
        self._broadcast(attach.EXIT, str(self.exit_code).encode())
        for conn in list(self.clients):
            self._drop(conn)
        self.server.close()
        remove_file(self.files.attach_socket)
        if self.args.exit_command and not os.path.exists(self.files.checkpointing) and not self._held():
            command = json.loads(self.args.exit_command)
            result = proc.run(command, desc="exit command", check=False, timeout=EXIT_COMMAND_TIMEOUT)
            if result.returncode != 0:
                log.warning("exit command failed: %s", proc.tail(result.stderr))
        if not self.logs.flush():
            log.error("lost %d bytes of log entries: %s", len(self.logs.pending), self.logs.reason)

    def _held(self) -> bool:
        """Whether a ferry command holds the container now (a stop, an rm):
        it cleans up itself, and the exit command would only find it busy and
        give up, after its own start (about 0.1 s, which that command waited)."""
        if not self.args.container_lock:
            return False
        from ferry.util.locks import is_locked
        return is_locked(self.args.container_lock)


def reserve(path: str) -> None:
    """Keep RESERVE_BYTES of the container dir's disk, for finish() to free."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
    except OSError as error:   # a disk that full fails the start anyway
        log.warning("cannot keep room for the exit record: %s", describe(error))
        with contextlib.suppress(OSError):
            os.unlink(path)


def describe(error: BaseException) -> str:
    """One line for the launcher and the log; a file error names its file."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"cannot write {error.filename}: {error.strerror}"
        return f"{error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


def parse(argv: list[str]):
    parser = argparse.ArgumentParser(prog="ferry-monitor")
    parser.add_argument("--container-dir", required=True)
    parser.add_argument("--runc-root", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--status-fd", type=int)
    parser.add_argument("--terminal", action="store_true")
    parser.add_argument("--interactive", action="store_true")
    parser.add_argument("--wait-attach", action="store_true",
                        help="start the container only once a client is attached")
    parser.add_argument("--exit-command", help="JSON argv run after the container exits")
    parser.add_argument("--container-lock", help="the container's lock: not run while a command holds it")
    parser.add_argument("--restore-images", help="restore from these CRIU images instead of creating")
    parser.add_argument("--restore-work", help="CRIU's work dir for the restore (its log goes there)")
    parser.add_argument("--tcp-established", action="store_true")
    parser.add_argument("--checkpoint-schedule", help="the container's checkpoint schedule (runtime.schedule)")
    parser.add_argument("--lazy-pages-pid", type=int,
                        help="a lazy restore's lazy-pages daemon: the container dies if it ends short of pages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--argv-fd"]:
        # Started warm (launch.WarmMonitor): the arguments come when the
        # container is ready; none (the pipe closed) means it is not needed.
        with os.fdopen(int(argv[1]), "rb") as source:
            data = source.read(1 << 20)
        if not data:
            return 0
        named = argv[2:4]
        argv = json.loads(data)
        if named != ["--container-dir", parse(argv).container_dir]:
            return 2   # its command line must name the container it monitors
    args = parse(argv)
    if os.fork():
        os._exit(0)  # the launcher reaps this at once; the monitor lives on as an orphan
    os.setsid()
    try:   # each of these writes a file, which a full disk refuses: the launcher must hear why
        logging.basicConfig(filename=ContainerFiles(args.container_dir).monitor_log, level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(message)s")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        atomic_write(ContainerFiles(args.container_dir).monitor_pid, str(os.getpid()))
        monitor = Monitor(args)
    except Exception as exc:
        if args.status_fd is not None:
            with contextlib.suppress(OSError):
                os.write(args.status_fd, (json.dumps({"ok": False, "error": describe(exc)}) + "\n").encode())
        return 1
    reserve(ContainerFiles(args.container_dir).space_reserve)
    try:
        monitor.create()
        monitor.listen()
        if args.wait_attach:
            monitor.report(ok=True, pid=monitor.container_pid, state="created")
            monitor.wait_first_client()
        if not args.restore_images:  # a restored container is already running
            monitor.runc.start(args.id)
        monitor.report(ok=True, pid=monitor.container_pid, state="running")
    except Exception as exc:  # report any start-up failure to the launcher, then leave
        log.exception("start-up failed")
        with contextlib.suppress(OSError):
            os.unlink(ContainerFiles(args.container_dir).space_reserve)   # no exit to record
        try:
            monitor.runc.delete(args.id)
        except Exception:
            log.exception("could not delete the half-started container")
        if args.status_fd is not None:
            monitor.report(ok=False, error=describe(exc))
            return 1
        # The launcher was told "created" and an attach client waits: tell it.
        monitor.exit_code = EXIT_START_FAILED
        monitor.outputs.clear()
    monitor.serve()
    monitor.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
