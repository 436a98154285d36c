"""The benchmark's one subprocess chokepoint: argv lists, a timeout on every
call, wall time measured around the call, and one clear error on failure."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

# runc finds CRIU through PATH, so /usr/local/sbin (CRIU >= 4.2) must come first:
# the same environment ferry gives the tools it runs.
from ferry.util.proc import TOOL_PATH, tool_env as env  # noqa: E402,F401


class BenchError(Exception):
    """A benchmark step failed: what, and the tail of what the tool said."""


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(argv: list[str], *, desc: str, timeout: float, check: bool = True,
        input: str | None = None, cwd: str | None = None) -> Result:
    """Run argv to completion; raise BenchError on timeout, or on failure when check."""
    started = time.monotonic()
    try:
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              env=env(), cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stderr or b"")
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        raise BenchError(f"{desc}: timed out after {timeout:.0f} s ({' '.join(argv)})\n{tail(out)}") from None
    except OSError as exc:
        raise BenchError(f"{desc}: cannot run {argv[0]} ({exc})") from None
    seconds = time.monotonic() - started
    result = Result(tuple(argv), done.returncode, done.stdout, done.stderr, seconds)
    if check and done.returncode != 0:
        raise BenchError(f"{desc}: exit {done.returncode} ({' '.join(argv)})\n"
                         f"{tail(done.stderr or done.stdout)}")
    return result
