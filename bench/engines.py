"""The two engines under test, driven through their CLIs exactly as a user would.

ferry runs from this checkout's venv against its own state root. podman runs
as `podman --runtime runc --cgroup-manager cgroupfs` with its own --root,
--runroot, --tmpdir and network config dir, inside a private mount namespace
whose /var/lib is an overlay onto a temp dir: whatever podman, CNI or
containers/image write under /var/lib (blob-info cache, CNI leases) lands in
the temp dir, and the machine's real /var/lib/containers is never touched.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from bench import proc
from bench.proc import BenchError

PODMAN_RUN_FLAGS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000")
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the benchmark process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Timed:
    seconds: float
    stats: dict = field(default_factory=dict)
    stdout: str = ""


def print_stats(text: str) -> dict:
    """The JSON document `--print-stats` writes on stdout (podman and ferry)."""
    text = text.strip()
    start = text.find("{")
    if start < 0:
        return {}
    try:
        return json.loads(text[start:])
    except ValueError:
        return {}


def criu_errors(output: str, limit: int = 6) -> str:
    """The error lines of the CRIU log a failed checkpoint or restore names."""
    import re
    found = []
    for path in re.findall(r"(?:log file:|CRIU's log is kept at|log kept in)\s*(/\S+\.log)", output):
        try:
            with open(path, errors="replace") as f:
                lines = [line.rstrip() for line in f if "Error" in line or "rror (" in line]
        except OSError:
            continue
        found += [f"{path}:"] + lines[-limit:]
    return ("\nCRIU log: " + "\n".join(found)) if found else ""


class Engine:
    name = ""
    keeps_name_with_tcp = True

    def argv(self, *args: str) -> list[str]:
        raise NotImplementedError

    def cli(self, *args: str, desc: str, timeout: float = 120, check: bool = True, watch=None) -> proc.Result:
        """The engine's command; with `watch` (see proc.run_watched) around the process."""
        if watch is not None:
            return proc.run_watched(self.argv(*args), desc=f"{self.name} {desc}", timeout=timeout, check=check,
                                    watch=watch)
        return proc.run(self.argv(*args), desc=f"{self.name} {desc}", timeout=timeout, check=check)

    # ---- containers -----------------------------------------------------------
    def run_flags(self) -> tuple[str, ...]:
        return ()

    def run(self, name: str, image: str, command: list[str], timeout: float = 120, ip: str | None = None) -> None:
        flags = ("--ip", ip) if ip else ()
        self.cli("run", "-d", "--name", name, *flags, *self.run_flags(), image, *command,
                 desc=f"run {name}", timeout=timeout)

    def ip(self, name: str) -> str:
        raise NotImplementedError

    def rm(self, name: str, *, force: bool = False, timeout: float = 120) -> proc.Result:
        return self.cli("rm", *self.force_flags(force), name, desc=f"rm {name}", timeout=timeout)

    def force_flags(self, force: bool) -> tuple[str, ...]:
        return ("-f",) if force else ()

    def names(self) -> list[str]:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        return name in self.names()

    # ---- checkpoint / restore -----------------------------------------------
    def checkpoint(self, name: str, *, export: str | None = None, tcp: bool = False,
                   leave_running: bool = False, compress: str | None = None,
                   timeout: float = 300, watch=None, extra: tuple[str, ...] = ()) -> Timed:
        args = ["container", "checkpoint", name, "--print-stats", *extra]
        if export:
            args += ["--export", export]
        if compress:
            args += ["--compress", compress]
        if tcp:
            args.append("--tcp-established")
        if leave_running:
            args.append("--leave-running")
        desc = f"checkpoint {name}" + (f" to {export}" if export else " (local)") + \
            (" --leave-running" if leave_running else "")
        done = self._checked(self.cli(*args, desc=desc, timeout=timeout, check=False, watch=watch), desc)
        return Timed(done.seconds, print_stats(done.stdout), done.stdout)

    def restore(self, *, name: str, archive: str | None = None, new_name: bool = True,
                tcp: bool = False, timeout: float = 300, watch=None, extra: tuple[str, ...] = ()) -> Timed:
        args = ["container", "restore", "--print-stats", *extra]
        if archive:
            args += ["--import", archive]
            if new_name:
                args += ["--name", name]
        else:
            args.append(name)
        if tcp:
            args.append("--tcp-established")
        desc = f"restore {name}" + (f" from {archive}" if archive else " (local)")
        done = self._checked(self.cli(*args, desc=desc, timeout=timeout, check=False, watch=watch), desc)
        return Timed(done.seconds, print_stats(done.stdout), done.stdout)

    def _checked(self, done: proc.Result, desc: str) -> proc.Result:
        """Raise for a failed checkpoint/restore, quoting CRIU's log."""
        if done.returncode != 0:
            raise BenchError(f"{self.name} {desc}: exit {done.returncode}\n{proc.tail(done.stderr or done.stdout)}"
                             + criu_errors(done.stderr + done.stdout))
        return done

    def timing_argv(self, *args: str) -> tuple[list[str], list[str]]:
        """(prefix that enters the engine's namespace, the engine's own argv):
        a timing helper runs behind the prefix and times only the argv."""
        return [], self.argv(*args)

    def image_layers(self, ref: str) -> list[str]:
        raise NotImplementedError

    def load(self, archive: str, timeout: float = 600) -> None:
        self.cli("load", "-i", archive, desc=f"load {archive}", timeout=timeout)

    def remove_all(self) -> list[str]:
        """Remove every container of this engine's root; return what failed."""
        problems = []
        for name in self.names():
            done = self.rm(name, force=True, timeout=120)
            if done.returncode != 0:
                problems.append(f"{self.name} rm -f {name}: {proc.tail(done.stderr, 2)}")
        return problems

    def close(self) -> list[str]:
        return []


