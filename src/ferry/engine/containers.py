"""Containers: records, lifecycle (run, start, stop, kill, rm), exec, logs, inspect.

Every resource a container gets (record, rootfs mount, IP lease, netns, nft
rules, runc state, monitor) is made in a fixed order and undone in reverse, so
a failure part-way leaves nothing behind, and `rm` removes all of it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shlex
import signal as posix_signals
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from ferry.engine import events, journal
from ferry.engine.config import BRIDGE, HOST_NETWORK, NO_NETWORK, ContainerConfig, NetworkLink
from ferry.engine.listing import (CREATED, DEFAULT_STOP_TIMEOUT, EXITED, PAUSED_MARKER, RUNNING, damaged, find_row,
                                  has_exited, observed_exit, open_table, process_alive)
from ferry.util.log import get_logger
from ferry.engine.runextras import RunExtras
from ferry.engine.volumes import VolumeSpec, Volumes, path_in_rootfs
from ferry.runtime import launch, rootfs
from ferry.runtime.runc import CGROUP_PARENT, Runc, quote_runc_log, remove_cgroup_parents
from ferry.store import ids
from ferry.store.db import Database
from ferry.store.layout import ETC_FILES, ContainerFiles, Layout
from ferry.util.errors import (CommandNotExecutable, CommandNotFound, Conflict, ContainerRunning, DamagedRecord,
                               ExecImpossible, FerryError, NotFound, RuntimeRefused, ToolError, UsageError)
from ferry.util.fs import atomic_write, remove_file, remove_tree
from ferry.util import hostspec, phases, proc, signals
from ferry.util.locks import Busy, owned_lock
from ferry.util.timefmt import utc_now

# Extra CRIU options runc passes on via the org.criu.config annotation:
# a server taking new connections while it is dumped must not fail the dump
# (HOST-NOTES: "In-flight connection"), and the network lock uses nftables,
# which this host has, rather than iptables, which it may not.
CRIU_OPTIONS = "skip-in-flight\nnetwork-lock nftables\n"
# A restore's wire stays cut until CRIU has put the sockets back, or the netns
# would answer peers with resets. CRIU runs this hook at each stage and it
# connects at post-restore: the sockets exist, still in repair mode, as when
# CRIU unlocks its own network lock. Leaving repair mode then sends each peer
# a window probe, and the peer retransmits at once instead of on its backed-off
# timer, 0.5-0.8 s later when runc restore had returned first.
CRIU_RESTORE_HOOK_SCRIPT = """#!/bin/sh
[ "$CRTOOLS_SCRIPT_ACTION" = post-restore ] || exit 0
{wait}{argv}
"""
# A lazy restore's tasks resume only once the source's page server has taken
# this host's lazy-pages daemon (its TLS handshake, in the daemon's log): a
# task that faulted on a page with no server behind it would get a zero page.
# CRIU aborts the restore when the hook fails, and no task has run yet.
LAZY_PAGES_WAIT = """i=0
until grep -q "TLS handshake completed" {log}; do
  grep -q "Error (" {log} && exit 1
  i=$((i+1)); [ $i -gt {tries} ] && exit 1
  sleep 0.01
