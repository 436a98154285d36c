"""runc, driven through its CLI with one state directory per ferry root.

Each root passes its own `--root`, so two roots on one machine never see each
other's containers; runc's own errors go to a JSON log that is quoted on failure.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import shlex
import subprocess

from ferry.host.criulog import quote_log
from ferry.util import phases, proc
from ferry.util.errors import ToolError

CGROUP_PARENT = "ferry"   # the default root's; another root's is cgroup_parent(root)


def cgroup_parent(root: str) -> str:
    """The parent cgroup of one state root's containers. Two roots on one
    host (a migration between them, as tests and benchmarks make) must not
    share a container's cgroups, which the same container ID would name in
    both: one root's frozen copy would freeze the other's, and its cleanup
    would kill it."""
    import hashlib
    from ferry.store.layout import DEFAULT_ROOT
    root = os.path.abspath(root)
    if root == DEFAULT_ROOT:
        return CGROUP_PARENT
    return f"{CGROUP_PARENT}-{hashlib.sha256(root.encode()).hexdigest()[:12]}"


CHECKPOINT_TIMEOUT = 1800  # seconds; a dump of many GiB can take minutes


class Runc:
    def __init__(self, state_root: str):
        self.state_root = state_root   # ROOT/runc

    @functools.cached_property
    def cgroup_parent(self) -> str:
        # When asked: `inspect` and `logs` never need it, nor hashlib's OpenSSL (4 ms).
        return cgroup_parent(os.path.dirname(os.path.abspath(self.state_root)))

    # The container's cgroups, under this root's parent.
    def freeze(self, container_id: str) -> bool:
        return freeze(container_id, self.cgroup_parent)

    def thaw(self, container_id: str) -> None:
        thaw(container_id, self.cgroup_parent)

    def pause(self, container_id: str) -> None:
        proc.run(self.base() + ["pause", container_id], desc=f"runc pause {container_id[:12]}")

    def resume(self, container_id: str) -> None:
        """runc resume; when runc no longer knows the container (it died), the
        freezer is thawed directly: that is what holds its tasks."""
        result = proc.run(self.base() + ["resume", container_id], desc=f"runc resume {container_id[:12]}",
                          check=False)
        if result.returncode != 0:
            self.thaw(container_id)

    def freeze_at_dump(self, container_id: str, work: str) -> str:
        return freeze_at_dump(container_id, self.cgroup_parent, work)

    def memory_in_use(self, container_id: str) -> int | None:
        return memory_in_use(container_id, self.cgroup_parent)

    def base(self, log_path: str | None = None) -> list[str]:
        argv = ["runc", "--root", self.state_root]
        if log_path:
            argv += ["--log", log_path, "--log-format", "json"]
        criu = proc.criu_binary()
        if criu:
            # runc would otherwise take the first criu on PATH, which may be
            # Debian's broken 3.17.
            argv += ["--criu", criu]
        return argv

    def create_argv(self, container_id: str, bundle: str, pid_file: str, log_path: str,
                    console_socket: str | None = None) -> list[str]:
        argv = self.base(log_path) + ["create", "--bundle", bundle, "--pid-file", pid_file]
        if console_socket:
            argv += ["--console-socket", console_socket]
        return argv + [container_id]

    def restore_argv(self, container_id: str, bundle: str, pid_file: str, log_path: str, *,
                     images: str, work: str, tcp_established: bool,
                     console_socket: str | None = None) -> list[str]:
        # In a private mount namespace of its own: runc 1.1.5 binds each bind
        # volume's source into the rootfs on the host and detaches it again
        # (prepareCriuRestoreMounts), an unmount that propagates to the
        # source's peers when it is shared (/run/netns lost its nsfs mounts).
        argv = ["unshare", "--mount", "--propagation", "private", "--"] + self.base(log_path) + [
            "restore", "--detach", "--bundle", bundle, "--pid-file", pid_file,
            "--image-path", images, "--work-path", work]
        if tcp_established:
            argv.append("--tcp-established")
        if console_socket:
            argv += ["--console-socket", console_socket]
        return argv + [container_id]

    def checkpoint(self, container_id: str, *, images: str, work: str, leave_running: bool,
                   tcp_established: bool, timeout: float = CHECKPOINT_TIMEOUT,
                   hold_fd: int | None = None, page_server: str | None = None,
                   criu_config: str | None = None, file_locks: bool = False) -> None:
        """runc checkpoint; a failure quotes CRIU's dump.log and keeps it.
        With `page_server` (ADDRESS:PORT) the pages go there instead of to
        `images`; `criu_config` is an extra CRIU config file (TLS) for this dump.

        runc runs in a session of its own, so that a terminal's Ctrl-C or
        hang-up does not reach it (or CRIU) halfway through a dump; it holds
        `hold_fd` (journal.hold_for_tool), for it outlives a ferry that is killed."""
        log_path = os.path.join(work, "runc.log")
        argv = self.base(log_path) + ["checkpoint", "--image-path", images, "--work-path", work]
        if leave_running:
            argv.append("--leave-running")
        if tcp_established:
            argv.append("--tcp-established")
        if file_locks:
            argv.append("--file-locks")
        if page_server:
            argv += ["--page-server", page_server]
        desc = f"checkpoint of {container_id[:12]}"
        # Its output goes to a file, not a pipe: a pipe whose reader (a killed
        # ferry) is gone would end runc with SIGPIPE in the middle of a dump.
        output = os.path.join(work, "runc.out")
        with open(output, "wb") as out:
            # CRIU's swrk reads CRIU_CONFIG_FILE at its start.
            runc = proc.spawn(argv + [container_id], desc=desc, stdout=out, stderr=out, new_session=True,
                              pass_fds=() if hold_fd is None else (hold_fd,),
                              env={"CRIU_CONFIG_FILE": criu_config} if criu_config else None)
        phases.reached("checkpoint:dumping")   # ferry may die now, with runc at work
        try:
            proc.wait(runc, timeout)
        except subprocess.TimeoutExpired:
            runc.kill()
            runc.wait()
            raise ToolError(desc, None, f"it did not end in {timeout} s") from None
        if runc.returncode != 0:
            criu_log = os.path.join(work, "dump.log")
            said = quote_log(criu_log) or quote_runc_log(log_path) or proc.tail(_read_text(output))
            raise ToolError(desc, runc.returncode, said, hint=f"CRIU's log is kept at {criu_log}", log_path=criu_log)

    def checkpoint_lazy(self, container_id: str, *, images: str, work: str, tcp_established: bool, port: int,
                        tls_config: str, hold_fd: int | None = None, file_locks: bool = False):
        """runc checkpoint --lazy-pages, returned once all but memory is
        dumped (a LazyDump that serves the pages on `port`, with CRIU's TLS
        from tls_config); a failure before that quotes CRIU's dump.log."""
        from ferry.checkpoint.lazy import LazyDump, await_ready, release_guard, spawn_guard
        log_path = os.path.join(work, "runc.log")
        guard_fd = spawn_guard(port)
        status_r, status_w = os.pipe()
        # CRIU ignores a lazy page server's address; the port is what counts.
        argv = self.base(log_path) + ["checkpoint", "--image-path", images, "--work-path", work,
                                      "--lazy-pages", "--page-server", f"0.0.0.0:{port}",
                                      "--status-fd", str(status_w)]
        if tcp_established:
            argv.append("--tcp-established")
        if file_locks:
            argv.append("--file-locks")
        desc = f"lazy checkpoint of {container_id[:12]}"
        try:
            with open(os.path.join(work, "runc.out"), "wb") as out:
                # CRIU's swrk reads CRIU_CONFIG_FILE at its start: TLS for this dump only.
                runc = proc.spawn(argv + [container_id], desc=desc, stdout=out, stderr=out, new_session=True,
                                  pass_fds=[status_w] + ([] if hold_fd is None else [hold_fd]),
                                  env={"CRIU_CONFIG_FILE": tls_config})
            os.close(status_w)
            status_w = -1
            await_ready(runc, status_r, desc, work)
        except BaseException:
            release_guard(guard_fd)   # the dump failed, and CRIU thawed the tasks already
            raise
        finally:
            os.close(status_r)
            if status_w >= 0:
                os.close(status_w)
        return LazyDump(runc, port, work, desc, guard_fd)

    def start(self, container_id: str) -> None:
        proc.run(self.base() + ["start", container_id], desc=f"runc start {container_id[:12]}")

    def kill(self, container_id: str, signal: str = "TERM", *, all_processes: bool = False) -> None:
        argv = self.base() + ["kill"] + (["--all"] if all_processes else []) + [container_id, signal]
        proc.run(argv, desc=f"runc kill {container_id[:12]}")

    def delete(self, container_id: str, *, force: bool = True) -> None:
        argv = self.base() + ["delete"] + (["--force"] if force else []) + [container_id]
        result = proc.run(argv, desc=f"runc delete {container_id[:12]}", check=False)
        if result.returncode != 0 and self.state(container_id) is not None:
            raise ToolError(f"runc delete {container_id[:12]}", result.returncode, proc.tail(result.stderr))

    def state(self, container_id: str) -> dict | None:
        """runc's view of a container, or None when runc does not know it."""
        result = proc.run(self.base() + ["state", container_id], desc="runc state", check=False)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)

    def exec_argv(self, container_id: str, args: list[str], *, tty: bool, env: list[str],
                  cwd: str | None, user: str | None, additional_gids: tuple[int, ...] = (),
                  log_path: str | None = None, detach: bool = False, caps: tuple[str, ...] = ()) -> list[str]:
        argv = self.base(log_path) + ["exec"]
        if detach:
            argv.append("--detach")
        for cap in caps:   # added to the process's bounding, effective and permitted sets
            argv += ["--cap", cap]
        if tty:
            argv.append("--tty")
        for item in env:
            argv += ["--env", item]
        if cwd:
            argv += ["--cwd", cwd]
        if user:
            argv += ["--user", user]
        for gid in additional_gids:
            argv += ["--additional-gids", str(gid)]
        return argv + [container_id, *args]


