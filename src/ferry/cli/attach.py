"""The client side of attach: relay the user's terminal to a container's monitor."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import sys
import termios
import time
import tty as ttymode

from ferry.cli import render
from ferry.runtime import attach
from ferry.util.errors import FerryError, UsageError

CONNECT_TIMEOUT = 30.0
EXIT_CODE_WAIT = 30.0
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
# podman's (docker's term.ToBytes) names of the control bytes 0..31
_CONTROL_NAMES = ["ctrl-@", *(f"ctrl-{c}" for c in "abcdefghijklmnopqrstuvwxyz"),
                  "ctrl-[", "ctrl-\\", "ctrl-]", "ctrl-^", "ctrl-_"]


def parse_detach_keys(text: str) -> bytes:
    """podman's --detach-keys: comma-separated keys, each one byte as typed or
    `ctrl-X` (X in a-z @ [ \\ ] ^ _) or DEL; the empty string turns detaching off."""
    if text == "":
        return b""
    keys = bytearray()
    for key in text.split(","):
        raw = key.encode()
        if len(raw) == 1:
            keys += raw
        elif key in _CONTROL_NAMES:
            keys.append(_CONTROL_NAMES.index(key))
        elif key == "DEL":
            keys.append(127)
        else:
            raise UsageError(f"invalid detach keys: Unknown character: {key!r}",
                             hint="give keys like 'ctrl-p,ctrl-q', one character, or '' for none")
    return bytes(keys)


class DetachMatcher:
    """Watches the user's input for the detach keys, across reads: bytes that
    may begin the sequence are held back until it is complete (detach) or
    broken (they go to the container after all)."""

    def __init__(self, keys: bytes):
        self.keys = keys
        self.held = 0   # how many of the keys' first bytes were just typed

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(the input for the container, whether the user detached)."""
        if not self.keys:
            return data, False
        out = bytearray()
        for byte in data:
            if byte == self.keys[self.held]:
                self.held += 1
                if self.held == len(self.keys):
                    self.held = 0
                    return bytes(out), True
                continue
            out += self.keys[:self.held]   # a broken sequence (held > 0, so the keys are two or more)
            self.held = 0
            if byte == self.keys[0]:
                self.held = 1
            else:
                out.append(byte)
        return bytes(out), False


def attach_and_wait(engine, container, *, stdin: bool, tty: bool, detach_keys: bytes = b"\x10\x11",
                    sig_proxy: bool = True) -> int | None:
    """Stream the container's output here (and our input there) until it exits,
    and give its exit code; None when the user detached (it runs on)."""
    sock = _connect(engine.containers.attach_socket(container))
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "socket")
    matcher = DetachMatcher(detach_keys)
    if stdin:
        try:
            selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
        except PermissionError:   # a file or /dev/null, which epoll refuses: it never blocks, so send it all now
            if _send_file_input(sock, matcher):
                sock.close()
                return None
    try:
        exit_code = _relay(engine, container, sock, selector, matcher, tty=tty, sig_proxy=sig_proxy)
    except _SignalledAway as away:   # without --sig-proxy: the container runs on, and podman exits at once, silently
        sock.close()
        raise SystemExit(away.code) from None
    if exit_code is None:
        return None
    sock.close()
    engine.containers.wait_monitor(container)  # --rm cleanup finishes before we return
    if engine.containers.ended_by_checkpoint(container.id):
        render.warning(f"container {container.name} was checkpointed",
                       hint=f"'ferry ps -a' shows whether its checkpoint is kept here, for 'ferry container "
                            f"restore {container.name}'")
    return exit_code


def _relay(engine, container, sock: socket.socket, selector, matcher: DetachMatcher, *, tty: bool,
           sig_proxy: bool) -> int | None:
    """Output here and input there until the container's exit code comes (None: detached)."""
    reader = attach.FrameReader()
    exit_code = None
    with _terminal(sock, tty), _signal_proxy(engine, container, enabled=sig_proxy, tty=tty):
        while exit_code is None:
            for key, _ in selector.select(timeout=1.0):
                if key.data == "stdin":
                    data = os.read(key.fd, 65536)
                    if data:
                        data, detached = matcher.feed(data)
                        if data:
                            sock.sendall(attach.frame(attach.STDIN, data))
                        if detached:
                            sock.close()
                            return None
                    else:
                        sock.sendall(attach.frame(attach.STDIN_EOF))
                        selector.unregister(key.fd)
                    continue
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    exit_code = _exit_code_after_hangup(engine, container)
                    break
                for kind, payload in reader.feed(data):
                    if kind == attach.EXIT:
                        exit_code = int(payload)
                    else:
                        stream = sys.stdout if kind == attach.STDOUT else sys.stderr
                        stream.buffer.write(payload)
                        stream.flush()
    return exit_code


def _send_file_input(sock: socket.socket, matcher: DetachMatcher) -> bool:
    """Our stdin, a file, sent to the container up to its end (or the detach
    keys in it: True then)."""
    while True:
        data = os.read(sys.stdin.fileno(), 65536)
        if not data:
            sock.sendall(attach.frame(attach.STDIN_EOF))
            return False
        data, detached = matcher.feed(data)
        if data:
            sock.sendall(attach.frame(attach.STDIN, data))
        if detached:
            return True


def _connect(path: str) -> socket.socket:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with attach.SocketPath(path) as short:
                sock.connect(short.path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise FerryError("could not attach to the container", hint=f"no monitor answers at {path}")
            time.sleep(0.05)


def _exit_code_after_hangup(engine, container) -> int:
    deadline = time.monotonic() + EXIT_CODE_WAIT
    while time.monotonic() < deadline:
        code = engine.containers.exit_code(container.id)
        if code is not None:
            return code
        time.sleep(0.05)
    raise FerryError("the container's monitor went away without an exit code",
                     hint=f"see 'ferry logs {container.name}'")


@contextlib.contextmanager
def _terminal(sock: socket.socket, tty: bool):
    if not tty or not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def resize(*_):
        size = os.get_terminal_size(fd)
        with contextlib.suppress(OSError):
            sock.sendall(attach.frame(attach.RESIZE, f"{size.lines} {size.columns}".encode()))
    previous = signal.signal(signal.SIGWINCH, resize)
    resize()
    ttymode.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)


class _SignalledAway(Exception):
    """INT or TERM without --sig-proxy: the attach ends, the container runs on."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


# podman 4.3.1's exit codes (measured here) when INT or TERM ends an attach without --sig-proxy
UNPROXIED_EXIT = {signal.SIGINT: 1, signal.SIGTERM: 0}


@contextlib.contextmanager
def _signal_proxy(engine, container, *, enabled: bool, tty: bool):
    """podman's --sig-proxy: Ctrl-C and TERM go to the container, not to ferry;
    without it, they end the attach. On a terminal, Ctrl-C is a key the container reads."""
    if tty:
        yield
        return
    def forward(signum, _frame):
        if not enabled:
            raise _SignalledAway(UNPROXIED_EXIT[signal.Signals(signum)])
        with contextlib.suppress(FerryError):
            engine.containers.kill(container.id, signal.Signals(signum).name)
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
