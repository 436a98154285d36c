"""Start a container's monitor and wait for its verdict."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time

from ferry.runtime.runc import Runc, kill_container_cgroups
from ferry.store.layout import ContainerFiles
from ferry.util import proc
from ferry.util.errors import ToolError

REPORT_TIMEOUT = 120.0   # seconds; FERRY_START_TIMEOUT overrides it (tests of a hung runc)


MONITOR = [sys.executable, "-m", "ferry.runtime.monitor"]


class WarmMonitor:
    """A monitor's interpreter started ahead of its container, waiting for its
    arguments on a pipe: its start and imports (about 80 ms) then overlap
    with what comes before the restore (an archive arriving) instead of
    adding to the container's downtime. Unused, it ends when closed. Its
    command line names the container's dir from the start, as any monitor's
    does: that is how a monitor is told from a stale pid."""

    def __init__(self, container_dir: str):
        self.container_dir = container_dir
        self.status_r, self.status_w = os.pipe()
        argv_r, self.argv_w = os.pipe()
        try:
            self.process = proc.spawn(MONITOR + ["--argv-fd", str(argv_r), "--container-dir", container_dir],
                                      desc="container monitor",
                                      pass_fds=[argv_r, self.status_w], new_session=True)
        except BaseException:
            for fd in (self.status_r, self.status_w, self.argv_w):
                os.close(fd)
            raise
        finally:
            os.close(argv_r)

    def launch(self, argv: list[str]) -> None:
        """Hand it its arguments (MONITOR's argv without MONITOR); its status fd is status_w."""
        try:
            with os.fdopen(self.argv_w, "w") as out:
                self.argv_w = -1
                out.write(json.dumps(argv))
        except BrokenPipeError:
            raise ToolError("starting the container monitor", self.process.wait(),
                            "it ended before it was given its container") from None

    def close(self) -> None:
        """Let an unused one end (EOF on its pipe), and reap it."""
        for name in ("argv_w", "status_w", "status_r"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)
        self.process.wait()


def start_monitor(*, container_dir: str, runc_root: str, container_id: str, bundle: str,
                  terminal: bool, interactive: bool, wait_attach: bool,
                  exit_command: list[str], container_lock: str | None = None, restore_images: str | None = None,
                  restore_work: str | None = None, tcp_established: bool = False,
                  lazy_pages_pid: int | None = None, checkpoint_schedule: str | None = None,
                  warm: WarmMonitor) -> dict:
    """Hand `warm` (a monitor started ahead, which then runs runc create and
    start, or runc restore) its arguments, and return its report.

    Raises ToolError with runc's own message when the container did not start.
    """
    assert warm.container_dir == container_dir, (warm.container_dir, container_dir)
    status_r, status_w = warm.status_r, warm.status_w
    warm.status_r = -1   # read and closed below
    argv = ["--container-dir", container_dir,
            "--runc-root", runc_root, "--id", container_id, "--bundle", bundle,
            "--status-fd", str(status_w), "--exit-command", json.dumps(exit_command)]
    argv += ["--container-lock", container_lock] if container_lock else []
    argv += ["--checkpoint-schedule", checkpoint_schedule] if checkpoint_schedule else []
    argv += ["--terminal"] if terminal else []
    argv += ["--interactive"] if interactive else []
    argv += ["--wait-attach"] if wait_attach else []
    if restore_images:
        argv += ["--restore-images", restore_images, "--restore-work", restore_work or restore_images]
        argv += ["--tcp-established"] if tcp_established else []
        argv += ["--lazy-pages-pid", str(lazy_pages_pid)] if lazy_pages_pid else []
    try:
        warm.launch(argv)
    finally:
        os.close(status_w)
        warm.status_w = -1
    warm.process.wait()  # the monitor forks and this first process exits at once
    try:
        report = _read_report(status_r)
    finally:
        os.close(status_r)
    if not report:
        # Given up on: runc or CRIU may still run (a CRIU that loops on a bad
        # image never ends), and nothing else would ever stop them.
        _kill_monitor(container_dir)
        kill_container_cgroups(container_id, Runc(runc_root).cgroup_parent)
        raise ToolError("starting the container monitor", None,
                        f"it said nothing in {_report_timeout():.0f} s and was stopped; "
                        f"see {os.path.join(container_dir, 'monitor.log')}")
    if not report.get("ok"):
        raise ToolError("starting the container", 1, report.get("error", "unknown error"))
    return report


def _kill_monitor(container_dir: str) -> None:
    """The monitor's whole process group: itself, runc and CRIU (the monitor
    is a session leader, so its ID is the group's)."""
    try:
        with open(ContainerFiles(container_dir).monitor_pid) as f:
            group = int(f.read().strip())
        with open(f"/proc/{group}/cmdline", "rb") as f:
            command = f.read()
    except (OSError, ValueError):
        return
    if b"ferry.runtime.monitor" not in command or os.fsencode(container_dir) not in command:
        return   # a stale file, its ID now someone else's
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def _report_timeout() -> float:
    return float(os.environ.get("FERRY_START_TIMEOUT") or REPORT_TIMEOUT)


def _read_report(fd: int) -> dict | None:
    deadline = time.monotonic() + _report_timeout()
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    try:
        return json.loads(data.decode().splitlines()[0]) if data.strip() else None
    except (ValueError, IndexError):
        return None