class Ferry(Engine):
    name = "ferry"

    def __init__(self, root: str, executable: str | None = None):
        self.root = root
        self.executable = executable or os.path.join(os.path.dirname(sys.executable), "ferry")
        if not os.access(self.executable, os.X_OK):
            raise BenchError(f"ferry is not installed at {self.executable} (run make setup)")

    def argv(self, *args: str) -> list[str]:
        return [self.executable, "--root", self.root, *args]

    def inspect(self, name: str) -> dict:
        return json.loads(self.cli("inspect", name, desc=f"inspect {name}").stdout)[0]

    def ip(self, name: str) -> str:
        return self.inspect(name)["NetworkSettings"]["IPAddress"]

    def names(self) -> list[str]:
        done = self.cli("ps", "-a", "--format", "json", desc="ps -a")
        return [c["Names"][0] for c in json.loads(done.stdout or "[]")]

    def rm(self, name: str, *, force: bool = False, timeout: float = 120) -> proc.Result:
        return self.cli("rm", *self.force_flags(force), name, desc=f"rm {name}", timeout=timeout,
                        check=not force)

    def image_layers(self, ref: str) -> list[str]:
        done = self.cli("image", "inspect", ref, desc=f"image inspect {ref}")
        return json.loads(done.stdout)[0]["RootFS"]["Layers"]

    def image_config(self, ref: str) -> dict:
        done = self.cli("image", "inspect", ref, desc=f"image inspect {ref}")
        return json.loads(done.stdout)[0]["Config"]

    def build_debian(self, ref: str, include: list[str], cmd: list[str] | None = None,
                     timeout: float = 1800) -> None:
        args = ["image", "build-debian", ref, "--include", ",".join(include), "-q"]
        if cmd:
            args += ["--cmd", json.dumps(cmd)]
        self.cli(*args, desc=f"image build-debian {ref}", timeout=timeout)

    def close(self) -> list[str]:
        problems = self.remove_all()
        self.cli("system", "prune", "-f", desc="system prune", check=False, timeout=300)
        # The default network's bridge is shared by roots: this removes this
        # root's use of it, and the bridge once no other root needs it.
        done = self.cli("network", "rm", "-f", "ferry", desc="network rm -f ferry", check=False)
        if done.returncode != 0 and "not found" not in (done.stderr + done.stdout).lower():
            problems.append(f"ferry network rm -f ferry: {proc.tail(done.stderr, 2)}")
        return problems


