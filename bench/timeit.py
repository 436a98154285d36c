"""Time a command N times, each as a fresh process; print the samples as JSON.

    python -m bench.timeit --repeat 10 --warmup 2 -- ferry --root R ps

The driver runs this helper in the mount namespace of the engine under test
(podman's runs under nsenter), so nsenter itself is never inside a sample.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timeit")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to time")
    samples, failures = [], []
    for i in range(args.warmup + args.repeat):
        started = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, timeout=args.timeout, stdin=subprocess.DEVNULL)
            code = done.returncode
            err = done.stderr.decode(errors="replace").strip()[-300:]
        except subprocess.TimeoutExpired:
            code, err = -1, f"timed out after {args.timeout} s"
        elapsed = time.monotonic() - started
        if i < args.warmup:
            continue
        if code == 0:
            samples.append(elapsed)
        else:
            failures.append(f"exit {code}: {err}")
    print(json.dumps({"samples": samples, "failures": failures}))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