def quote_runc_log(log_path: str, lines: int = 2) -> str:
    """The last error messages runc wrote to its JSON log."""
    try:
        with open(log_path, errors="replace") as f:
            entries = [json.loads(line) for line in f if line.startswith("{")]
    except (OSError, ValueError):
        return ""
    messages = [e.get("msg", "") for e in entries if e.get("level") in ("error", "fatal")]
    return " | ".join(m for m in messages[-lines:] if m)


def memory_in_use(container_id: str, parent: str) -> int | None:
    """Bytes charged to the container's memory cgroup (v1 or v2); None if unknown."""
    for path in (f"/sys/fs/cgroup/memory/{parent}/{container_id}/memory.usage_in_bytes",
                 f"/sys/fs/cgroup/{parent}/{container_id}/memory.current"):
        try:
            with open(path) as f:
                return int(f.read())
        except (OSError, ValueError):
            continue
    return None


def _read_text(path: str, limit: int = 64 << 10) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError:
        return ""


def kill_container_cgroups(container_id: str, parent: str, timeout: float = 5.0) -> None:
    """Kill every process in the container's cgroups and remove them, for a
    runc or CRIU that was given up on: runc knows no state to delete then,
    and CRIU's restored tasks set their own process groups."""
    import signal
    import time
    paths = glob.glob(f"/sys/fs/cgroup/*/{parent}/{container_id}")
    for path in paths:
        if os.path.exists(os.path.join(path, "freezer.state")):
            with contextlib.suppress(OSError), open(os.path.join(path, "freezer.state"), "w") as f:
                f.write("THAWED")   # a frozen task cannot die
    deadline = time.monotonic() + timeout
    for path in sorted(paths, key=len, reverse=True):
        for current, dirs, _ in sorted(os.walk(path, topdown=False), key=lambda e: -len(e[0])):
            while time.monotonic() < deadline:
                pids = _cgroup_pids(current)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.01)
            with contextlib.suppress(OSError):
                os.rmdir(current)


