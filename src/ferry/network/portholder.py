"""Published host ports held open, as podman's conmon holds them: a host
process that binds one afterwards fails at once, instead of binding and being
silently shadowed by the DNAT rule.

While a container publishes ports, a small process named after it (its
argv[0] says which root and container) keeps one socket per port bound, not
listening: traffic to the port is DNATed before any socket sees it, and a
socket that listened would take connections whenever the rule were gone.
Each socket is bound without SO_REUSEADDR, so no other socket may share the
port. The holder is found by its name, so a crash leaves nothing that a
later unpublish or prune cannot end.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import time

from ferry.network.ports import PortMapping
from ferry.util import proc
from ferry.util.errors import Conflict
from ferry.util.log import get_logger

log = get_logger("ferry.network")

HOLDER_PREFIX = "ferry-ports"


def holder_name(root_tag: str, container_id: str) -> str:
    return f"{HOLDER_PREFIX}:{root_tag}:{container_id}"


def bind(mappings: list[PortMapping]) -> list[socket.socket]:
    """A bound socket per mapping (Conflict when a process has the port). A
    port only a TIME_WAIT connection blocks is published unheld, with a note
    in the log: it is free to listen on, and the next start holds it."""
    sockets = []
    try:
        for mapping in mappings:
            kind = socket.SOCK_STREAM if mapping.protocol == "tcp" else socket.SOCK_DGRAM
            sock = socket.socket(socket.AF_INET, kind)
            try:
                sock.bind((mapping.host_ip or "0.0.0.0", mapping.host_port))
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                if _bindable_with_reuse(mapping, kind):
                    log.info("port %s is held by a closing connection: published without holding it",
                             mapping.host_side)
                    continue
                raise Conflict(f"port {mapping.host_side} is already in use by a process on this host",
                               hint="stop that process or publish another host port") from None
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bindable_with_reuse(mapping: PortMapping, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((mapping.host_ip or "0.0.0.0", mapping.host_port))
        except OSError:
            return False
    return True


def keep(root_tag: str, container_id: str, sockets: list[socket.socket]) -> None:
    """Hand the sockets to a holder process, and close this process's copies."""
    try:
        if sockets:
            fds = [s.fileno() for s in sockets]
            # exec -a: the holder is a plain sleep whose name says whose ports it keeps.
            # cwd /: a holder that outlives this command must not keep its directory busy.
            proc.spawn(["bash", "-c", 'exec -a "$0" sleep infinity', holder_name(root_tag, container_id)],
                       desc="port holder", pass_fds=fds, new_session=True, cwd="/")
    finally:
        for sock in sockets:
            sock.close()


def holders(root_tag: str) -> dict[int, str]:
    """This root's holder processes: {pid: container ID}."""
    prefix = f"{HOLDER_PREFIX}:{root_tag}:".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0]
        except OSError:
            continue
        if argv0.startswith(prefix):
            found[int(entry)] = argv0[len(prefix):].decode(errors="replace")
    return found


def release(root_tag: str, container_ids: set[str]) -> list[str]:
    """End the holders of these containers, and wait until their ports are
    free again; what was ended, for a report."""
    ended = []
    for pid, container_id in holders(root_tag).items():
        if container_id in container_ids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            _wait_closed(pid)
            ended.append(f"port holder of container {container_id[:12]}")
    return ended


def _wait_closed(pid: int, timeout: float = 5.0) -> None:
    """A killed process has closed its sockets once it is a zombie or gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except (OSError, IndexError):
            return
        time.sleep(0.005)
    log.warning("port holder %d did not end within %.0f s", pid, timeout)
