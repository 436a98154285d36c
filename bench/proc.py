"""The benchmark's subprocess calls: ferry's own chokepoint (argv lists, a
timeout on every call, the tools' PATH, one clear error on failure), with the
wall time measured around each call."""

from __future__ import annotations

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
