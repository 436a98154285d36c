"""The one subprocess chokepoint (the habit of pip's utils/subprocess.py).

Every external program ferry runs goes through run() or spawn(): argv lists
only, output captured and logged, failures raised as ToolError with the tail
of what the tool printed. Unit tests fake tools by replacing `_execute`.
"""

from __future__ import annotations

import os
import select
import subprocess
from collections import namedtuple
from collections.abc import Sequence

from ferry.util.errors import NotFound, ToolError
from ferry.util.log import get_logger

log = get_logger("ferry.proc")

# Tools installed by `make setup` live in /usr/local/sbin; a caller's PATH
# (cron, CI, sudo) may lack the sbin directories.
TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TAIL_LINES = 5


# A named tuple, not a dataclass: the container monitor imports this module,
# and dataclasses (with inspect) would cost its every start about 8 ms.
Result = namedtuple("Result", "argv returncode stdout stderr")


def criu_binary() -> str | None:
    """The criu ferry uses: $FERRY_CRIU, else the first on ferry's tool PATH."""
    import shutil
    override = os.environ.get("FERRY_CRIU")
    if override:
        return override if os.access(override, os.X_OK) else None
    return shutil.which("criu", path=TOOL_PATH)


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = TOOL_PATH + (":" + env["PATH"] if env.get("PATH") else "")
    env.setdefault("LC_ALL", "C")
    if extra:
        env.update(extra)
    return env


def tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def _execute(argv: Sequence[str], *, timeout: float | None, input: str | None,
             env: dict[str, str], cwd: str | None) -> Result:
    # No tool reads ferry's stdin: it may be an archive (restore --file -).
    done = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          timeout=timeout, env=env, cwd=cwd, errors="replace")
    return Result(tuple(argv), done.returncode, done.stdout, done.stderr)


def run(argv: Sequence[str], *, desc: str, timeout: float | None = 60,
        check: bool = True, input: str | None = None,
        env: dict[str, str] | None = None, cwd: str | None = None) -> Result:
    """Run a tool to completion. `desc` names the action for error messages."""
    if isinstance(argv, str):
        raise TypeError("argv must be a list, not a string")
    log.debug("run %s: %s", desc, " ".join(argv))
    try:
        result = _execute(argv, timeout=timeout, input=input, env=tool_env(env), cwd=cwd)
    except FileNotFoundError:
        raise NotFound(f"{desc}: '{argv[0]}' is not installed",
                       hint="run 'make setup' as root") from None
    except subprocess.TimeoutExpired as exc:
        out = (exc.stderr or b"")
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        raise ToolError(desc, None, tail(out)) from None
    log.debug("%s: exit %s", desc, result.returncode)
    if result.stdout.strip():
        log.debug("%s stdout: %s", desc, tail(result.stdout, 20))
    if result.stderr.strip():
        log.debug("%s stderr: %s", desc, tail(result.stderr, 20))
    if check and result.returncode != 0:
        raise ToolError(desc, result.returncode, tail(result.stderr or result.stdout))
    return result


def spawn(argv: Sequence[str], *, desc: str, pass_fds: Sequence[int] = (),
          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
          stderr=subprocess.DEVNULL, env: dict[str, str] | None = None,
          cwd: str | None = None, new_session: bool = False) -> subprocess.Popen:
    """Start a long-lived tool (criu swrk, a container monitor) and return it."""
    if isinstance(argv, str):
        raise TypeError("argv must be a list, not a string")
    log.debug("spawn %s: %s", desc, " ".join(argv))
    try:
        return subprocess.Popen(list(argv), pass_fds=tuple(pass_fds), stdin=stdin,
                                stdout=stdout, stderr=stderr, env=tool_env(env),
                                cwd=cwd, start_new_session=new_session)
    except FileNotFoundError:
        raise NotFound(f"{desc}: '{argv[0]}' is not installed",
                       hint="run 'make setup' as root") from None


def wait(process: subprocess.Popen, timeout: float | None) -> int:
    """process.wait(timeout), woken by the exit itself: Popen's own wait with
    a timeout polls, sleeping up to 50 ms between looks, and a runc
    checkpoint of 120 ms paid about 40 ms of it. Raises TimeoutExpired as
    Popen's does."""
    if timeout is None or process.returncode is not None:
        return process.wait()
    exited = exit_watch(process.pid)
    if exited is None:
        return process.wait(timeout=timeout)
    try:
        if not select.select([exited], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(process.args, timeout)
    finally:
        os.close(exited)
    return process.wait()


def exit_watch(pid: int | None) -> int | None:
    """A descriptor (a pidfd) that turns readable when `pid` exits, for
    select; None when there is none to have: no pid, gone already (reaped),
    or a kernel without pidfds."""
    if not pid:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def kill_group(process: subprocess.Popen) -> None:
    """Kill a tool started with new_session, and what it started (runc and its CRIU share that session)."""
    import signal
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def run_foreground(argv: Sequence[str], *, desc: str, env: dict[str, str] | None = None) -> int:
    """Run a tool on the caller's own terminal (exec -it) and return its exit code."""
    log.debug("foreground %s: %s", desc, " ".join(argv))
    try:
        return subprocess.call(list(argv), env=tool_env(env))
    except FileNotFoundError:
        raise NotFound(f"{desc}: '{argv[0]}' is not installed",
                       hint="run 'make setup' as root") from None