done
"""
log = get_logger("ferry.containers")

# How long a command waits for another one working on the same container
# before it refuses: a start or a stop takes about a second, a checkpoint more.
LOCK_WAIT = 10.0
# --init: podman's init (Debian's catatonit package, which podman's setup
# installs), bound read-only where podman binds it, before the command.
INIT_PATH = "/run/podman-init"
INIT_BINARY = "/usr/libexec/podman/catatonit"
EXIT_WAIT_POLL = 0.05
MONITOR_WAIT = 10.0   # for a monitor to record the exit it saw (it drains the output first)
UNKNOWN_EXIT = -1
# A marker in the container's dir: a command (stop, kill, rm) ended it, so its
# restart policy does not start it again (podman's StoppedByUser); a start clears it.
STOPPED_BY_USER = "stopped-by-user"


class RestoreFrom(NamedTuple):
    images: str            # CRIU image dir
    work: str              # CRIU work dir; restore.log lands here
    tcp_established: bool
    from_archive: bool = False   # images from elsewhere: checked against the spec before CRIU sees them
    before_runc: Callable[[], None] | None = None   # waits for what runc restore needs that runs beside
    lazy_pid: int | None = None  # CRIU's lazy-pages daemon (its socket in `work`) brings the pages; the monitor watches it
    file_locks: bool = False     # the images hold file locks, which CRIU takes again only when told to

    @property
    def lazy(self) -> bool:
        return self.lazy_pid is not None


class RunOptions(NamedTuple):
    """What `ferry run` was asked, before anything is resolved."""
    image: str
    command: tuple[str, ...] = ()
    name: str | None = None
    detach: bool = False
    ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    rm: bool = False
    ip: str | None = None
    mac: str | None = None
    workdir: str | None = None
    entrypoint: str | None = None
    network: str | tuple[str, ...] | None = None   # names (comma lists too), or host or none
    tty: bool = False
    interactive: bool = False
    hostname: str | None = None
    user: str | None = None   # USER[:GROUP] or UID[:GID]; the image's USER when None
    labels: tuple[str, ...] = ()   # KEY[=VALUE]
    # (host config flags go here)
    memory: str | None = None        # -m 512m
    cpus: str | None = None          # --cpus 1.5
    ulimits: tuple[str, ...] = ()    # --ulimit NAME=SOFT[:HARD]
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    read_only: bool = False
    read_only_tmpfs: bool = True
    tmpfs: tuple[str, ...] = ()      # --tmpfs DEST[:OPTIONS]
    mounts: tuple[str, ...] = ()     # --mount type=bind|volume|tmpfs,...
    ipc: str | None = None           # --ipc host
    # (extras flags go here)
    env_files: tuple[str, ...] = ()     # --env-file, read before -e (which wins)
    add_hosts: tuple[str, ...] = ()     # HOST:IP
    dns: tuple[str, ...] = ()           # IP, or "none"
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    replace: bool = False               # remove a container of --name first (rm -f)
    publish_all: bool = False           # -P: every EXPOSEd port on a port the host chooses
    restart: str | None = None          # POLICY[:N]
    init: bool = False


class Container(NamedTuple):
    id: str
    name: str
    image_id: str
    config: ContainerConfig
    state: str
    pid: int | None
    exit_code: int | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    checkpointed_at: str | None = None
    restored_at: str | None = None    # when it last came back from a checkpoint
    restart_count: int = 0            # starts its restart policy made (podman's RestartCount)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Container":
        try:
            config = ContainerConfig.from_json(row["config"])
        except ValueError as exc:
            raise damaged(row, exc) from None
        added = row.keys()   # columns an upgrade adds may be missing while the disk is full
        return cls(row["id"], row["name"], row["image_id"], config, row["state"], row["pid"],
                   row["exit_code"], row["created_at"], row["started_at"], row["finished_at"],
                   row["checkpointed_at"] if "checkpointed_at" in added else None,
                   row["restored_at"] if "restored_at" in added else None,
                   row["restart_count"] if "restart_count" in added else 0)


class Undo:
    """Steps to reverse, newest first, if the operation does not complete."""

    def __init__(self):
        self.steps: list = []

    def push(self, fn, *args) -> None:
        self.steps.append((fn, args))

    def run(self) -> None:
        """Every step runs, even after one fails; each failure is logged, since
        what it should have undone (a mount, a lease) is left behind."""
        for fn, args in reversed(self.steps):
            try:
                fn(*args)
            except Exception as error:
                log.warning("undo step %s(%s) failed: %s", getattr(fn, "__qualname__", fn),
                            ", ".join(map(repr, args)), error)
        self.steps.clear()


class Containers:
    def __init__(self, layout: Layout, db: Database, engine):
        self.layout = layout
        self.db = db
        self.engine = engine  # images, networks and volumes load on first use: most commands need one
        self.runc = Runc(os.path.join(layout.root, "runc"))
        open_table(db)

    @property
    def images(self):
        return self.engine.images

    @property
    def networks(self):
        return self.engine.networks

    @property
    def volumes(self) -> Volumes:
        return self.engine.volumes

    @functools.cached_property
    def checkpoint_store(self):
        from ferry.engine.checkpoint_store import CheckpointStore
        return CheckpointStore(self.layout, self.db)

    # ---- lookup -------------------------------------------------------------
    def get(self, name_or_id: str, *, refresh: bool = True) -> Container:
        container = Container.from_row(find_row(self.db.read(), name_or_id))
        return self._refresh(container) if refresh else container

    def list(self, *, all_states: bool = False) -> list[Container]:
        rows = self.db.read().execute("SELECT * FROM containers ORDER BY created_at").fetchall()
        containers = [self._refresh(Container.from_row(r)) for r in rows]
        return [c for c in containers if all_states or c.state == RUNNING]

    def users_of_image(self, image_id: str) -> list[str]:
        rows = self.db.read().execute("SELECT name FROM containers WHERE image_id = ?", (image_id,))
        return [r["name"] for r in rows]

    def users_of_volume(self, name: str) -> list[str]:
        return [c.name for c in self.list(all_states=True)
                if any(v.source == name for v in c.config.named_volumes)]

    def set_checkpointed(self, container_id: str, when: str | None) -> None:
        with self.db.write() as conn:
            conn.execute("UPDATE containers SET checkpointed_at = ? WHERE id = ?", (when, container_id))

    def dir(self, container_id: str) -> str:
        return self.layout.container_dir(container_id)

    def files(self, container_id: str) -> ContainerFiles:
        return self.layout.container_files(container_id)

    def locked(self, container: Container, verb: str, *, wait: float = LOCK_WAIT):
        """The container's own lock, held by one command at a time (Busy,
        naming the holder, after `wait` seconds); re-entrant."""
        return self.lock_id(container.id, container.name, verb, wait=wait)

    def lock_id(self, container_id: str, name: str, verb: str, *, wait: float = LOCK_WAIT):
        """locked(), for a container that is still being made."""
        return owned_lock(self.layout.lock(f"container-{container_id}"), f"ferry {verb}", wait=wait,
                          busy_message=f"container {name!r} is busy")

    # ---- run / create ------------------------------------------------------
    def run(self, options: RunOptions) -> Container:
        """Create and start a container; for a foreground run it is started on attach."""
        container_id = ids.new_id()
        # The monitor's interpreter starts beside the container's creation, not after it.
        warm = launch.WarmMonitor(self.dir(container_id))
        try:
            container = self.create(options, container_id=container_id)
            try:
                return self.start(container.id, wait_attach=not options.detach, warm=warm)
            except FerryError:
                self.remove(container.id, force=True, volumes=True)
                raise
        finally:
            warm.close()

    def create(self, options: RunOptions, container_id: str | None = None) -> Container:
        image, image_name = self.images.get_named(options.image)
        if options.name is not None:
            ids.check_name(options.name)
        if options.replace and options.name is None:
            raise UsageError("cannot replace container without --name being set")
        extras, env_file = _extras(options, image.config.labels)
        from ferry.network.ports import parse_port
        ports = [parse_port(p) for p in options.ports]
        if options.publish_all:
            ports += _exposed(image.config.exposed_ports, ports)
        host, mounted = _host_config(options)
        volume_specs = [self.check_volume(v) for v in options.volumes + mounted]
        _check_destinations(volume_specs, host)
        volume_specs += [v for v in _image_volumes(image.config.volumes, volume_specs)
                         if v.destination not in {t.destination for t in host.tmpfs_mounts()}]
        env = _merge_env(image.config.env, env_file + options.env)
        entrypoint = _parse_entrypoint(options.entrypoint) if options.entrypoint is not None \
            else tuple(image.config.entrypoint)
        command = tuple(options.command) or (tuple(image.config.cmd) if options.entrypoint is None else ())
        args = entrypoint + command
        if not args:
            raise UsageError(f"image {options.image!r} has no command", hint="give one after the image name")
        network_mode, network_names = _networks(options.network, options.ip, options.mac)
        if network_mode != BRIDGE and ports:   # podman's words; it runs the container all the same
            log.warning("Port mappings have been discarded as one of the Host, Container, Pod, and None network "
                        "modes are in use")
            ports = []
        for name in network_names:
            self.networks.get(name)   # NotFound before anything is made
        draft = ContainerConfig(
            image=image_name, image_digest=image.digest,
            args=args, command=command, env=env,
            workdir=options.workdir or image.config.working_dir or "/",
            user=image.config.user if options.user is None else options.user,
            hostname=options.hostname or (os.uname().nodename if network_mode == HOST_NETWORK else ""),
            network=network_mode if network_mode != BRIDGE else (network_names or [self.networks.default().name])[0],
            network_mode=network_mode,
            more_networks=tuple(NetworkLink(name, "", "") for name in network_names[1:]),
            ip=options.ip or "", mac=options.mac or "", static_mac=bool(options.mac), ports=tuple(ports),
            volumes=tuple(volume_specs),
            stop_signal=image.config.stop_signal or "SIGTERM", rm=options.rm,
            tty=options.tty, interactive=options.interactive, host=host,
            extras=extras)
        if options.replace:   # podman: only once the new one is known to be valid
            with contextlib.suppress(NotFound):
                self.remove(options.name, force=True)
        undo = Undo()
        try:
            return self.insert(options.name, image, draft, undo, container_id=container_id)
        except BaseException:
            undo.run()
            raise

    def insert(self, name: str | None, image, draft: ContainerConfig, undo: Undo, *,
               container_id: str | None = None, journal_entry: dict | None = None,
               adopt_lease: bool = False, scoped: bool = False) -> Container:
        """Record a new container: its name, IP and MAC (as requested in `draft`,
        or allocated when empty), volumes and directory. `undo` learns each step.
        With `journal_entry`, its directory and journal come before its record,
        so that no record is ever without them (a restore killed here is undone)."""
        container_id = container_id or ids.new_id()
        name = name or _generated_name(container_id)
        if journal_entry is not None:
            os.makedirs(self.dir(container_id), mode=0o700)
            undo.push(remove_tree, self.dir(container_id))
            journal.begin(self.dir(container_id), **journal_entry)
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM containers WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"the container name {name!r} is already in use",
                               hint="remove that container or pick another --name")
            # The draft, not "{}": `ps` and `inspect` may read the record before
            # its address is chosen.
            conn.execute(
                "INSERT INTO containers (id, name, image_id, config, state, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (container_id, name, image.id, draft.to_json(), CREATED, utc_now()))
        undo.push(self._delete_record, container_id)
        # A migrated container's address may still be held by its copy in another root.
        adopt = {"adopt": True} if adopt_lease else {}
        ip, mac, more = draft.ip, draft.mac, []
        undo.push(self.networks.release, container_id)   # its netns too, on none
        if draft.network_mode == BRIDGE:
            ip, mac = self.networks.reserve(container_id, draft.network, ip=draft.ip or None,
                                            mac=draft.mac or None, scoped=scoped, **adopt)
            for position, joined in enumerate(draft.more_networks, start=1):
                more.append(joined._replace(**dict(zip(("ip", "mac"), self.networks.reserve(
                    container_id, joined.network, ip=joined.ip or None, mac=joined.mac or None, scoped=scoped,
                    position=position, **adopt)))))
        # named volumes made if missing; a volume's options and labels kept in its entry
        volumes = self.volumes.provide(draft.volumes, undo) if draft.named_volumes else draft.volumes
        config = draft._replace(ip=ip, mac=mac, volumes=volumes, more_networks=tuple(more) or draft.more_networks,
                                hostname=draft.hostname or container_id[:12])
        if journal_entry is None:
            os.makedirs(self.dir(container_id), mode=0o700)
            undo.push(remove_tree, self.dir(container_id))
        with self.db.write() as conn:
            conn.execute("UPDATE containers SET config = ? WHERE id = ?", (config.to_json(), container_id))
        made = self.get(container_id, refresh=False)
        if journal_entry is None:   # a restore's record: its own event says so
            events.note(self.layout, made, "create")
        return made

    def check_volume(self, text: str) -> VolumeSpec:
        """One -v value, parsed; a host path must exist."""
        from ferry.engine.volumes import parse_volume
        spec = parse_volume(text)
        if spec.kind == "bind" and not os.path.exists(spec.source):
            raise NotFound(f"host path {spec.source!r} for -v does not exist",
                           hint="create it first, or use a named volume")
        return spec

    def _delete_record(self, container_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    # ---- start ---------------------------------------------------------------
    def start(self, name_or_id: str, *, wait_attach: bool = False,
              restore: RestoreFrom | None = None, ignore_checkpoint: bool = False,
              warm: launch.WarmMonitor | None = None, by_policy: bool = False) -> Container:
        """Start a container, or with `restore`, bring it back from CRIU images.
        `by_policy`: its restart policy's start, which keeps its RestartCount
        (any other start sets it back to 0, as podman's does).
        A container waiting in its local checkpoint starts afresh only with
        `ignore_checkpoint` (podman's start silently drops the checkpoint).
        `warm`: its monitor, started ahead by the caller (who closes it)."""
        container = self.get(name_or_id)
        with self.locked(container, "restore" if restore else "start"):
            container = self.get(container.id)   # as it is now that no one else changes it
            if container.state == RUNNING:
                if restore:
                    raise Conflict(f"container {container.name!r} is running", hint="stop or remove it first")
                if self.paused(container.id):   # podman refuses it too
                    raise Conflict(f"container {container.name!r} is paused: only a created or stopped "
                                   "container can be started", hint=f"ferry unpause {container.name}")
                return container
            if container.checkpointed_at and not restore:
                if not ignore_checkpoint:
                    raise Conflict(f"container {container.name!r} waits in its checkpoint: a start would begin it "
                                   "afresh and drop the checkpoint",
                                   hint=f"restore it with 'ferry container restore {container.name}', or start "
                                        f"it afresh with 'ferry start --ignore-checkpoint {container.name}'")
                self.set_checkpointed(container.id, None)
                remove_tree(self.files(container.id).checkpoint_images)
                container = self.get(container.id, refresh=False)
            if container.restart_count and not by_policy and not restore:
                with self.db.write() as conn:
                    conn.execute("UPDATE containers SET restart_count = 0 WHERE id = ?", (container.id,))
            directory = self.dir(container.id)
            own_journal = not journal.exists(directory)   # a restore writes its own
            if own_journal:
                journal.begin(directory, journal.START)
            try:
                # Once the monitor runs, the container is either started or its
                # start has failed: a signal waits to know which.
                with signals.deferred():
                    return self._start_journaled(container, wait_attach, restore, warm)
            finally:
                if own_journal:
                    journal.finish(directory)

    def _start_journaled(self, container: Container, wait_attach: bool,
                         restore: RestoreFrom | None, warm: launch.WarmMonitor | None = None) -> Container:
        undo = Undo()
        try:
            phases.reached("start:begun")
            report = self._start_locked(container, undo, wait_attach, restore, warm)
        except BaseException:
            undo.run()
            raise
        phases.reached("start:launched")
        if restore is not None:
            # CRIU's hook connected already; a CRIU that ran no hook did not.
            self.networks.connect(container.id)
            files = self.files(container.id)
            atomic_write(files.criu_config, CRIU_OPTIONS)  # later dumps need no hook
            remove_file(files.criu_restore_hook)
        try:   # `Up` only on its network: a netns that lost its mount or eth0 is refused
            self.networks.verify(container.id, report["pid"], mode=container.config.network_mode)
        except FerryError:
            launched = container._replace(pid=report["pid"])
            with contextlib.suppress(FerryError):
                self.runc.kill(container.id, "KILL", all_processes=True)
            self._wait_exit(launched, 30)
            self.wait_monitor(launched)
            with contextlib.suppress(FerryError):
                self.runc.delete(container.id)
            undo.run()
            raise
        # A new IP/MAC pairing (a reused address, a restore, a move from another
        # host) must not wait for neighbours' ARP caches to expire.
        with contextlib.suppress(FerryError):
            self.networks.announce(container.id, wait=False)
        self.record_running(container.id, report["pid"], restored=restore is not None)
        for action in ("init", "start") if restore is None else ("restore",):   # podman's events
            events.note(self.layout, container, action)
        return self.get(container.id, refresh=False)

    def record_running(self, container_id: str, pid: int, *, restored: bool = False) -> None:
        now = utc_now()
        with self.db.write() as conn:
            conn.execute("UPDATE containers SET state = ?, pid = ?, started_at = ?, exit_code = NULL, "
                         "finished_at = NULL, restored_at = ? WHERE id = ?",
                         (RUNNING, pid, now, now if restored else None, container_id))

    def live_process(self, container: Container) -> int | None:
        """The pid of the container's process when it runs, whatever ferry's
        record says (a command may have died before it recorded the start).
        The pid runc wrote is the container's only if it lives in the
        container's cgroup: a pid may have been reused since."""
        pid = _read_int(self.files(container.id).container_pid)
        if not process_alive(pid):
            return None
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                cgroups = f.read()
        except OSError:
            return None
        # CGROUP_PARENT: where a container started before roots had their own parents still runs.
        parents = {self.runc.cgroup_parent, CGROUP_PARENT}
        return pid if any(f"/{parent}/{container.id}\n" in cgroups for parent in parents) else None

    def monitor_alive(self, container: Container) -> bool:
        return self._monitor_pid(container) is not None

    def _exit_recorded(self, container: Container) -> None:
        """Before a start or an rm of an ended container: the last run's monitor
        has recorded its exit. Written after the start, or after an rm and a
        restore of the same ID, that record would end the new run."""
        if self.monitor_alive(container) and not os.path.exists(self.files(container.id).exit_record):
            self.wait_exit_recorded(container, timeout=MONITOR_WAIT)
            if self.monitor_alive(container) and not os.path.exists(self.files(container.id).exit_record):
                raise Conflict(f"container {container.name!r} has ended, but its monitor (pid "
                               f"{self._monitor_pid(container)}) has not recorded it yet",
                               hint="try again in a moment")

    def _monitor_pid(self, container: Container) -> int | None:
        """Its monitor's pid while it lives; not a process that reused the pid since."""
        directory = self.dir(container.id)
        pid = _read_int(ContainerFiles(directory).monitor_pid)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read()
        except OSError:   # None, or gone
            return None
        return pid if process_alive(pid) and f"\0--container-dir\0{directory}\0".encode() in argv else None

    def _start_locked(self, container: Container, undo: Undo, wait_attach: bool,
                      restore: RestoreFrom | None, warm: launch.WarmMonitor | None = None) -> dict:
        live = self.live_process(container)
        if live:
            # `runc delete --force` below would kill it: a start never does.
            raise Conflict(f"container {container.name!r} already runs (pid {live}), though ferry's "
                           f"record says {container.state}",
                           hint=f"stop it with 'ferry stop {container.name}' first")
        self._exit_recorded(container)
        if warm is not None:   # started ahead by the caller, who closes it
            return self._start_monitored(container, undo, wait_attach, restore, warm)
        # The monitor's interpreter starts (about 50 ms) while the root
        # filesystem, the network and the spec are made, not after.
        warm = launch.WarmMonitor(self.dir(container.id))
        try:
            return self._start_monitored(container, undo, wait_attach, restore, warm)
        finally:
            warm.close()

    def _start_monitored(self, container: Container, undo: Undo, wait_attach: bool,
                         restore: RestoreFrom | None, warm: launch.WarmMonitor) -> dict:
        config = container.config
        directory = self.dir(container.id)
        files = ContainerFiles(directory)
        remove_file(files.exit_record)
        remove_file(files.at(STOPPED_BY_USER))
        remove_file(files.at(PAUSED_MARKER))   # of a run that ended while paused
        if os.path.isdir(os.path.join(self.runc.state_root, container.id)):
            self.runc.delete(container.id)  # a stale runc state from a crash would block create
        image = self.images.get(container.image_id)
        target = files.rootfs
        rootfs.mount_overlay(self.images.layer_paths(image), files.upper, files.overlay_work, target)
        undo.push(rootfs.unmount, target)
        netns_path = None   # --network host: the host's
        if config.network_mode == BRIDGE:
            netns_path = self.networks.attach(container.id, isolated=restore is not None).netns_path
        elif config.network_mode == NO_NETWORK:
            netns_path = self.networks.attach_none(container.id)
        undo.push(self.networks.detach, container.id)
        if config.ports:
            published = self.networks.publish(container.id, list(config.ports))
            undo.push(self.networks.unpublish, container.id)
            resolved = tuple(published)
            if resolved != config.ports:  # keep the chosen host ports for restarts and inspect
                config = config._replace(ports=resolved)
                with self.db.write() as conn:
                    conn.execute("UPDATE containers SET config = ? WHERE id = ?",
                                 (config.to_json(), container.id))
        # Bind-mounted into the container, where users other than root read them.
        from ferry.network import hostfiles
        extras = config.extras
        atomic_write(files.at("hosts"), hostfiles.with_added_hosts(
            self.networks.hosts_file(container.id, config.hostname, config.network_mode), extras.add_hosts),
            mode=0o644)
        atomic_write(files.at("hostname"), config.hostname + "\n", mode=0o644)
        if not extras.dns_none:
            atomic_write(files.at("resolv.conf"), hostfiles.with_dns(
                self.networks.resolv_conf(config.network_mode), extras.dns, extras.dns_search,
                extras.dns_options), mode=0o644)
        criu_options = CRIU_OPTIONS
        if restore is not None:
            hook = files.criu_restore_hook
            # One command per wire (several networks), the last exec'd; none without a veth.
            argvs = [" ".join(shlex.quote(arg) for arg in argv) for argv in self.networks.connect_argvs(container.id)]
            argv = " && ".join(argvs[:-1] + [f"exec {argvs[-1]}"]) if argvs else "exit 0"
            wait = ""
            if restore.lazy:
                from ferry.checkpoint.lazy import LOG, SOCKET_WAIT
                wait = LAZY_PAGES_WAIT.format(log=shlex.quote(os.path.join(restore.work, LOG)),
                                              tries=int(SOCKET_WAIT * 100))
            atomic_write(hook, CRIU_RESTORE_HOOK_SCRIPT.format(wait=wait, argv=argv), mode=0o700)
            undo.push(remove_file, hook)  # the config naming it is rewritten by every start
            criu_options += f"action-script {hook}\n"
            if restore.lazy:   # runc restore --lazy-pages sets no more than this
                criu_options += "lazy-pages\n"
            if restore.file_locks:   # runc restore --file-locks sets no more than this
                criu_options += "file-locks\n"
        atomic_write(files.criu_config, criu_options)
        from ferry.runtime import spec as ocispec   # for starts and execs: inspect and logs need none of it
        uid, gid, groups = ocispec.resolve_user(target, config.user)
        profile = config.profile
        if profile.shm_dir:
            rootfs.make_shm_dir(files.shm)
        if profile.containerenv:
            atomic_write(files.containerenv, _containerenv(container), mode=0o644)
        oci = ocispec.build(ocispec.ContainerSpec(
            container_id=container.id, cgroup_parent=self.runc.cgroup_parent, hostname=config.hostname,
            cgroupns=profile.cgroupns, no_new_privileges=profile.no_new_privileges,
            shm_source="/dev/shm" if config.host.ipc == "host" else files.shm if profile.shm_dir else None,
            rootfs=target, **_host_spec(config.host),
            process=ocispec.ProcessSpec(args=init_args(config) + config.args, env=config.env, cwd=config.workdir,
                                        uid=uid, gid=gid, additional_gids=groups, terminal=config.tty),
            netns_path=netns_path, host_network=config.host_network, mounts=tuple(self._mounts(container, copy_up=restore is None)),
            annotations={"io.ferry.name": container.name,
                         # runc hands this file to CRIU on checkpoint and restore.
                         "org.criu.config": files.criu_config}))
        if restore is not None and restore.from_archive:
            # CRIU restores what its images say, as root: nothing in them may
            # grant more than the spec made here does.
            from ferry.checkpoint.imagecheck import check_images
            check_images(restore.images, oci, lazy=restore.lazy)
        atomic_write(files.spec, json.dumps(oci, indent=1))
        exit_command = [sys.executable, "-m", "ferry", "--root", self.layout.root,
                        "container", "cleanup", container.id]
        if restore is not None and restore.before_runc:
            restore.before_runc()
        return launch.start_monitor(
            container_dir=directory, runc_root=self.runc.state_root, container_id=container.id,
            bundle=directory, terminal=config.tty, interactive=config.interactive,
            wait_attach=wait_attach, exit_command=exit_command,
            container_lock=self.layout.lock(f"container-{container.id}"),
            restore_images=restore.images if restore else None,
            restore_work=restore.work if restore else None,
            tcp_established=bool(restore and restore.tcp_established),
            lazy_pages_pid=restore.lazy_pid if restore else None,
            checkpoint_schedule=self.layout.checkpoint_schedule(container.id), warm=warm)

    def _mounts(self, container: Container, *, copy_up: bool = False) -> Iterator:   # of spec.Mount
        """The container's bind mounts; with `copy_up` (a fresh start, not a
        restore), a new volume first gets the image's files at its mount point."""
        from ferry.runtime import spec as ocispec
        files = self.files(container.id)
        # --read-only: podman binds these read-only too
        etc_options = ("rbind", "rprivate") + (("ro", "nosuid", "noexec", "nodev")
                                               if container.config.host.read_only else ())
        for name in ETC_FILES:
            if not (name == "resolv.conf" and container.config.extras.dns_none):   # --dns none: the image's own
                yield ocispec.Mount(f"/etc/{name}", files.at(name), "bind", etc_options)
        if container.config.extras.init:
            yield ocispec.Mount(INIT_PATH, init_binary(), "bind", ("bind", "ro", "rprivate"))
        if container.config.profile.containerenv:
            yield ocispec.Mount("/run/.containerenv", files.containerenv, "bind", ("bind", "rprivate"))
        for volume in container.config.volumes:
            if volume.tmpfs is not None:   # a tmpfs volume: a fresh tmpfs (runc's tmpcopyup fills it)
                yield ocispec.Mount(volume.destination, "tmpfs", "tmpfs", volume.tmpfs_mount_options())
                continue
            if copy_up and volume.kind == "volume" and not volume.nocopy:
                self.volumes.copy_up(volume.source, path_in_rootfs(files.rootfs, volume.destination))
            source = self.volumes.data_dir(volume.source) if volume.kind == "volume" else volume.source
            options = ("rbind", "rprivate") + (("ro",) if volume.readonly else ())
            yield ocispec.Mount(volume.destination, source, "bind", options)
        for tmpfs in container.config.host.tmpfs_mounts():
            yield ocispec.Mount(tmpfs.destination, "tmpfs", "tmpfs", tuple(tmpfs.mount_options()))

    # ---- pause -----------------------------------------------------------------
    def paused(self, container_id: str) -> bool:
        """A running container that `pause` froze (its marker says so)."""
        return os.path.exists(self.files(container_id).at(PAUSED_MARKER))

    def pause_locked(self, container: Container) -> None:
        self.runc.pause(container.id)
        with open(self.files(container.id).at(PAUSED_MARKER), "w"):
            pass

    def unpause_locked(self, container: Container) -> None:
        """Thaw a paused container (its caller holds its lock): for unpause, and
        before a stop, kill or rm -f, which a frozen task would not obey."""
        marker = self.files(container.id).at(PAUSED_MARKER)
        if os.path.exists(marker):
            self.runc.resume(container.id)
            remove_file(marker)

    # ---- stop / kill / cleanup ----------------------------------------------
    def kill(self, name_or_id: str, signal: str = "SIGKILL") -> Container:
        container = self.get(name_or_id)
        with self.locked(container, "kill"):
            container = self._running(container.id, "kill")
            signal = signal_name(signal)
            self._stopped_by_user(container)   # podman: a killed container is not restarted
            self.runc.kill(container.id, signal)
            self.unpause_locked(container)   # a paused one gets its signal once thawed
        events.note(self.layout, container, "kill")
        return container

    def stop(self, name_or_id: str, timeout: int = DEFAULT_STOP_TIMEOUT) -> Container:
        container = self.get(name_or_id)
        with self.locked(container, "stop"):
            container = self.get(container.id)
            live = self.live_process(container) if container.state != RUNNING else container.pid
            if not live:
                return container
            if container.pid != live:   # running though the record says otherwise: stop it all the same
                container = container._replace(pid=live)
            return self._stop_locked(container, timeout)

    def _stop_locked(self, container: Container, timeout: int) -> Container:
        self._stopped_by_user(container)
        self.unpause_locked(container)   # a frozen task obeys no signal
        with contextlib.suppress(FerryError):
            self.runc.kill(container.id, signal_name(container.config.stop_signal))
        if not self._wait_exit(container, timeout):
            with contextlib.suppress(FerryError):
                self.runc.kill(container.id, "KILL", all_processes=True)
            self._wait_exit(container, 30)
        self.wait_monitor(container)
        try:
            return self.cleanup(container.id)
        except NotFound:  # --rm: the monitor's exit command removed it already
            return container._replace(state=EXITED)

    def _wait_exit(self, container: Container, timeout: float) -> bool:
        return _poll(lambda: has_exited(self.dir(container.id), container.pid), timeout, pid=container.pid)

    def wait_exit_recorded(self, container: Container, timeout: float = 30) -> None:
        """Until the monitor has drained the output and written the exit code."""
        exit_file = self.files(container.id).exit_record
        monitor = self._monitor_pid(container)
        _poll(lambda: os.path.exists(exit_file) or not process_alive(monitor), timeout, EXIT_WAIT_POLL / 5)

    def wait_monitor(self, container: Container, timeout: float = 30) -> None:
        """The monitor drains the last output after the exit; let it finish."""
        pid = self._monitor_pid(container)
        _poll(lambda: not process_alive(pid), timeout, pid=pid)

    def cleanup(self, name_or_id: str, *, wait: float = LOCK_WAIT) -> Container:
        """Release what a stopped container holds while it runs; idempotent.
        With wait=0 it leaves the work to a command that holds the lock (Busy)."""
        container = self.get(name_or_id, refresh=False)
        with self.locked(container, "cleanup", wait=wait):
            container = self.get(container.id, refresh=False)
            if container.state == RUNNING and not has_exited(self.dir(container.id), container.pid):
                return container  # still running: nothing to clean
            self.runc.delete(container.id)
            self.networks.unpublish(container.id)
            self.networks.detach(container.id)
            rootfs.unmount(self.files(container.id).rootfs)
            remove_cgroup_parents(self.runc.cgroup_parent)
            if container.state != EXITED:
                exit_info = _read_json(self.files(container.id).exit_record)
                code = exit_info.get("exit_code", UNKNOWN_EXIT) if exit_info else UNKNOWN_EXIT
                if container.checkpointed_at:
                    code = 0   # ended by its checkpoint, as podman records it
                else:
                    events.note(self.layout, container, "died", exit_code=code)
                events.note(self.layout, container, "cleanup")
                with self.db.write() as conn:
                    conn.execute("UPDATE containers SET state = ?, exit_code = ?, finished_at = ?, pid = NULL "
                                 "WHERE id = ?", (EXITED, code, (exit_info or {}).get("finished_at", utc_now()),
                                                  container.id))
                if self._restarts(container, code, exit_info):
                    # Still under the lock: no other command sees it between
                    # its exit (recorded, as `ps` shows it) and its new start.
                    return self._restart_locked(container)
        container = self.get(container.id, refresh=False)
        checkpointing = os.path.exists(self.files(container.id).checkpointing)
        if container.config.rm and not checkpointing and not container.checkpointed_at:
            with contextlib.suppress(NotFound):
                self.remove(container.id, force=True, volumes=True)
        return container

    def _stopped_by_user(self, container: Container) -> None:
        """A stop, kill or rm ends the container: its restart policy stays out of it."""
        if container.config.extras.restart not in ("", "no"):
            atomic_write(self.files(container.id).at(STOPPED_BY_USER), "")

    def _restarts(self, container: Container, code: int, exit_info: dict | None) -> bool:
        """Whether the exit just recorded starts the container again under its
        policy: not when a command stopped, killed or checkpointed it (or is
        checkpointing it, or migrating it away: that checkpoints it too)."""
        extras = container.config.extras
        if extras.restart in ("", "no") or container.state != RUNNING:   # a start that never ran: no exit
            return False
        files = self.files(container.id)
        if container.checkpointed_at or (exit_info or {}).get("checkpointed") is True \
                or os.path.exists(files.checkpointing) or os.path.exists(files.at(STOPPED_BY_USER)):
            return False
        current = self.get(container.id, refresh=False)
        return not current.checkpointed_at and extras.restarts_after(code, current.restart_count)

    def _restart_locked(self, container: Container) -> Container:
        with self.db.write() as conn:
            conn.execute("UPDATE containers SET restart_count = restart_count + 1 WHERE id = ?", (container.id,))
        log.info("restarting %s under its policy %s", container.name, container.config.extras.restart)
        try:
            return self.start(container.id, by_policy=True)
        except FerryError as error:   # it stays exited, as the record says
            log.warning("cannot restart %s under its restart policy: %s", container.name, error)
            return self.get(container.id, refresh=False)

    def _refresh(self, container: Container) -> Container:
        """Catch up with what happened while no ferry command watched: an
        operation whose command died (its journal), or an exit. A command at
        work on the container is left alone."""
        if journal.exists(self.dir(container.id)):
            from ferry.engine import recovery
            try:
                container = recovery.recover(self, container)
            except NotFound:
                raise
            except (FerryError, OSError) as error:   # a full disk: say what is known, change nothing
                log.warning("cannot finish what was interrupted on %s yet: %s", container.name, error)
        if container.state != RUNNING:
            return container
        if has_exited(self.dir(container.id), container.pid):
            self.wait_monitor(container, timeout=5)
            try:
                return self.cleanup(container.id, wait=0)
            except NotFound:  # removed meanwhile (--rm)
                return container._replace(state=EXITED)
            except Busy:
                return container
            except (FerryError, OSError):   # the exit cannot be recorded (a full disk): show it as seen
                code, when = observed_exit(self.dir(container.id))
                return container._replace(state=EXITED, exit_code=code, finished_at=when, pid=None)
        return container

    # ---- remove ------------------------------------------------------------
    def remove(self, name_or_id: str, *, force: bool = False, volumes: bool = False,
               keep_checkpoints: bool = False, timeout: int = 0) -> str:
        """rm. Its stored checkpoints go with it unless `keep_checkpoints` (a
        half-made restore of one of them, undone). `timeout`: the seconds a
        running one (with `force`) has to stop before it is killed."""
        try:
            container = self.get(name_or_id)
        except DamagedRecord as exc:
            if not force:
                raise
            return self._remove_unreadable(exc.container_id, exc.name)
        if container.state == RUNNING:
            if not force:
                raise ContainerRunning(f"container {container.name!r} is running",
                                       hint="stop it first, or use 'ferry rm -f'")
            self.stop(container.id, timeout=timeout)
        with self.locked(container, "rm"):
            current = self.get(container.id, refresh=False)
            if current.state == RUNNING and process_alive(current.pid):   # its restart policy started it meanwhile
                if not force:
                    raise ContainerRunning(f"container {container.name!r} is running",
                                           hint="stop it first, or use 'ferry rm -f'")
                self._stop_locked(current, timeout)
            self._exit_recorded(current)
            self._remove_locked(container.id)
        if volumes:   # podman's rm -v: the anonymous ones go, named ones stay
            self._remove_anonymous(container.config)
        events.note(self.layout, container, "remove")
        return self._removed(container.id, keep_checkpoints=keep_checkpoints)

    def _remove_anonymous(self, config: ContainerConfig) -> None:
        for volume in config.named_volumes:
            if volume.anonymous and self.volumes.exists(volume.source) \
                    and not self.users_of_volume(volume.source):
                try:
                    self.volumes.remove(volume.source, [])
                except FerryError as error:   # podman warns and goes on
                    log.warning("cannot remove anonymous volume %s: %s", volume.source, error)

    def _remove_unreadable(self, container_id: str, name: str) -> str:
        """rm -f of a container whose record cannot be read: whatever it may run
        is killed by runc, its monitor is let finish, and all it holds goes, by ID."""
        with self.lock_id(container_id, name, "rm"):
            with contextlib.suppress(FerryError):
                self.runc.delete(container_id)   # --force: SIGKILL to all its processes first
            monitor = _read_int(self.files(container_id).monitor_pid)
            _poll(lambda: not process_alive(monitor), 30, pid=monitor)
            self._remove_locked(container_id)
        return self._removed(container_id)

    def _remove_locked(self, container_id: str) -> None:
        with contextlib.suppress(FerryError):
            self.runc.delete(container_id)
        self.networks.unpublish(container_id)
        self.networks.detach(container_id)
        rootfs.unmount(self.files(container_id).rootfs)
        remove_tree(self.dir(container_id))   # first: on a full disk it frees the room the rest needs
        self.networks.release(container_id)
        self._delete_record(container_id)

    def discard(self, container_id: str) -> None:
        """What a stopped container holds, for a restore of one of its stored
        checkpoints that takes its place, ID and all: the caller holds the
        container's lock, and keeps it (and the checkpoints)."""
        container = self.get(container_id)
        if container.state == RUNNING:
            raise ContainerRunning(f"container {container.name!r} is running",
                                   hint="stop it first: a restore takes the place of a stopped container")
        with self.locked(container, "container restore"):
            self._remove_locked(container.id)

    def _removed(self, container_id: str, *, keep_checkpoints: bool = False) -> str:
        # Its stored checkpoints go with it, as its in-place one does with its dir;
        # its exported archives are the user's files, and stay.
        if not keep_checkpoints:
            for entry in self.checkpoint_store.stored_of(container_id, written=False):
                remove_file(entry.path)
                self.checkpoint_store.forget(entry)
            remove_file(self.layout.checkpoint_schedule(container_id))
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(self.layout.checkpoints, container_id))
        remove_cgroup_parents(self.runc.cgroup_parent)
        with contextlib.suppress(OSError):
            os.unlink(self.layout.lock(f"container-{container_id}"))
        return container_id

    # ---- exec / logs ---------------------------------------------------------
    def _running(self, name_or_id: str, verb: str, refusal: type[Conflict] = Conflict) -> Container:
        container = self.get(name_or_id)
        if container.state != RUNNING:
            raise refusal(f"cannot {verb} container {container.name!r}: it is {container.state}",
                           hint=f"start it first with 'ferry start {container.name}'")
        return container

    def exec_argv(self, name_or_id: str, command: list[str], *, tty: bool, env: list[str],
                  workdir: str | None, user: str | None, log_path: str | None = None,
                  privileged: bool = False, detach: bool = False) -> list[str]:
        """runc exec's argv; first, a command that cannot run is refused as podman
        would (127 not found, 126 not executable), in one line rather than runc's."""
        container = self.get(name_or_id)
        with self.locked(container, "exec"):   # not while a checkpoint or a stop is at work
            container = self._running(container.id, "exec into", ExecImpossible)
            if self.paused(container.id):   # runc would refuse it in its own words
                raise ExecImpossible(f"cannot exec into container {container.name!r}: it is paused",
                                     hint=f"unpause it first with 'ferry unpause {container.name}'")
        if not command:
            raise UsageError("exec needs a command", hint="ferry exec CONTAINER COMMAND [ARG...]")
        env = list(_merge_env(container.config.env, tuple(env)))
        # runc takes numbers only: names come from the container's own files, as podman reads them.
        from ferry.runtime import spec as ocispec
        uid, gid, groups = ocispec.resolve_user(self.files(container.id).rootfs, user or container.config.user)
        if container.pid:
            check_command(container, command[0], env, workdir or container.config.workdir, uid, gid, groups)
        events.note(self.layout, container, "exec")
        return self.runc.exec_argv(container.id, command, tty=tty, env=env, cwd=workdir,
                                   user=f"{uid}:{gid}" if user else None,
                                   additional_gids=groups if user else (), log_path=log_path, detach=detach,
                                   # podman's exec --privileged: every capability ferry itself has
                                   caps=tuple(sorted(hostspec.bounding_set())) if privileged else ())

    def exec_detached(self, name_or_id: str, command: list[str], *, env: list[str], workdir: str | None,
                      user: str | None, privileged: bool = False) -> None:
        """podman's exec -d: start `command` in the running container and leave it.
        Its stdio is the container's own /dev/null: it holds nothing of the
        caller's (a pipe of ours would keep `ferry exec -d ... | cat` waiting on it)."""
        container = self.get(name_or_id)
        log_fd = os.memfd_create("ferry-exec-runc-log", os.MFD_CLOEXEC)
        try:
            runc_log = f"/proc/{os.getpid()}/fd/{log_fd}"
            try:
                argv = self.exec_argv(container.id, command, tty=False, env=env, workdir=workdir, user=user,
                                      log_path=runc_log, privileged=privileged, detach=True)
            except (CommandNotFound, CommandNotExecutable, ExecImpossible) as error:   # podman's exec -d: 125
                raise FerryError(error.message, hint=error.hint) from None
            null = _container_null(container.pid)
            try:
                code = proc.spawn(argv, desc="runc exec", stdin=null, stdout=null, stderr=null).wait()
            finally:
                os.close(null)
            if code != 0:
                raise ToolError("runc exec", code, quote_runc_log(runc_log))
        finally:
            os.close(log_fd)

    def exec(self, name_or_id: str, command: list[str], *, tty: bool, interactive: bool, env: list[str],
             workdir: str | None, user: str | None, privileged: bool = False) -> int:
        """Run `command` in the running container on this process's terminal; its exit code."""
        container = self.get(name_or_id)
        # runc's log in memory: an exec must work on a full disk, as it did before it read runc's log.
        log_fd = os.memfd_create("ferry-exec-runc-log", os.MFD_CLOEXEC)
        try:
            runc_log = f"/proc/{os.getpid()}/fd/{log_fd}"
            argv = self.exec_argv(container.id, command, tty=tty, env=env, workdir=workdir, user=user,
                                  log_path=runc_log, privileged=privileged)
            if tty and not os.isatty(0):
                raise UsageError("-t needs a terminal on stdin", hint="drop -t, or run ferry from a terminal")
            code = self._exec_foreground(argv, stdin=interactive or tty)
            events.note_by(self, container, "exec_died")
            if code == RUNC_EXEC_FAILED:
                _raise_exec_failure(command[0], runc_log)
            return code
        finally:
            os.close(log_fd)

    @staticmethod
    def _exec_foreground(argv: list[str], *, stdin: bool) -> int:
        if stdin:
            return proc.run_foreground(argv, desc="runc exec")
        # runc hands the command our stdin: without -i it gets none, and ours comes back after.
        saved = os.dup(0)
        try:
            with open(os.devnull) as null:
                os.dup2(null.fileno(), 0)
            return proc.run_foreground(argv, desc="runc exec")
        finally:
            os.dup2(saved, 0)
            os.close(saved)

    def log_path(self, name_or_id: str) -> tuple[Container, str]:
        container = self.get(name_or_id)
        return container, self.files(container.id).log

    def attach_socket(self, container: Container) -> str:
        return self.files(container.id).attach_socket

    def exit_code(self, container_id: str) -> int | None:
        info = _read_json(self.files(container_id).exit_record)
        return info.get("exit_code") if info else None

    def ended_by_checkpoint(self, container_id: str) -> bool:
        info = _read_json(self.files(container_id).exit_record)
        return bool(info and info.get("checkpointed") is True)

    # ---- prune -----------------------------------------------------------------
    def prune_leftovers(self) -> list[str]:
        """Remove what a crash left: mounts, runc states and dirs of no known container."""
        removed = []
        known = {c.id: c for c in self.list(all_states=True)}
        for container in known.values():
            if container.state != RUNNING:
                target = self.files(container.id).rootfs
                if rootfs.is_mounted(target):
                    rootfs.unmount(target)
                    removed.append(f"mount {target}")
        if os.path.isdir(self.layout.containers):
            for entry in os.listdir(self.layout.containers):
                if entry not in known:
                    with contextlib.suppress(FerryError):
                        self.runc.delete(entry)
                    remove_tree(os.path.join(self.layout.containers, entry))
                    removed.append(f"container dir {entry[:12]}")
        # A checkpointed container keeps its address and rules: its restore needs them.
        running = {cid for cid, c in known.items() if c.state == RUNNING or c.checkpointed_at}
        removed += self.networks.prune(running)
        remove_cgroup_parents(self.runc.cgroup_parent)
        return removed


def _container_null(pid: int | None) -> int:
    """An fd of the container's /dev/null (through its root, so it stays inside),
    or of the host's when the container's is not the null device."""
    null_device = os.makedev(1, 3)
    with contextlib.suppress(OSError):
        fd = os.open(f"/proc/{pid}/root/dev/null", os.O_RDWR | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
                     | os.O_CLOEXEC)
        info = os.fstat(fd)
        if pid and stat.S_ISCHR(info.st_mode) and info.st_rdev == null_device:
            os.set_blocking(fd, True)
            return fd
        os.close(fd)
    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


def _networks(requested: str | tuple[str, ...] | None, ip: str | None = None,
              mac: str | None = None) -> tuple[str, list[str]]:
    """The network mode and the networks to join (eth0 first), from every
    --network (podman's comma form too), refused where podman 4.3.1 refuses:
    host or none with anything else, --ip or --mac-address with several
    networks or without a bridge network, more networks than interfaces."""
    from ferry.engine.config import MAX_NETWORKS
    texts = [requested] if isinstance(requested, str) else list(requested or ())
    names = list(dict.fromkeys(n.strip() for text in texts for n in text.split(",") if n.strip()))
    modes = [n for n in names if n in (HOST_NETWORK, NO_NETWORK)]
    if modes:
        if len(names) > 1:
            raise UsageError(f"cannot set multiple networks without bridge network mode, selected mode {modes[0]}",
                             hint=f"give --network {modes[0]} alone")
        for flag, value in (("--ip", ip), ("--mac-address", mac)):
            if value:
                raise UsageError(f"{flag} can only be set when the network mode is bridge")
        return modes[0], []
    if len(names) > 1:
        for flag, value in (("--ip", ip), ("--mac-address", mac)):
            if value:
                raise UsageError(f"{flag} can only be set for a single network")
    if len(names) > MAX_NETWORKS:   # one interface each, eth0..eth15
        raise UsageError(f"a container joins at most {MAX_NETWORKS} networks, not {len(names)}")
    # podman's `bridge` is its default network: ferry's is `ferry`
    from ferry.network.ipam import DEFAULT_NETWORK
    return BRIDGE, list(dict.fromkeys(DEFAULT_NETWORK if n == BRIDGE else n for n in names))


RUNC_EXEC_FAILED = 255   # runc exec's code when the command never started (or the command's own 255)


def check_command(container: Container, name: str, env: list[str], cwd: str, uid: int, gid: int,
                  groups: tuple[int, ...]) -> None:
    """Raise CommandNotFound or CommandNotExecutable when runc would fail to start
    `name` in the running container, looked up as runc does (Go's LookPath, then
    execve as the user), in a child chrooted to the container's root."""
    from ferry.runtime.spec import DEFAULT_PATH
    path = next((e[5:] for e in reversed(env) if e.startswith("PATH=")), DEFAULT_PATH)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:   # the child only looks, answers in one line and leaves
        verdict = ""
        try:
            os.close(read)
            os.chroot(f"/proc/{container.pid}/root")
            try:
                os.chdir(cwd)
            except OSError as error:
                verdict = f"127 workdir {cwd!r}: {error.strerror.lower()}"
            if not verdict:
                os.setgroups(list(groups))
                os.setgid(gid)
                os.setuid(uid)
                verdict = _lookup_verdict(name, path)
        except BaseException:
            verdict = ""   # cannot tell: let runc try
        finally:
            os.write(write, verdict.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        verdict = answer.read().decode()
    os.waitpid(child, 0)
    if verdict:
        code, _, reason = verdict.partition(" ")
        kind = CommandNotFound if code == "127" else CommandNotExecutable
        raise kind(f"cannot run {name!r} in container {container.name!r}: {reason}")


def _lookup_verdict(name: str, path: str) -> str:
    """"" when `name` can be run here; else "127 REASON" or "126 REASON"."""
    if "/" in name:
        found = name
        if not os.path.exists(found):
            return "127 no such file or directory"
    else:
        found = next((candidate for candidate in (os.path.join(d or ".", name) for d in path.split(":"))
                      if os.path.isfile(candidate) and os.stat(candidate).st_mode & 0o111), None)
        if found is None:
            return "127 executable file not found in $PATH"
    if os.path.isdir(found) or not os.access(found, os.X_OK):
        return "126 permission denied"
    return ""


def _raise_exec_failure(name: str, runc_log: str) -> None:
    """After runc exec returned 255: if runc says the command never started, that
    failure in podman's code; otherwise 255 was the command's own code."""
    from ferry.runtime.runc import quote_runc_log
    message = quote_runc_log(runc_log, lines=1)
    if "exec failed" not in message:
        return
    reason = message.split("unable to start container process: ", 1)[-1]
    if "not found" in reason or "no such file or directory" in reason:
        raise CommandNotFound(f"cannot run {name!r}: {reason}")
    if "permission denied" in reason:
        raise CommandNotExecutable(f"cannot run {name!r}: {reason}")
    raise ToolError("runc exec", RUNC_EXEC_FAILED, reason)


def _labels(image_labels: tuple[tuple[str, str], ...], options: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The image's labels, then --label's (podman: the container's win)."""
    from ferry.engine.runextras import parse_labels
    try:
        given = parse_labels(options)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return tuple({**dict(image_labels), **dict(given)}.items())


def init_args(config: ContainerConfig) -> tuple[str, ...]:
    return (INIT_PATH, "--") if config.extras.init else ()


def init_binary() -> str:
    """The init on this host, its symlinks resolved (the bind's source, which a restore must find too)."""
    path = os.path.realpath(INIT_BINARY)
    if not os.path.isfile(path):
        raise NotFound(f"container-init binary not found on the host: {INIT_BINARY}",
                       hint="install Debian's catatonit package (scripts/setup.sh does)")
    return path


def _extras(options: RunOptions, image_labels) -> tuple[RunExtras, tuple[str, ...]]:
    """The run's RunExtras, and what its --env-file options hold (podman's
    messages and exit code 125 for a bad value)."""
    from ferry.engine import runextras as rx
    try:
        env_file = tuple(entry for path in options.env_files for entry in rx.parse_env_file(path))
        add_hosts = tuple(rx.parse_add_host(text) for text in options.add_hosts)
        dns, dns_none = rx.parse_dns(options.dns)
        search = rx.parse_dns_search(options.dns_search)
        dns_options = rx.parse_dns_options(options.dns_options)
        restart, retries = rx.parse_restart(options.restart)
        if len(add_hosts) > rx.MAX_HOSTS:
            raise ValueError(f"at most {rx.MAX_HOSTS} --add-host entries")
    except ValueError as error:
        raise UsageError(str(error)) from None
    for given, what in ((options.dns_search, "DNSSearch"), (options.dns_options, "DNSOption")):
        if dns_none and given:
            raise UsageError(f"invalid config provided: UseImageResolvConf and {what} are mutually exclusive options")
    if options.init:
        init_binary()
    if options.rm and restart not in ("", "no"):
        raise UsageError('the --rm option conflicts with --restart, when the restartPolicy is not "" and "no"')
    extras = RunExtras(labels=_labels(image_labels, options.labels), add_hosts=add_hosts, dns=dns,
                       dns_none=dns_none, dns_search=search, dns_options=dns_options, restart=restart,
                       restart_retries=retries, init=options.init)
    return extras, env_file


def _exposed(exposed: tuple[str, ...], ports) -> list:
    """-P: each port the image exposes ("80/tcp") that no -p publishes, on a host port chosen at start."""
    from ferry.network.ports import PortMapping
    taken = {(p.container_port, p.protocol) for p in ports}
    added = []
    for text in exposed:
        number, _, protocol = text.partition("/")
        low, _, high = number.partition("-")
        if not low.isdigit() or not (high or low).isdigit() or (protocol or "tcp") not in ("tcp", "udp"):
            continue   # an image config ferry cannot publish from: podman would fail the run
        for port in range(int(low), min(int(high or low), 65535) + 1):
            key = (port, protocol or "tcp")
            if key not in taken and 1 <= port:
                taken.add(key)
                added.append(PortMapping("", 0, *key))
    return added


def _host_spec(host) -> dict:
    """The runtime spec's fields for what `run` asked of the host (runtime/spec.py)."""
    from ferry.engine.hostconfig import CPU_PERIOD, DEFAULT_HOST
    if host == DEFAULT_HOST:
        return {}
    return {"capabilities": host.capabilities(host_capabilities()),
            "rlimits": tuple((f"RLIMIT_{name.upper()}", soft, hard) for name, soft, hard in host.ulimits),
            "readonly_root": host.read_only, "memory": host.memory,
            # podman's: swap as much as memory again (memory.memsw is memory plus swap)
            "memory_swap": 2 * host.memory, "cpu_quota": host.cpu_quota(),
            "cpu_period": CPU_PERIOD if host.nano_cpus else 0, "ipc_host": host.ipc == "host",
            "privileged": host.privileged}


@functools.lru_cache(maxsize=1)
def host_capabilities() -> frozenset[str]:
    from ferry.util.hostspec import bounding_set
    return bounding_set()


def _host_config(options: RunOptions):
    """The host config run's flags ask for, and --mount's binds and volumes in
    -v's form (they become the same VolumeSpec records); UsageError on a bad value."""
    from ferry.engine import hostconfig as hc
    values: dict = {}
    flag = ""
    try:
        if options.memory is not None:
            flag = "--memory"
            values["memory"] = hc.parse_memory(options.memory)
        if options.cpus is not None:
            flag = "--cpus"
            values["nano_cpus"] = hc.parse_cpus(options.cpus)
        flag = "--ulimit"
        values["ulimits"] = hc.merge_ulimits(options.ulimits)
        flag = "--cap-add"
        values["cap_add"] = hc.parse_capabilities(options.cap_add)
        flag = "--cap-drop"
        values["cap_drop"] = hc.parse_capabilities(options.cap_drop)
        flag = "--tmpfs"
        tmpfs = [hc.parse_tmpfs(t) for t in options.tmpfs]
        flag = "--mount"
        mounted = []
        for text in options.mounts:
            parsed = hc.parse_mount(text)
            if parsed.tmpfs is not None:
                tmpfs.append(parsed.tmpfs)
            else:
                mounted.append(parsed.volume)
        if len({t.destination for t in tmpfs}) != len(tmpfs):
            raise ValueError("two tmpfs mounts at the same container path")
        values["tmpfs"] = tuple(tmpfs)
        if options.ipc is not None:
            flag = "--ipc"
            values["ipc"] = hc.parse_ipc(options.ipc)
        flag = ""
        host = hc.HostConfig(privileged=options.privileged, read_only=options.read_only,
                             read_only_tmpfs=options.read_only_tmpfs, **values)
    except ValueError as error:
        raise UsageError(str(error), hint=f"see 'ferry run --help' for {flag}" if flag else None) from None
    for name, soft, hard in host.ulimits:
        from ferry.util.hostspec import host_hard_limit
        allowed = host_hard_limit(f"RLIMIT_{name.upper()}")
        if allowed is not None and hard > allowed:
            # podman's runc fails the same way here (exit 126): without
            # CAP_SYS_RESOURCE no limit goes above the host's hard one.
            raise RuntimeRefused(f"--ulimit {name}: this host allows a hard limit of at most {allowed} "
                                 f"(ferry runs without CAP_SYS_RESOURCE), not {_limit_text(hard)}",
                                 hint=f"ask for {name}={min(soft, allowed)}:{allowed} or less")
    return host, tuple(mounted)


def _limit_text(value: int) -> str:
    from ferry.engine.hostconfig import RLIM_INFINITY
    return "unlimited" if value == RLIM_INFINITY else str(value)


def _check_destinations(volumes: list[VolumeSpec], host) -> None:
    """-v, --mount and --tmpfs may not mount two things at one container path."""
    seen: set[str] = set()
    for destination in [v.destination for v in volumes] + [t.destination for t in host.tmpfs]:
        if destination in seen:
            raise UsageError(f"{destination}: duplicate mount destination")
        seen.add(destination)


def _image_volumes(paths: tuple[str, ...], given) -> list[VolumeSpec]:
    """An anonymous volume for each VOLUME of the image that no -v covers (podman)."""
    taken = {v.destination for v in given}
    added = []
    for path in paths:
        destination = os.path.normpath(path)
        if destination.startswith("/") and destination not in taken:
            taken.add(destination)
            added.append(VolumeSpec("volume", ids.new_id(), destination, anonymous=True))
    return added


def _merge_env(base, extra) -> tuple[str, ...]:
    merged: dict[str, str] = {}
    for item in list(base) + list(extra):
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"bad environment variable {item!r}: expected KEY=VALUE")
        if not sep:  # podman's -e KEY takes the value from ferry's own environment
            if key not in os.environ:
                continue
            value = os.environ[key]
        merged[key] = value
    return tuple(f"{k}={v}" for k, v in merged.items())


def _parse_entrypoint(text: str) -> tuple[str, ...]:
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            raise UsageError(f"bad --entrypoint {text!r}: not a JSON array") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"bad --entrypoint {text!r}: expected a JSON array of strings")
        return tuple(value)
    return (text,) if text else ()


def signal_name(signal: str) -> str:
    text = signal.upper().removeprefix("SIG")
    if text.isdigit():
        return text
    if not hasattr(posix_signals, "SIG" + text):
        raise UsageError(f"unknown signal {signal!r}", hint="use a name like TERM or KILL, or a number")
    return text


def _poll(done, timeout: float, interval: float = EXIT_WAIT_POLL, pid: int | None = None) -> bool:
    """Wait for `done()` with a deadline; True when it came true. With `pid`,
    whose exit makes it true, the wait wakes at that exit (a pidfd) instead
    of at the next look: `rm -f` waited up to 50 ms on each of two."""
    deadline = time.monotonic() + timeout
    exited = proc.exit_watch(pid)
    try:
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if exited is None:
                time.sleep(interval)
            elif select.select([exited], [], [], min(interval, remaining))[0]:
                os.close(exited)    # it stays readable: look again soon, without it
                exited, interval = None, min(interval, EXIT_WAIT_POLL / 10)
        return True
    finally:
        if exited is not None:
            os.close(exited)


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


ADJECTIVES = ("brave", "calm", "eager", "fond", "keen", "lucid", "merry", "nimble", "quiet", "swift")
NOUNS = ("ferry", "barge", "raft", "skiff", "dory", "punt", "junk", "ketch", "sloop", "yawl")


def _generated_name(container_id: str) -> str:
    a = int(container_id[:4], 16) % len(ADJECTIVES)
    n = int(container_id[4:8], 16) % len(NOUNS)
    return f"{ADJECTIVES[a]}_{NOUNS[n]}_{container_id[:6]}"


def _containerenv(container: Container) -> str:
    """podman's /run/.containerenv: programs look for it to know they run in a container."""
    from ferry import __version__
    return (f'engine="ferry-{__version__}"\nname="{container.name}"\nid="{container.id}"\n'
            f'image="{container.config.image}"\nimageid="{container.image_id}"\nrootless=0\n')
