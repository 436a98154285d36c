"""Finish or undo an operation whose command died (SIGKILL, a crash, a reboot).

A journal (engine/journal.py) whose container lock is free belongs to a dead
command. The next command that looks at the container, or `system prune`,
brings it to one of two states, and never to a third:
- running, with its record saying so (a start or restore that got that far,
  or a dump that failed or left the container running), or
- exited with a complete local checkpoint that `ferry container restore NAME`
  brings back (a dump that completed, wherever the command died after it).
A restore from an archive that did not get the container running is undone
entirely: the archive is still there to restore from.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time

from ferry.engine import journal
from ferry.runtime.launch import REPORT_TIMEOUT
from ferry.runtime.runc import kill_container_cgroups
from ferry.util import proc
from ferry.util.errors import FerryError, NotFound
from ferry.util.fs import fsync_dir, mounts_under, remove_file, remove_tree, remove_tree_later
from ferry.util.locks import Busy
from ferry.util.log import get_logger
from ferry.util.timefmt import utc_now

log = get_logger("ferry.recovery")

LOG_TAIL = 4 << 20     # bytes of the end of CRIU's dump.log that tell how it ended
TOOL_WAIT = 1800.0     # a runc checkpoint that outlived its ferry: as long as a dump may take
POLL = 0.05


def recover(containers, container):
    """The container once its interrupted operation is finished or undone;
    as it is when another command is at work on it. NotFound when the undo
    removed it (a restore from an archive that never ran)."""
    directory = containers.dir(container.id)
    entry = journal.read(directory)
    if entry is None or entry.pid == os.getpid() or container.id in _recovering:
        return container   # nothing to do, this command's own operation, or under way here
    _recovering.add(container.id)
    try:
        with containers.locked(container, "recovery", wait=0):
            entry = journal.read(directory)
            if entry is not None and entry.pid != os.getpid():
                log.warning("finishing the %s of %s that pid %s left in phase %s",
                            entry.op, container.name, entry.pid, entry.phase)
                settled = True
                if entry.op == journal.CHECKPOINT:
                    _checkpoint(containers, containers.get(container.id, refresh=False), entry)
                elif entry.op == journal.MIGRATE:
                    # A dump to the destination's page server may still run:
                    # its tasks are CRIU's until it ends.
                    _wait_for_tool(containers, container)
                else:
                    _start(containers, containers.get(container.id, refresh=False), entry)
                if entry.migration:
                    # Whether the destination runs it decides: remove this copy, or resume it.
                    settled = containers.engine.migrations.settle(containers.get(container.id, refresh=False),
                                                                  entry.migration)
                if settled:
                    journal.finish(directory)
    except Busy:
        return container
    finally:
        _recovering.discard(container.id)
    return containers.get(container.id, refresh=False)


_recovering: set[str] = set()   # container ids whose recovery runs in this process


# ---- a checkpoint ------------------------------------------------------------

def _checkpoint(containers, container, entry: journal.Entry) -> None:
    files = containers.files(container.id)
    images = files.checkpoint_images
    _wait_for_tool(containers, container)
    if entry.archive_temp:   # an archive is only complete once renamed from its temp file
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.archive_temp)
    if containers.live_process(container):
        # The dump failed, or it was -R: the container runs on. CRIU's own
        # clean-up did not happen if CRIU was killed too.
        thaw(containers, container.id)
        drop_network_lock(containers, container.id)
        if not container.checkpointed_at:
            remove_tree(images)
    elif dump_completed(images, files.checkpoint_work):
        if not container.checkpointed_at:
            containers.set_checkpointed(container.id, utc_now())
        keep_on_disk(images)
    else:
        remove_tree(images)   # the container ended without a complete dump: nothing to keep
    remove_file(files.checkpointing)
    if not containers.live_process(container):
        containers.wait_monitor(container, timeout=5)
        containers.cleanup(container.id)


def dump_completed(images: str, work: str) -> bool:
    """Whether a dump whose container is gone completed. CRIU writes the
    inventory after every other image, kills the tasks only after a
    successful dump ("Unfreezing tasks into 2", TASK_DEAD), and writes its
    stats 40-110 ms later, so a kill in between leaves a complete dump
    without them; the inventory alone is also there after a dump that failed
    at its very end, with the tasks alive (checked before this)."""
    if not os.path.exists(os.path.join(images, "inventory.img")):
        return False
    if not any(name.startswith("pagemap-") for name in os.listdir(images)):
        return False   # its pages went to a migration's destination: not a checkpoint of this host
    try:
        with open(os.path.join(work, "dump.log"), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - LOG_TAIL))
            said = f.read()
    except OSError:
        return True   # no log to say otherwise
    return b"Dumping FAILED" not in said and (b"Unfreezing tasks into 2" in said
                                               or b"Dumping finished successfully" in said)


def _wait_for_tool(containers, container) -> None:
    """A runc checkpoint runs in a session of its own and outlives the ferry
    that started it: its dump is over only when it has ended."""
    if not journal.wait_for_tool(containers.dir(container.id), TOOL_WAIT, POLL):
        log.warning("the runc checkpoint of %s is still at work after %d s; going on", container.name, TOOL_WAIT)


def thaw(containers, container_id: str) -> None:
    """A container frozen by a CRIU (or a -R export) that was killed stays frozen."""
    containers.runc.thaw(container_id)


def drop_network_lock(containers, container_id: str) -> None:
    """CRIU's nftables network lock (tables named CRIU-*), in the container's
    netns, outlives a CRIU killed mid-dump and cuts the container off."""
    from ferry.network import link
    netns = containers.networks.netns_name(container_id)   # an adopted container's name has its root's tag
    if not link.netns_exists(netns):
        return
    listed = proc.run(["ip", "netns", "exec", netns, "nft", "-j", "list", "tables"],
                      desc="list the container's nftables tables", check=False)
    if listed.returncode != 0:
        return
    try:
        items = json.loads(listed.stdout).get("nftables", [])
    except ValueError:
        return
    for item in items:
        table = item.get("table") if isinstance(item, dict) else None
        if isinstance(table, dict) and str(table.get("name", "")).startswith("CRIU"):
            proc.run(["ip", "netns", "exec", netns, "nft", "delete", "table", str(table.get("family")),
                      str(table["name"])], desc="delete CRIU's network lock", check=False)


# ---- a start or a restore ----------------------------------------------------

def _start(containers, container, entry: journal.Entry) -> None:
    _wait_for_verdict(containers, container)
    live = containers.live_process(container)
    if live and containers.monitor_alive(container):
        containers.record_running(container.id, live, restored=entry.op == journal.RESTORE)
        with contextlib.suppress(FerryError):
            containers.networks.connect(container.id)   # CRIU's hook may not have run
        if entry.op == journal.RESTORE and not entry.from_archive:
            containers.set_checkpointed(container.id, None)
            remove_tree_later(containers.files(container.id).checkpoint_images)
        _drop_scratch(entry)
        return
    # Not running, or running without the monitor that owns its output and
    # records its exit: what was started goes, and what was before stays
    # (a local checkpoint, or the archive a restore came from).
    if live:
        log.warning("container %s runs without its monitor; stopping it", container.name)
    with contextlib.suppress(FerryError, OSError):
        containers.runc.delete(container.id)
    kill_container_cgroups(container.id, containers.runc.cgroup_parent)
    _drop_scratch(entry)
    if entry.from_archive:
        with contextlib.suppress(NotFound):   # the checkpoint it came from may be one of its own
            containers.remove(container.id, force=True, keep_checkpoints=True)
        return
    containers.cleanup(container.id)


def _wait_for_verdict(containers, container) -> None:
    """A monitor that the dead command started may still be bringing the
    container up (runc restore of many GiB): wait until it runs or gave up."""
    pid_file = containers.files(container.id).container_pid
    deadline = time.monotonic() + REPORT_TIMEOUT
    while containers.monitor_alive(container) and time.monotonic() < deadline:
        if os.path.exists(pid_file) and containers.live_process(container):
            return
        time.sleep(POLL)


def _drop_scratch(entry: journal.Entry) -> None:
    if entry.scratch:
        with contextlib.suppress(FerryError, OSError):
            remove_tree_later(entry.scratch)


# ---- durability of local checkpoints ------------------------------------------

def fsync_tree(directory: str) -> None:
    """Every file of a checkpoint's images, and the directory, on disk: a
    local checkpoint must outlive a crash or power cut, not only a reboot."""
    for name in os.listdir(directory):
        fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(directory)


def keep_on_disk(images: str) -> bool:
    """Move a checkpoint's images off their scratch tmpfs onto the disk of
    the container's directory, so that it outlives a reboot; True when they
    are on disk. A full disk leaves them in memory (False)."""
    if not mounts_under(images):
        fsync_tree(images)   # the dump may have ended without its command's fsync
        return True
    copy = images + ".disk"
    remove_tree(copy)
    try:
        shutil.copytree(images, copy, copy_function=shutil.copy2)
        os.chmod(copy, 0o700)
        fsync_tree(copy)
    except OSError as exc:
        remove_tree(copy)
        log.warning("the checkpoint in %s stays in memory: %s", images, exc.strerror or exc)
        return False
    remove_tree(images)   # unmounts the tmpfs first
    os.rename(copy, images)
    fsync_dir(os.path.dirname(images))
    return True