class PodmanNamespace:
    """A process holding a private mount namespace with /var/lib overlaid onto
    `base`; podman runs in it through nsenter. It dies with the benchmark."""

    def __init__(self, base: str):
        self.base = base
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> None:
        upper, work = os.path.join(self.base, "varlib-upper"), os.path.join(self.base, "varlib-work")
        os.makedirs(upper, mode=0o700)
        os.makedirs(work, mode=0o700)
        script = (f"set -e; mount -t overlay bench-varlib -o lowerdir=/var/lib,upperdir={upper},"
                  f"workdir={work} /var/lib; echo ready; exec sleep 86400")
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--fork", "--kill-child", "--",
             "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            preexec_fn=die_with_parent, env=proc.env())
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.stop()
            raise BenchError("could not make podman's private mount namespace "
                             f"(unshare + overlay on /var/lib): {line.strip() or 'no answer'}")

    def prefix(self) -> list[str]:
        if self.process is None or self.process.poll() is not None:
            raise BenchError("podman's mount namespace holder is gone")
        return ["nsenter", f"--mount=/proc/{self.process.pid}/ns/mnt", "--"]

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            # unshare --fork ignores SIGTERM while it waits; SIGKILL it, and
            # --kill-child takes the holder down with it.
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


class Podman(Engine):
    name = "podman"
    keeps_name_with_tcp = False   # podman refuses --name with --tcp-established

    def __init__(self, base: str, namespace: PodmanNamespace, volume_path: str | None = None):
        self.base = base
        self.namespace = namespace
        self.volume_path = volume_path   # podman's default (graphroot/volumes) unless given
        self.dirs = {d: os.path.join(base, d) for d in ("root", "runroot", "tmp", "networks")}
        for path in self.dirs.values():
            os.makedirs(path, mode=0o700, exist_ok=True)

    def global_args(self) -> list[str]:
        return ["podman", "--root", self.dirs["root"], "--runroot", self.dirs["runroot"],
                "--tmpdir", self.dirs["tmp"], "--network-config-dir", self.dirs["networks"],
                "--storage-driver", "overlay", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
                *(["--volumepath", self.volume_path] if self.volume_path else [])]

    def argv(self, *args: str) -> list[str]:
        return [*self.namespace.prefix(), *self.global_args(), *args]

    def timing_argv(self, *args: str) -> tuple[list[str], list[str]]:
        return self.namespace.prefix(), [*self.global_args(), *args]

    def run_flags(self) -> tuple[str, ...]:
        return PODMAN_RUN_FLAGS

    def force_flags(self, force: bool) -> tuple[str, ...]:
        return ("-f", "-t", "0") if force else ()

    def rm(self, name: str, *, force: bool = False, timeout: float = 120) -> proc.Result:
        return self.cli("rm", *self.force_flags(force), name, desc=f"rm {name}", timeout=timeout,
                        check=not force)

    def ip(self, name: str) -> str:
        done = self.cli("inspect", name, "--format", "{{.NetworkSettings.IPAddress}}", desc=f"inspect {name}")
        return done.stdout.strip()

    def names(self) -> list[str]:
        done = self.cli("ps", "-a", "--format", "{{.Names}}", desc="ps -a")
        return [n for n in done.stdout.split() if n]

    def image_layers(self, ref: str) -> list[str]:
        done = self.cli("image", "inspect", ref, "--format", "json", desc=f"image inspect {ref}")
        return json.loads(done.stdout)[0]["RootFS"]["Layers"]

    def version(self) -> dict:
        done = self.cli("version", "--format", "json", desc="version", check=False)
        try:
            return json.loads(done.stdout)
        except ValueError:
            return {"error": proc.tail(done.stderr, 2)}

    def close(self) -> list[str]:
        problems = self.remove_all()
        done = self.cli("system", "reset", "--force", desc="system reset", check=False, timeout=300)
        if done.returncode != 0:
            problems.append(f"podman system reset: {proc.tail(done.stderr, 2)}")
        return problems


def wait_until(predicate, what: str, timeout: float, pause: float = 0.05):
    """Poll predicate until it returns a true value; BenchError after timeout."""
    end = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, RuntimeError, BenchError) as exc:
            last_error = exc
        if time.monotonic() > end:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}"
                             + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(pause)
