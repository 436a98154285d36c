"""The gap client: one connection, requests in a bounded loop, and the longest
interval without a reply.

    python -m bench.client --proto redis --host 10.90.0.5 --port 6379

Protocols: `redis` (GET of one key, one persistent connection), `http` (HTTP/1.1
keep-alive, one persistent connection) and `http-close` (a new connection per
request, for servers without keep-alive such as busybox httpd).

It prints `ready` once it has had --ready-after replies. The driver then
checkpoints, removes and restores the server, and writes `restored T` on stdin
(T on the CLOCK_MONOTONIC time base, shared by all processes). The client stops
--post-seconds after its first reply after T (or at --max-seconds / --max-requests)
and prints one JSON line: the longest gap, its bounds, and whether the first
connection survived. A persistent connection that gets no reply long after T is
dropped and replaced (that counts as a lost connection, and the gap runs until
the new connection's first reply).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

CONNECT_TIMEOUT = 0.25     # a SYN into a frozen (network-locked) container is dropped
RECV_SLICE = 0.2           # wake up this often while waiting for a reply
CLOSE_READ_TIMEOUT = 0.25  # http-close: give up on one request after this long, and retry
RETRY_PAUSE = 0.01
TCP_RTO_MAX_MS = 44        # Linux >= 6.15 socket option (unused by default; see --rto-max-ms)


class Protocol:
    persistent = True

    def request(self) -> bytes:
        raise NotImplementedError

    def parse(self, buf: bytearray) -> int | None:
        """Length of one complete reply at the start of buf, or None if incomplete.
        Raise ValueError for a reply that is complete but wrong."""
        raise NotImplementedError


class RedisGet(Protocol):
    def __init__(self, key: str):
        data = key.encode()
        self._request = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(data), data)

    def request(self) -> bytes:
        return self._request

    def parse(self, buf: bytearray) -> int | None:
        end = buf.find(b"\r\n")
        if end < 0:
            return None
        kind = buf[:1]
        if kind == b"$":
            size = int(buf[1:end])
            if size < 0:
                raise ValueError("the key is missing: the server lost its data")
            total = end + 2 + size + 2
            return total if len(buf) >= total else None
        if kind in (b"+", b":"):
            return end + 2
        raise ValueError(f"unexpected redis reply {bytes(buf[:60])!r}")


class Http(Protocol):
    def __init__(self, host: str, close: bool):
        self.persistent = not close
        version = b"HTTP/1.0" if close else b"HTTP/1.1"
        self._request = b"GET / %s\r\nHost: %s\r\n\r\n" % (version, host.encode())

    def request(self) -> bytes:
        return self._request

    def parse(self, buf: bytearray) -> int | None:
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = bytes(buf[:head_end]).decode("latin-1")
        status = head.split("\r\n", 1)[0]
        if " 200 " not in status + " ":
            raise ValueError(f"unexpected HTTP status {status!r}")
        length = None
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            return None if self.persistent else -1   # http-close: the body runs to EOF
        total = head_end + 4 + length
        return total if len(buf) >= total else None


class Gaps:
    """Reply times folded into the longest gap (pure; tested in bench/tests)."""

    def __init__(self):
        self.replies = 0
        self.last: float | None = None
        self.first: float | None = None
        self.max_gap = 0.0
        self.gap_from: float | None = None
        self.gap_to: float | None = None

    def reply(self, t: float) -> None:
        if self.last is not None and t - self.last > self.max_gap:
            self.max_gap, self.gap_from, self.gap_to = t - self.last, self.last, t
        if self.first is None:
            self.first = t
        self.last = t
        self.replies += 1


class Control(threading.Thread):
    """Reads `restored T` and `stop` from stdin (EOF is not a stop: the driver
    closes stdin once it has said `restored`)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.restored_at: float | None = None
        self.stop = False

    def run(self) -> None:
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["restored"] and len(words) == 2:
                self.restored_at = float(words[1])
            elif words[:1] == ["stop"]:
                self.stop = True


def connect(host: str, port: int, rto_max_ms: int | None) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if rto_max_ms:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_RTO_MAX_MS, rto_max_ms)
    return sock