def _cgroup_pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(line) for line in f if line.strip()]
    except OSError:
        return []


def remove_cgroup_parents(parent: str) -> None:
    """Drop ferry's empty parent cgroups that runc leaves behind; busy ones stay."""
    for path in glob.glob(f"/sys/fs/cgroup/*/{parent}") + glob.glob(f"/sys/fs/cgroup/unified/{parent}"):
        try:
            os.rmdir(path)
        except OSError:
            pass


FREEZE_WAIT = 10.0   # seconds for the freezer to stop every task


def _freezer_state(container_id: str, parent: str) -> str:
    return f"/sys/fs/cgroup/freezer/{parent}/{container_id}/freezer.state"


def freeze(container_id: str, parent: str) -> bool:
    """Freeze the container's tasks through its v1 freezer cgroup, and wait
    until they are; False where it has none. CRIU, finding it frozen, leaves
    it frozen after a dump with --leave-running (its origin freezer state)."""
    import time
    state = _freezer_state(container_id, parent)
    try:
        with open(state, "w") as f:
            f.write("FROZEN")
    except OSError:
        return False
    deadline = time.monotonic() + FREEZE_WAIT
    while True:
        with open(state) as f:
            if f.read().strip() == "FROZEN":
                return True
        if time.monotonic() > deadline:
            thaw(container_id, parent)
            raise ToolError(f"freezing container {container_id[:12]}", None, "its tasks did not stop")
        time.sleep(0.002)


