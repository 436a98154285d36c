"""The benchmark's subprocess calls: ferry's own chokepoint (argv lists, a
timeout on every call, the tools' PATH, one clear error on failure), with the
wall time measured around each call."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

from ferry.util import proc as ferry_proc
from ferry.util.errors import FerryError

# runc finds CRIU through PATH, so /usr/local/sbin (CRIU >= 4.2) must come first:
# the same environment ferry gives the tools it runs.
TOOL_PATH = ferry_proc.TOOL_PATH
env = ferry_proc.tool_env
tail = ferry_proc.tail


class BenchError(Exception):
    """A benchmark step failed: what, and the tail of what the tool said."""


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run(argv: list[str], *, desc: str, timeout: float, check: bool = True,
        input: str | None = None, cwd: str | None = None) -> Result:
    """Run argv to completion; raise BenchError on timeout, or on failure when check."""
    started = time.monotonic()
    try:
        done = ferry_proc.run(argv, desc=desc, timeout=timeout, check=check, input=input, cwd=cwd)
    except FerryError as exc:
        raise BenchError(f"{exc} ({' '.join(argv)})") from None
    return Result(done.argv, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def run_watched(argv: list[str], *, desc: str, timeout: float, watch, check: bool = True) -> Result:
    """run(), but with watch(pid) (a context manager, such as bench.rss's
    Sampler.watch) around the child's whole life. The wall time stops when
    the child has exited, before the watcher winds down."""
    started = time.monotonic()
    try:
        child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, errors="replace", env=env())
    except FileNotFoundError:
        raise BenchError(f"{desc}: '{argv[0]}' is not installed") from None
    with watch(child.pid):
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            raise BenchError(f"{desc}: timed out after {timeout:.0f} s: {tail(err or '')} ({' '.join(argv)})") \
                from None
        seconds = time.monotonic() - started
    if check and child.returncode != 0:
        raise BenchError(f"{desc}: exit {child.returncode}: {tail(err or out)} ({' '.join(argv)})")
    return Result(tuple(argv), child.returncode, out, err, seconds)