def run(args, control: Control, out=sys.stdout) -> dict:
    proto: Protocol = RedisGet(args.key) if args.proto == "redis" else Http(args.host, args.proto == "http-close")
    gaps = Gaps()
    started = time.monotonic()
    deadline = started + args.max_seconds
    sock: socket.socket | None = None
    buf = bytearray()
    connections = reconnects = connect_failures = requests = 0
    errors: list[str] = []
    ended = "limit"
    ready_sent = False
    first_after: float | None = None

    def note(error: str) -> None:
        if len(errors) < 20:
            errors.append(f"{time.monotonic() - started:.3f}s {error}")

    def drop(why: str) -> None:
        nonlocal sock
        if sock is not None:
            sock.close()
            sock = None
            buf.clear()
            if proto.persistent and why:
                nonlocal reconnects
                reconnects += 1
                note(why)

    while True:
        now = time.monotonic()
        if control.stop:
            ended = "stopped"
            break
        if now >= deadline or requests >= args.max_requests:
            ended = "limit"
            break
        restored = control.restored_at
        if restored is not None and first_after is not None and now - first_after >= args.post_seconds:
            ended = "done"
            break
        if sock is None:
            try:
                sock = connect(args.host, args.port, args.rto_max_ms)
                connections += 1
            except OSError:
                connect_failures += 1
                time.sleep(RETRY_PAUSE)
                continue
        try:
            sock.sendall(proto.request())
            requests += 1
            sent = time.monotonic()
            while True:
                try:
                    sock.settimeout(RECV_SLICE)
                    chunk = sock.recv(65536)
                except socket.timeout:
                    now = time.monotonic()
                    if control.stop or now >= deadline:
                        raise TimeoutError("stopped while waiting for a reply")
                    if not proto.persistent and now - sent > CLOSE_READ_TIMEOUT:
                        raise TimeoutError("no reply")
                    restored = control.restored_at
                    if proto.persistent and restored is not None and gaps.last is not None \
                            and now - restored > max(args.stale_after, 2.5 * (restored - gaps.last)):
                        raise TimeoutError(f"no reply {now - restored:.1f} s after the restore")
                    continue
                if not chunk:
                    if not proto.persistent and proto.parse(buf) == -1:
                        break
                    raise ConnectionError("the server closed the connection")
                buf += chunk
                size = proto.parse(buf)
                if size is not None and size >= 0:
                    del buf[:size]
                    break
        except (OSError, ValueError) as exc:
            if isinstance(exc, TimeoutError) and str(exc).startswith("stopped"):
                continue
            drop(f"{type(exc).__name__}: {exc}")
            if not proto.persistent:
                sock = None
            time.sleep(RETRY_PAUSE)
            continue
        t = time.monotonic()
        gaps.reply(t)
        if control.restored_at is not None and first_after is None and t > control.restored_at:
            first_after = t
        if not proto.persistent:
            sock.close()
            sock = None
            buf.clear()
        if not ready_sent and gaps.replies >= args.ready_after:
            print("ready", file=out, flush=True)
            ready_sent = True
        pause = args.interval - (time.monotonic() - t)
        if pause > 0:
            time.sleep(pause)
    if sock is not None:
        sock.close()
    restored = control.restored_at
    return {
        "replies": gaps.replies, "requests": requests, "max_gap": gaps.max_gap,
        "gap_from": gaps.gap_from, "gap_to": gaps.gap_to,
        "connections": connections, "reconnects": reconnects, "connect_failures": connect_failures,
        "kept_connection": proto.persistent and connections == 1 and reconnects == 0,
        "persistent": proto.persistent,
        "restored_at": restored,
        "first_reply_after_restore": None if first_after is None or restored is None else first_after - restored,
        "ended": ended, "errors": errors, "seconds": time.monotonic() - started,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--proto", choices=("redis", "http", "http-close"), required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", default="key:1")
    parser.add_argument("--interval", type=float, default=0.001, help="seconds between requests")
    parser.add_argument("--ready-after", type=int, default=50)
    parser.add_argument("--post-seconds", type=float, default=0.5)
    parser.add_argument("--stale-after", type=float, default=30.0,
                        help="drop a persistent connection silent this long after the restore")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument("--rto-max-ms", type=int, default=None,
                        help="cap the client's TCP retransmission timeout (Linux >= 6.15)")
    args = parser.parse_args(argv)
    host_ok = args.host.startswith(("127.", "10.")) or args.host == "localhost"
    if not host_ok:
        parser.error("the gap client talks only to loopback or container addresses (127.x, 10.x)")
    control = Control()
    control.start()
    result = run(args, control)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