# CRIU runs its pre-dump action scripts after its own start-up and before it
# seizes the tasks; a cgroup it finds frozen it leaves frozen after the dump
# (criu/seize.c, origin_freezer_state). Freezing here rather than before
# `runc checkpoint` keeps runc's and CRIU's start-up out of the freeze.
FREEZE_HOOK = """#!/bin/sh
[ "$CRTOOLS_SCRIPT_ACTION" = pre-dump ] || exit 0
[ -w {state} ] || exit 0
date +%s%N > {at}
echo FROZEN > {state} || exit 1
i=0
until read s < {state} && [ "$s" = FROZEN ]; do
  i=$((i+1)); [ $i -gt {tries} ] && exit 1
  sleep 0.002
done
"""
FREEZE_HOOK_NAME, FREEZE_CONFIG_NAME, FROZEN_AT_NAME = "freeze-hook", "freeze.conf", "frozen-at"


def freeze_at_dump(container_id: str, parent: str, work: str) -> str:
    """A CRIU config file (for CRIU_CONFIG_FILE) whose pre-dump hook freezes the
    container's v1 freezer cgroup and waits until it is; frozen_since() says when."""
    from ferry.util.fs import write_scratch   # this dump's own, in its fresh work dir: no syncs
    hook = os.path.join(work, FREEZE_HOOK_NAME)
    state = shlex.quote(_freezer_state(container_id, parent))
    write_scratch(hook, FREEZE_HOOK.format(state=state, at=shlex.quote(os.path.join(work, FROZEN_AT_NAME)),
                                           tries=int(FREEZE_WAIT / 0.002)), mode=0o700)
    config = os.path.join(work, FREEZE_CONFIG_NAME)
    write_scratch(config, f"action-script {hook}\n")
    return config


def frozen_since(work: str) -> float | None:
    """time.monotonic() of the hook's freeze, or None if it did not run."""
    import time
    try:
        with open(os.path.join(work, FROZEN_AT_NAME)) as f:
            at = int(f.read().strip()) / 1e9
    except (OSError, ValueError):
        return None
    return time.monotonic() - (time.time() - at)


def thaw(container_id: str, parent: str) -> None:
    """The container's tasks run again (v1 freezer, or v2's cgroup.freeze)."""
    with contextlib.suppress(OSError):
        state = _freezer_state(container_id, parent)
        with open(state) as f:
            frozen = f.read().strip() != "THAWED"
        if frozen:
            with open(state, "w") as f:
                f.write("THAWED")
    with contextlib.suppress(OSError), open(f"/sys/fs/cgroup/unified/{parent}/{container_id}/cgroup.freeze",
                                            "w") as f:
        f.write("0")
