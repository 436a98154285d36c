"""Time a command N times, each as a fresh process; print the samples as JSON.

    python -m bench.timeit --repeat 10 --warmup 2 -- ferry --root R ps
    python -m bench.timeit --repeat 1 --warmup 0 --wait-http 10.90.250.100:80 -- ferry --root R run -d ...

With --wait-http, a sample runs until the command has exited AND a GET on
HOST:PORT has answered 200: the service is polled every --poll-interval
seconds (a connection refused or reset, or a short answer, is retried) from
the command's exit on, and the sample is the time to that first answer.

The driver runs this helper in the mount namespace of the engine under test
(podman's runs under nsenter), so nsenter itself is never inside a sample.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time

REQUEST = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n"


def http_ok(host: str, port: int, timeout: float) -> bool:
    """One GET /: True when the status line says 200."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(REQUEST)
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    line = data.split(b"\r\n", 1)[0]
    return line.startswith(b"HTTP/1.") and line.split()[1:2] == [b"200"]


def wait_http(host: str, port: int, *, interval: float, timeout: float, attempt_timeout: float = 1.0) -> int | None:
    """Poll until a GET answers 200; the number of attempts, or None after timeout."""
    end = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        if http_ok(host, port, min(attempt_timeout, max(0.01, end - time.monotonic()))):
            return attempts
        if time.monotonic() >= end:
            return None
        time.sleep(interval)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timeit")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--wait-http", metavar="HOST:PORT",
                        help="after the command, poll HOST:PORT until a GET answers 200; time both")
    parser.add_argument("--poll-interval", type=float, default=0.003)
    parser.add_argument("--wait-timeout", type=float, default=30.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to time")
    target = None
    if args.wait_http:
        host, _, port = args.wait_http.rpartition(":")
        if not host or not port.isdigit():
            parser.error("--wait-http takes HOST:PORT")
        target = (host, int(port))
    samples, failures, details = [], [], []
    for i in range(args.warmup + args.repeat):
        started = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, timeout=args.timeout, stdin=subprocess.DEVNULL)
            code = done.returncode
            err = done.stderr.decode(errors="replace").strip()[-300:]
        except subprocess.TimeoutExpired:
            code, err = -1, f"timed out after {args.timeout} s"
        exited = time.monotonic()
        attempts = None
        if target and code == 0:
            attempts = wait_http(*target, interval=args.poll_interval, timeout=args.wait_timeout)
            if attempts is None:
                code, err = -2, f"no HTTP answer from {args.wait_http} within {args.wait_timeout} s"
        elapsed = time.monotonic() - started
        if i < args.warmup:
            continue
        if code == 0:
            samples.append(elapsed)
            if target:
                details.append({"command": exited - started, "answer_after_exit": elapsed - (exited - started),
                                "attempts": attempts})
        else:
            failures.append(f"exit {code}: {err}")
    result = {"samples": samples, "failures": failures}
    if target:
        result["details"] = details
    print(json.dumps(result))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
