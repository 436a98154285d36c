"""Checkpoint a running container into one archive (or locally), and restore it,
under its name or a new one, in this root or another.

The archive has podman's layout (checkpoint/, config.dump, spec.dump,
network.status, stats-dump, rootfs-diff.tar, deleted.files, volumes/NAME.tar)
plus ferry's manifest.json, written first, with every member's size and hash.
A restore validates the whole archive into a staging directory inside the
root before it creates anything, and undoes every step if any later one fails.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Callable, NamedTuple

from ferry.checkpoint import archive
from ferry.checkpoint.archive.treediff import apply_tree_diff, image_names_below, write_tree_diff
from ferry.checkpoint.archive.endpoints import Endpoint, export_endpoint, is_stream
from ferry.checkpoint.foreign_layout import podman_identity
from ferry.checkpoint import podman_shape
from ferry.checkpoint.encryption import (Opening, Sealing, archive_source, decrypted_endpoint, opening,
                                         sealing as sealing_for, sealing_argv)
from ferry.checkpoint.criu import FILE_LOCKS_IMAGE, DumpStats, ensure_pipe_max_size, read_dump_stats, read_restore_stats
from ferry.engine.checkpoint_store import ARCHIVE, LOCAL, CheckpointEntry, check_pattern, fill_pattern, to_keep
from ferry.engine.config import (BRIDGE, HOST_NETWORK, ArchivedContainer, ContainerConfig, check_network_status,
                                 parse_deleted_files)
from ferry.engine import journal
from ferry.engine.images import image_by_id
from ferry.engine import recovery
from ferry.engine.containers import RUNNING, Container, Containers, RestoreFrom, Undo
from ferry.engine.listing import EXITED
from ferry.engine.recovery import fsync_tree, keep_on_disk
from ferry.runtime import launch, rootfs
from ferry.runtime.runc import frozen_since as runc_frozen_since
from ferry.engine.volumes import VolumeSpec
from ferry.store import ids
from ferry.store.layout import CHECKPOINT_IMAGES, CONTAINER_LOG, ContainerFiles
from ferry.util import phases, signals
from ferry.util.errors import BadArchive, Conflict, FerryError, Incompatible, NotFound, ToolError, UsageError
from ferry.util.fs import (atomic_write, memory_available, remove_file, remove_tree, remove_tree_later,
                           tmpfs_if_it_fits, write_scratch)
from ferry.util.locks import is_locked
from ferry.util.progress import Progress
from ferry.util.space import disk_free, margin, size_text
from ferry.util.timing import Timer
from ferry.util.log import get_logger
from ferry.util.strictjson import shown
from ferry.util.timefmt import utc_now

IMAGES = CHECKPOINT_IMAGES        # CRIU images: the same name in the container dir and the archive
CONFIG_DUMP = "config.dump"      # podman's shape; ferry's own record is FERRY_CONFIG
FERRY_CONFIG = "ferry-config.json"
SPEC_DUMP = "spec.dump"
NETWORK_STATUS = "network.status"
STATS_DUMP = "stats-dump"
ROOTFS_DIFF = "rootfs-diff.tar"
DELETED_FILES = "deleted.files"
DEVSHM = "devshm-checkpoint.tar"  # /dev/shm of a container in podman's shape (SpecProfile.shm_dir)
VOLUMES = "volumes"
LOG = CONTAINER_LOG              # the container's log: the same name in the archive

if TYPE_CHECKING:   # the migrations' own parts load only when a migration runs
    from ferry.checkpoint.archive.writer import ArchiveWriter, WriteResult
    from ferry.checkpoint.lazy import LazyDump, LazyServe, LazySource
    from ferry.checkpoint.pagepush import PagePush, PageReceiver

log = get_logger("ferry.checkpoints")

HINT_FORGED = "the archive is damaged or forged; do not restore from it"
IMPORT_PREFIX = "import-"        # a restore's staging dir under ROOT/tmp, named after its container
IMAGE_ARCHIVE = "checkpoint-image.tar"   # --create-image's archive, in the container dir until it is a layer
SEALING_PLAIN = "archive.unencrypted"    # in CRIU's work dir: an encrypted archive before it is encrypted
FILE_LOCKS_REFUSED = "file locks are hold"   # CRIU's dump.log: "Some file locks are hold by dumping tasks!"
CRIU_IMAGE_HEADER = 8

class Authenticity:
    """What a restore knows of where its checkpoint came from."""
    LOCAL = "local"              # this root's own checkpoint
    VERIFIED = "verified"        # an archive whose signature --verify-key checked
    UNVERIFIED = "unverified"    # an archive anyone could have written
    FOREIGN = "foreign"          # another engine's archive: no digests, no signature


def _no_progress(_phase: str, _done: int, _total: int) -> None:
    pass


class CheckpointOptions(NamedTuple):
    export: str | None = None
    leave_running: bool = False
    tcp_established: bool = False
    file_locks: bool = False          # dump the file locks its processes hold (CRIU refuses them otherwise)
    compress: str | None = None
    ignore_rootfs: bool = False
    ignore_volumes: bool = False
    keep: bool = False
    sign_key: str | None = None     # an Ed25519 private key (PEM) to sign the archive with
    create_image: str | None = None   # also make a checkpoint image of this name (podman's --create-image)
    export_stream: int | None = None  # a descriptor to stream the archive to (a migration), instead of export
    migration: str | None = None      # the migration this checkpoint serves, for its journal
    lazy: LazyServe | None = None     # a lazy migration: memory stays here, served on a page server
    # A migration's pages go to the destination's page server, and the
    # container stays here, frozen and cut off, until the migration decides.
    push: PagePush | None = None
    keep_last: int | None = None      # then drop all but the container's newest N checkpoints
    every: float | None = None        # then one more each this many seconds, from the monitor (-R)
    file_pattern: str | None = None   # each --leave-running checkpoint's archive: {name} {id} {time}
    unlisted: bool = False            # an archive ferry writes for itself (an image's layer): no record
    encrypt_to: tuple[str, ...] = ()  # age or SSH public keys, or files of them (checkpoint.encryption)
    encrypt_passphrase_file: str | None = None
    sealing: Sealing | None = None    # the encryption those ask for, read by checkpoint()


class RestoreOptions(NamedTuple):
    import_path: str | None = None
    name: str | None = None
    tcp_established: bool = False
    keep: bool = False                # an in-place restore keeps its checkpoint, to restore again (podman's -k)
    ports: tuple[str, ...] | None = None
    ignore_static_ip: bool = False
    ignore_static_mac: bool = False
    ignore_rootfs: bool = False
    ignore_volumes: bool = False
    image_archive: str | None = None
    volumes: tuple[str, ...] = ()   # -v SRC:DST re-stating the archive's mounts on this host
    allow_bind_mounts: bool = False
    allow_privileges: bool = False  # re-grant what the archive's host config grants beyond ferry's defaults
    verify_key: str | None = None   # an Ed25519 public key (PEM) the archive must be signed with
    force: bool = False               # restore although this host differs from the checkpoint's (compat)
    tls_verify: bool = True           # for pulling a checkpoint image
    creds: str | None = None
    image_layer: str | None = None    # a checkpoint image's unpacked layer, read as its archive
    image_name: str | None = None     # that image, as the user named it
    import_stream: int | None = None  # a descriptor to read the archive from (a migration), instead of import_path
    keys: Opening | None = None       # import_stream is encrypted: these open it (the agent's)
    container_id: str | None = None   # keep this ID (a migration), which the archive must hold
    adopt_lease: bool = False         # take over the address another root's copy of this container holds
    lazy_from: LazySource | None = None   # a lazy migration: the pages come from the source's page server
    pages_in: PageReceiver | None = None  # a migration whose pages came apart from the archive, to this receiver
    checkpoint: str | None = None     # restore this checkpoint (`checkpoint ls`'s ID) rather than the latest
    decrypt_keys: tuple[str, ...] = ()   # age or SSH identity files for an encrypted archive
    decrypt_passphrase_file: str | None = None
    replace: bool = False             # the restored container takes the place of the stopped one of its ID


class CheckpointResult(NamedTuple):
    id: str
    name: str
    archive: str | None
    archive_size: int
    archive_streamed: int   # archive member bytes compressed while CRIU was still writing them
    seconds: float
    phases: dict
    criu: DumpStats | None
    kept_locally: bool = False   # a stream's checkpoint stays here too: only its reader knows if it restored
    image: str | None = None     # the checkpoint image's ID (--create-image)
    lazy: LazyDump | None = None  # a lazy checkpoint's page server, which serves until the last page is read

    def stats(self, raw_input: str | None = None) -> dict:
        """podman's --print-stats shape, plus ferry's own phases."""
        entry = {"Id": self.id, "RawInput": raw_input or self.name, "Name": self.name,
                 "runtime_checkpoint_duration": int(self.phases.get("runc_checkpoint", 0) * 1e6),
                 "criu_statistics": _criu_stats(self.criu), "ferry_phases": _micros(self.phases)}
        if self.archive:
            entry.update(archive=self.archive, archive_size=self.archive_size,
                         archive_streamed=self.archive_streamed)
        if self.image:
            entry.update(image=self.image)
        return {"podman_checkpoint_duration": int(self.seconds * 1e6), "container_statistics": [entry]}


class RestoreResult(NamedTuple):
    id: str
    name: str
    seconds: float
    phases: dict
    criu: dict
    authenticity: str = Authenticity.LOCAL
    granted_binds: tuple[VolumeSpec, ...] = ()   # host paths mounted because of --allow-bind-mounts
    lazy_daemon: subprocess.Popen | None = None   # a lazy restore's lazy-pages daemon, still fetching pages
    host_differences: tuple[str, ...] = ()   # what --force let pass (compat.Refusal texts)
    in_place: bool = False   # the container came back as itself, by its name and ID, from its own checkpoint

    def stats(self, raw_input: str | None = None) -> dict:
        return {"podman_restore_duration": int(self.seconds * 1e6),
                "container_statistics": [{
                    "Id": self.id, "RawInput": raw_input or self.name, "Name": self.name,
                    "authenticity": self.authenticity,
                    "runtime_restore_duration": int(self.phases.get("runc_restore", 0) * 1e6),
                    "criu_statistics": self.criu, "ferry_phases": _micros(self.phases)}]}


def refuse_while_pages_arrive(files: ContainerFiles, name: str) -> None:
    """A lazily migrated container's memory is partly still on its source:
    a dump now would need CRIU to read pages that are not here yet."""
    if not os.path.exists(files.lazy_pages_pid):
        return   # the usual case: no need to load the lazy migrations' code
    from ferry.checkpoint.lazy import pages_arriving
    if pages_arriving(files.lazy_pages_pid):
        raise Conflict(f"cannot checkpoint container {name!r}: its memory is still arriving from the host it "
                       f"migrated from", hint="try again once the last page has arrived (seconds per GiB)")


@contextlib.contextmanager
def _held_for_tool(directory: str):
    fd = journal.hold_for_tool(directory)
    try:
        yield fd
    finally:
        os.close(fd)   # runc keeps its copy, and the lock, until it ends


def _locks_refused(failure: ToolError, name: str) -> FerryError:
    """CRIU's refusal to dump a held file lock, said as what to do about it."""
    if FILE_LOCKS_REFUSED not in failure.message:
        return failure
    kept = f"; CRIU's log is kept at {failure.log_path}" if failure.log_path else ""
    return Conflict(f"cannot checkpoint container {name!r}: a process in it holds a file lock",
                    hint=f"checkpoint (or migrate) with --file-locks to take the locks along (a restore takes them again){kept}")


def _no_such(name: str) -> NotFound:
    return NotFound(f"no such container or image: {name}",
                    hint="see 'ferry ps -a' and 'ferry images'; a checkpoint image in a registry "
                         "is named with its registry (REGISTRY/NAME[:TAG])")


def _micros(phases: dict) -> dict:
    return {k: int(v * 1e6) for k, v in phases.items()}


def _criu_stats(stats: DumpStats | None) -> dict:
    if stats is None:
        return {}
    return {"freezing_time": stats.freezing_time_us, "frozen_time": stats.frozen_time_us,
            "memdump_time": stats.memdump_time_us, "memwrite_time": stats.memwrite_time_us,
            "pages_scanned": stats.pages_scanned, "pages_written": stats.pages_written}


class Checkpoints:
    def __init__(self, containers: Containers):
        self.containers = containers
        self.layout = containers.layout

    # ---- checkpoint ---------------------------------------------------------
    def checkpoint(self, name_or_id: str, options: CheckpointOptions,
                   progress: Progress = _no_progress) -> CheckpointResult:
        if options.every is not None or options.file_pattern:
            return self._checkpoint_periodic(name_or_id, options, progress)
        if options.create_image and (options.encrypt_to or options.encrypt_passphrase_file):
            raise UsageError("a checkpoint image cannot be encrypted: registries and other engines read its layer",
                             hint="export an encrypted archive with --export FILE instead")
        if options.create_image:
            return self._checkpoint_to_image(name_or_id, options, progress)
        if options.keep_last is not None and options.keep_last < 1:
            raise UsageError(f"--keep-last must be 1 or more, not {options.keep_last}")
        if options.encrypt_to or options.encrypt_passphrase_file:
            if not (options.export or options.leave_running or options.export_stream is not None):
                raise UsageError("only an archive can be encrypted, and a checkpoint in place is none",
                                 hint="add --export FILE, or --leave-running for a local checkpoint")
            options = options._replace(sealing=sealing_for(options.encrypt_to, options.encrypt_passphrase_file))
        if options.sign_key and not (options.export or options.export_stream is not None or options.leave_running):
            raise UsageError("--sign-key needs --export, --leave-running or --create-image: only an archive "
                             "carries a signature")
        signer = load_private_key(options.sign_key) if options.sign_key else None
        container = self.containers.get(name_or_id)
        if container.config.rm and not (options.export or options.export_stream is not None):
            # Its exit would remove it, and its local checkpoint with it (podman refuses too).
            raise Conflict(f"cannot checkpoint container {container.name!r} locally: it was started with --rm",
                           hint="export it with --export FILE, which removes it, as podman does")
        if options.export_stream is not None:
            target = Endpoint(options.export_stream, "the migration stream")
            return self._checkpoint_locked(container, options._replace(keep=True), target,
                                           _compression_of(target, options.compress), signer, progress)
        if not options.export and options.leave_running:
            return self._checkpoint_stored(container, options, signer, progress)
        if not options.export:
            result = self._checkpoint_locked(container, options, None, None, signer, progress)
            self._keep_last(container, options.keep_last)
            return result
        # A FIFO's open waits for its reader: before the lock, not under it.
        with export_endpoint(options.export) as target:
            compression = _compression_of(target, options.compress)
            if target.stream and not options.leave_running:
                # Whether the reader at the far end restored it, this end never
                # learns: the container's state stays here until it is removed.
                options = options._replace(keep=True)
            result = self._checkpoint_locked(container, options, target, compression, signer, progress)
            if not target.stream and not options.unlisted:
                self.store.record(_entry(ids.new_id(), container, os.path.abspath(options.export), ARCHIVE,
                                         options, signer))
        if container.config.rm and not (options.leave_running or options.keep or result.kept_locally):
            # --rm: the container ends with its export, and goes, as podman removes it.
            self.containers.remove(container.id)
        self._keep_last(container, options.keep_last)
        return result

    @property
    def store(self):
        return self.containers.checkpoint_store

    # ---- what --all and --latest choose, as podman's do ------------------------
    def checkpointable(self) -> list[Container]:
        """`checkpoint --all`: the running containers, oldest first."""
        return [c for c in self.containers.list() if c.state == RUNNING and not self.containers.paused(c.id)]

    def restorable(self) -> list[Container]:
        """`restore --all`: each stopped container that has a local checkpoint
        (podman tries every exited one, and fails on those it never checkpointed)."""
        return [c for c in self.containers.list(all_states=True)
                if c.state == EXITED and self.has_local_checkpoint(c)]

    def has_local_checkpoint(self, container: Container) -> bool:
        images = self.containers.files(container.id).checkpoint_images
        return bool(container.checkpointed_at or os.path.exists(os.path.join(images, "inventory.img"))
                    or self.store.stored_of(container.id))

    def latest(self) -> Container:
        """--latest: the container created last, whatever its state."""
        created = self.containers.list(all_states=True)
        if not created:
            raise NotFound("no such container", hint="see 'ferry ps -a'")
        return created[-1]

    def check_names(self, names: list[str]) -> None:
        """Every name is a container, before any is checkpointed (podman's order)."""
        for name in names:
            self.containers.get(name, refresh=False)

    def check_restore_names(self, names: list[str]) -> None:
        """Every name is something restore() takes, before any is restored
        (podman's order): a container, a gone one's stored checkpoint, or an
        image here or named with its registry (pulled later, not now)."""
        from ferry.engine import checkpoint_images
        for name in names:
            if self._is_container(name) or self.store.stored_named(name):
                continue
            if checkpoint_images.find(self.containers.images, name, pull=lambda *_, **__: True) is None:
                raise _no_such(name)

    def _checkpoint_periodic(self, name_or_id: str, options: CheckpointOptions,
                             progress: Progress) -> CheckpointResult:
        """--every: a --leave-running checkpoint now, then one each interval, run by
        the container's monitor (runtime.schedule) with the same options.
        --file-pattern: each one is an archive there, else a stored local one."""
        from ferry.runtime import schedule
        if options.export or options.export_stream is not None or options.create_image:
            raise UsageError("--every and --file-pattern take no --export or --create-image",
                             hint="--file-pattern names each checkpoint's archive")
        every = options.every
        if every is not None and not schedule.MIN_EVERY <= every <= schedule.MAX_EVERY:
            raise UsageError(f"--every must be from {schedule.MIN_EVERY:g} s to {schedule.MAX_EVERY / 86400:g} days")
        pattern = check_pattern(options.file_pattern) if options.file_pattern else None
        container = self.containers.get(name_or_id)
        export = fill_pattern(pattern, container.id, container.name) if pattern else None
        result = self.checkpoint(container.id, options._replace(every=None, file_pattern=None, export=export,
                                                                leave_running=True), progress)
        if every is not None:
            argv = [sys.executable, "-m", "ferry", "--root", self.layout.root, "container", "checkpoint",
                    container.id, "--leave-running"]
            for flag, value in (("--file-pattern", pattern), ("--keep-last", options.keep_last),
                                ("--compress", options.compress),
                                ("--sign-key", options.sign_key and os.path.abspath(options.sign_key))):
                argv += [flag, str(value)] if value else []
            argv += sealing_argv(options.encrypt_to, options.encrypt_passphrase_file)
            for flag, given in (("--tcp-established", options.tcp_established),
                                ("--file-locks", options.file_locks),
                                ("--ignore-rootfs", options.ignore_rootfs),
                                ("--ignore-volumes", options.ignore_volumes)):
                argv += [flag] if given else []
            schedule.write(self.layout.checkpoint_schedule(container.id), schedule.Schedule(every, tuple(argv)))
        return result

    def unschedule(self, name_or_id: str) -> bool:
        """Stop a container's periodic checkpoints; whether it had them."""
        from ferry.runtime import schedule
        container = self.containers.get(name_or_id)
        return schedule.clear(self.layout.checkpoint_schedule(container.id))

    def _checkpoint_stored(self, container: Container, options: CheckpointOptions, signer,
                           progress: Progress) -> CheckpointResult:
        """A local --leave-running checkpoint: a whole archive in this root, with the
        root filesystem and volumes its memory saw, so that any of several can be
        restored after the container wrote on (podman keeps one set of CRIU images,
        which a later write to an open file makes unrestorable)."""
        checkpoint_id, path = self.store.new_local(container.id)
        options = options._replace(export=path)
        # Recorded first: the record is listed once the archive appears whole (a
        # rename), so a command killed at any instant leaves a complete listed
        # checkpoint or a record of nothing (swept), never an unlisted file.
        self.store.record(_entry(checkpoint_id, container, path, LOCAL, options, signer))
        try:
            with export_endpoint(path) as target:
                result = self._checkpoint_locked(container, options, target, "zstd", signer, progress)
        except BaseException:
            if not os.path.exists(path):
                self.store.forget_id(checkpoint_id)
            raise
        self._keep_last(container, options.keep_last)
        return result

    def _keep_last(self, container: Container, keep_last: int | None) -> None:
        if keep_last is not None:
            self.prune(keep_last, [container.id])

    # ---- the checkpoints kept: `checkpoint ls / rm / prune` ----------------------------
    def remove_checkpoint(self, ref: str) -> CheckpointEntry:
        entry = self.store.find(ref)
        self._drop(entry)
        return entry

    def prune(self, keep_last: int, containers: list[str] | None = None) -> list[CheckpointEntry]:
        """All but the newest `keep_last` checkpoints of each container (of those
        named: names or IDs, of containers that may be gone), removed."""
        if keep_last < 1:
            raise UsageError(f"--keep-last must be 1 or more, not {keep_last}")
        entries = self.store.entries()
        if containers is not None:
            for ref in containers:
                if not any(self.store.of_container(e, ref) for e in entries) and not self._is_container(ref):
                    raise NotFound(f"no such container {ref!r}", hint="see 'ferry checkpoint ls'")
            entries = [e for e in entries if any(self.store.of_container(e, ref) for ref in containers)]
        _, dropped = to_keep(entries, keep_last)
        for entry in dropped:
            self._drop(entry)
        return dropped

    def _drop(self, entry: CheckpointEntry) -> None:
        if entry.in_place:
            self._drop_local_checkpoint(self.containers.get(entry.container_id, refresh=False))
        else:
            remove_file(entry.path)
            self.store.forget(entry)

    def _checkpoint_to_image(self, name_or_id: str, options: CheckpointOptions,
                             progress: Progress) -> CheckpointResult:
        """--create-image: an exported archive (the user's --export file, or a
        plain tar in the container's dir) becomes the image's one layer. The
        checkpoint stays here until the image is recorded, so that a failure
        at any step leaves the container restorable with one command."""
        from ferry.engine import checkpoint_images
        from ferry.image import reference
        reference.parse_local(options.create_image)   # a bad name fails before anything is done
        if options.export_stream is not None or (options.export and is_stream(options.export)):
            raise UsageError("--create-image cannot take its layer from a stream",
                             hint="give --export a file, or leave --export out")
        container = self.containers.get(name_or_id)
        own_file = not options.export
        path = options.export or os.path.join(self.containers.dir(container.id), IMAGE_ARCHIVE)
        result = self.checkpoint(container.id, options._replace(create_image=None, export=path, keep=True,
                                                       compress="none" if own_file else options.compress,
                                                       unlisted=own_file), progress)
        try:
            head = archive.read_manifest(path)
            image = self.containers.images.commit_checkpoint(path, options.create_image,
                                                             checkpoint_images.annotations_for(head))
            phases.reached("checkpoint:imaged")
        except BaseException as failure:
            if isinstance(failure, FerryError) and not options.leave_running:
                failure.hint = (f"the checkpoint is kept here: 'ferry container restore {container.name}' "
                                "brings the container back")
            raise
        finally:
            if own_file:
                remove_file(path)
        if not options.keep and not options.leave_running:
            self._drop_local_checkpoint(container)
            if container.config.rm:
                self.containers.remove(container.id)
        return result._replace(archive=options.export, kept_locally=bool(options.keep and not options.leave_running),
                       image=image.id)

    def _drop_local_checkpoint(self, container: Container) -> None:
        """What an export without --keep does once its archive is whole."""
        with self.containers.locked(container, "container checkpoint"):
            current = self.containers.get(container.id)
            if current.state == RUNNING or not current.checkpointed_at:
                return   # restored meanwhile: its images are in use
            self.containers.set_checkpointed(container.id, None)   # first, as in an export's
            phases.reached("checkpoint:released")
            remove_tree_later(ContainerFiles(self.containers.dir(container.id)).checkpoint_images)

    def _checkpoint_locked(self, container: Container, options: CheckpointOptions, target: Endpoint | None,
                           compression: str | None, signer, progress: Progress) -> CheckpointResult:
        with self.containers.locked(container, "container checkpoint"):
            container = self.containers.get(container.id)
            if container.state != RUNNING:
                raise Conflict(f"cannot checkpoint container {container.name!r}: it is {container.state}",
                               hint="only running containers can be checkpointed")
            if self.containers.paused(container.id):   # podman's words and refusal
                raise Conflict('"paused" is not running, cannot checkpoint: container state improper',
                               hint=f"unpause it first: 'ferry unpause {container.name}'")
            refuse_while_pages_arrive(self.containers.files(container.id), container.name)
            directory = self.containers.dir(container.id)
            # A pushed dump's container outlives it, frozen: only the
            # migration's word decides whether it resumes (recovery asks).
            entry = journal.begin(directory, journal.MIGRATE if options.push else journal.CHECKPOINT,
                                  leave_running=options.leave_running, export=options.export,
                                  migration=options.migration)
            try:
                result = self._checkpoint_journaled(container, options, target, compression, signer, entry,
                                                    progress)
            except BaseException as failure:
                # What the dump left is this command's to settle, as recovery
                # would after a crash: the container runs, or its checkpoint stays.
                journal.finish(directory)
                kept = self.settle_failed_checkpoint(container)
                if kept and isinstance(failure, FerryError):
                    failure.hint = kept
                raise
            if not options.push:
                journal.finish(directory)
            return result

    def _checkpoint_journaled(self, container: Container, options: CheckpointOptions, target: Endpoint | None,
                              compression: str | None, signer, entry: journal.Entry,
                              progress: Progress) -> CheckpointResult:
        started, timer = time.monotonic(), Timer()
        directory = self.containers.dir(container.id)
        files = ContainerFiles(directory)
        images, work = files.checkpoint_images, files.checkpoint_work
        for path in (images, work):
            remove_tree(path)
            os.makedirs(path, mode=0o700)
        memory = self.containers.runc.memory_in_use(container.id)
        # A -R dump's page writes are the container's freeze, and on this kernel
        # (6.18) they are faster into ext4's page cache than into a tmpfs: at
        # redis 2 GiB, alternating, memwrite 0.69-0.79 s on ext4 against 1.62-2.82 s
        # on the tmpfs with huge pages and 1.00-3.99 s without (bench/analysis.md).
        frozen_by_writes = options.leave_running and options.export_stream is None
        if ((options.export and not options.keep) or options.export_stream is not None) and not options.push \
                and not frozen_by_writes:
            # Images that only pass through on their way into the archive, or
            # that a migration keeps only until the destination runs them.
            tmpfs_if_it_fits(images, memory)
        ensure_pipe_max_size()  # CRIU's page pipes must be able to grow (HOST-NOTES)
        marker = files.checkpointing
        atomic_write(marker, "")
        writer = None
        hold_files = options.leave_running and target is not None and not (options.ignore_rootfs and
                                                                            options.ignore_volumes)
        frozen = False
        lazy = None
        cleaner = None   # an ended container's cleanup, beside its export

        def let_run() -> None:
            nonlocal frozen
            if frozen:
                timer.phases["frozen_for_files"] = time.monotonic() - frozen_since[0]
                self.containers.runc.thaw(container.id)
                frozen = False
        frozen_since = [time.monotonic()]
        try:
            if target:
                from ferry.checkpoint.archive.follow import FOLLOW_MIN   # loaded with the writer
                # A container smaller than the follower's first stretch cannot
                # give it one: no watch then (inotify, a thread, ~20 ms to close).
                # Nor for -R: beside CRIU, compression would lengthen the freeze
                # on two cores; the pages wait on the tmpfs until it is over.
                # A stream's head, written first, would have to bound pages that
                # do not exist yet: it waits for the dump and states their exact
                # total. (Bounding them from the offer was tried for migrations:
                # on this 2-core machine the gap at 1 GiB did not shrink, CPU-bound.)
                follows = not target.stream and not options.leave_running and (memory is None or
                                                                                 memory >= FOLLOW_MIN)
                # Encrypted, a followed archive grows in plain here until its
                # head is filled in; else age encrypts it as it is written.
                writer = archive.ArchiveWriter(target.target, compression=compression,
                                               container=_archive_identity(container), signer=signer,
                                               sealing=options.sealing,
                                               plain=os.path.join(work, SEALING_PLAIN) if follows else None)
                entry = journal.update(directory, entry, archive_temp=writer.temp_path)
                if follows:   # compress while CRIU writes
                    writer.follow(images, IMAGES, _is_pages_image)
            phases.reached("checkpoint:begun")
            # A dump that has begun is not undone halfway: a signal waits
            # until it is over and recorded.
            with signals.deferred():
                progress("dump", 0, 1)
                if options.push:
                    # Cut off first: no peer may reach the sockets this dump
                    # copies, or the copy would lack what this one acknowledged;
                    # and its host ports are the copy's to publish.
                    self.containers.networks.disconnect(container.id)
                    self.containers.networks.unpublish(container.id)
                freeze_config = None
                if options.push or (hold_files and options.lazy):
                    # CRIU leaves a frozen cgroup frozen: the migration decides.
                    frozen, frozen_since[0] = self.containers.runc.freeze(container.id), time.monotonic()
                elif hold_files:
                    # Its files must be the ones the dump saw: CRIU checks open
                    # files' sizes, and a -R container would go on writing them
                    # while they are archived. CRIU's pre-dump hook freezes it,
                    # and CRIU leaves it frozen until they are staged.
                    freeze_config = self.containers.runc.freeze_at_dump(container.id, work)
                    frozen = True   # from the hook on; let_run() thaws it on every way out
                with timer.phase("runc_checkpoint"), _held_for_tool(directory) as tool_lock:
                    if options.lazy:
                        lazy = self.containers.runc.checkpoint_lazy(
                            container.id, images=images, work=work, tcp_established=options.tcp_established,
                            file_locks=options.file_locks, port=options.lazy.port, tls_config=options.lazy.tls_config,
                            hold_fd=tool_lock)
                    else:
                        push = options.push
                        try:
                            self.containers.runc.checkpoint(
                                container.id, images=images, work=work,
                                leave_running=options.leave_running or bool(push),
                                tcp_established=options.tcp_established, file_locks=options.file_locks,
                                hold_fd=tool_lock, page_server=f"{push.address}:{push.port}" if push else None,
                                criu_config=push.tls_config if push else freeze_config)
                        except ToolError as failure:
                            raise _locks_refused(failure, container.name) from None
                        if freeze_config:
                            frozen_since[0] = runc_frozen_since(work) or frozen_since[0]
                if options.push:
                    frozen = False   # and stays so: the migration thaws it or removes it
                progress("dump", 1, 1)
                phases.reached("checkpoint:dumped")
                # A lazy dump's tasks stay frozen, their memory here, until the
                # destination has it, and a pushed one's until the migration
                # decides: the container ends with the dump only otherwise.
                ended = not (options.leave_running or lazy or options.push)
                if ended:
                    # The checkpoint is recorded before anything of the archive can
                    # fail: the container is gone, and its images must stay
                    # restorable. Once the monitor has the exit, the log is complete.
                    with timer.phase("exit"):
                        self.containers.wait_exit_recorded(container)
                    if not writer or options.keep:
                        with timer.phase("sync"):
                            fsync_tree(images)   # a local checkpoint outlives a power cut
                    self.containers.set_checkpointed(container.id, utc_now())
                    journal.update(directory, entry, phase="dumped")
                phases.reached("checkpoint:recorded")
                if ended and writer:
                    # Gone and recorded: its cleanup (runc's state, the veth and
                    # netns, the root mount; mostly waits on tools and the
                    # kernel) runs while the archive is written, not after.
                    from concurrent.futures import ThreadPoolExecutor
                    cleaner = ThreadPoolExecutor(1, thread_name_prefix="ferry-cleanup")
                    cleaned = cleaner.submit(self._clean_ended, container)
            # runc has CRIU write stats to its work dir, at the end of the dump:
            # a lazy one ends with its last page served.
            criu_stats = None if lazy else read_dump_stats(work)
            written = None
            if writer:
                written = self._export(writer, container, options, timer, progress, files_taken=let_run)
                phases.reached("checkpoint:exported")
            if ended:
                with timer.phase("stop"):   # the monitor leaves the cleanup to this command
                    if cleaner:
                        cleaned.result()
                    else:
                        self._clean_ended(container)
            if options.export and not options.keep:
                # The record first: killed in between, the images are only
                # extra, never a checkpoint that the record promises and lacks.
                if not options.leave_running:
                    self.containers.set_checkpointed(container.id, None)
                phases.reached("checkpoint:released")
                remove_tree_later(images)   # its memory, with -R too
        except BaseException:
            if writer:
                writer.abort()
            if lazy:
                lazy.abort()   # CRIU thaws the tasks: the container runs on here
            raise
        finally:
            if cleaner:
                cleaner.shutdown(wait=True)   # it holds the container's lock with this command
            let_run()   # a failure, too, leaves the container running
            remove_file(marker)
        from ferry.engine import events
        events.note(self.layout, container, "checkpoint")
        return CheckpointResult(container.id, container.name, options.export,
                                written.size if written else 0, written.streamed if written else 0,
                                time.monotonic() - started, timer.phases, criu_stats,
                                kept_locally=bool(options.export and options.keep and not options.leave_running
                                                  and not lazy), lazy=lazy)

    def _clean_ended(self, container: Container) -> None:
        """What a checkpoint that ended the container releases (the monitor
        leaves it to the checkpointing command)."""
        self.containers.wait_monitor(container)
        self.containers.cleanup(container.id)

    def settle_failed_checkpoint(self, container: Container) -> str | None:
        """After a failure or an interruption: the container runs on (the dump
        failed, or -R), or it is gone and its complete dump is its local
        checkpoint, kept on disk where it fits. What to tell the user of a kept
        checkpoint, or None."""
        files = self.containers.files(container.id)
        images = files.checkpoint_images
        remove_file(files.checkpointing)
        if self.containers.live_process(container):
            recovery.thaw(self.containers, container.id)
            recovery.drop_network_lock(self.containers, container.id)
            self._reconnect(container)
            remove_tree(images)
            return None
        current = self.containers.get(container.id, refresh=False)
        kept = None
        if recovery.dump_completed(images, files.checkpoint_work):
            if not current.checkpointed_at:
                self.containers.set_checkpointed(container.id, utc_now())
            kept = f"the checkpoint is kept: 'ferry container restore {container.name}' brings the container back here"
            if not keep_on_disk(images):
                kept += " (it is kept in memory, and will not outlive a reboot)"
        # The monitor saw the marker and left the cleanup to this command.
        self.containers.wait_monitor(container)
        with contextlib.suppress(FerryError):
            self.containers.cleanup(container.id)
        return kept

    def _reconnect(self, container: Container) -> None:
        """Undo a pushed dump's cut (idempotent): the wire, and the host ports."""
        networks = self.containers.networks
        with contextlib.suppress(FerryError):
            networks.connect(container.id)
        if container.config.ports:
            try:
                networks.publish(container.id, list(container.config.ports))
            except FerryError as exc:
                log.warning("container %s runs again, but its ports are not published: %s", container.name, exc)

    def _export(self, writer: ArchiveWriter, container: Container, options: CheckpointOptions,
                timer: Timer, progress: Progress, files_taken: Callable[[], None] = lambda: None) -> WriteResult:
        """files_taken() is called once the root filesystem and volumes are
        staged: a -R container, frozen since its dump, may run on then."""
        directory = self.containers.dir(container.id)
        staged: list[str] = []   # members made only for the archive, removed afterwards
        try:
            with timer.phase("config"):
                names = self._write_config_members(container, directory, staged)
            if not options.ignore_rootfs:
                with timer.phase("rootfs_diff"):
                    names += self._write_rootfs_diff(container, directory, staged)
            if not options.ignore_volumes:
                with timer.phase("volumes"):
                    names += self._write_volumes(container, directory, staged)
            if container.config.profile.shm_dir:   # a bind, so CRIU leaves its files to us, as podman does
                write_tree_diff(ContainerFiles(directory).shm, os.path.join(directory, DEVSHM))
                staged.append(os.path.join(directory, DEVSHM))
                names.append(DEVSHM)
            files_taken()
            with timer.phase("archive_follow"):   # the pages, after the -R container runs again
                writer.stop_following(complete=True)
            images = os.path.join(directory, IMAGES)
            names += sorted(os.path.join(IMAGES, n) for n in os.listdir(images)
                            if stat.S_ISREG(os.lstat(os.path.join(images, n)).st_mode))
            paths = {}
            log_file = ContainerFiles(directory).log
            if os.path.exists(log_file):
                names.append(LOG)
                if options.leave_running:   # the monitor goes on writing it: archive it as it is now
                    paths[LOG] = os.path.join(directory, f".{LOG}.archived")
                    shutil.copyfile(log_file, paths[LOG])
                    staged.append(paths[LOG])
            with timer.phase("archive_write"):
                return writer.commit(directory, names, progress=progress, paths=paths)
        finally:
            for path in staged:
                with contextlib.suppress(FileNotFoundError):
                    if os.path.isdir(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)

    def _write_config_members(self, container: Container, directory: str, staged: list[str]) -> list[str]:
        """ferry's record of the container, and config.dump and spec.dump as
        podman reads them, so that `podman container restore --import` takes
        the archive. No network.status: podman would ask its network for
        ferry's address, which is never in its subnet; without one it gives a
        new address, as ferry does across subnets."""
        config = container.config
        archived = ArchivedContainer(container.id, container.name, container.image_id, container.created_at, config)
        files = ContainerFiles(directory)
        with open(files.spec) as f:
            spec = json.load(f)
        named = [(v.source, v.destination) for v in config.named_volumes]
        spec_dump = podman_shape.podman_spec_dump(spec, volumes=named, rlimits=podman_shape.PODMAN_RLIMITS)
        members = {
            FERRY_CONFIG: archived.to_json(),
            CONFIG_DUMP: podman_shape.podman_config_dump(
                container_id=container.id, name=container.name, image_id=container.image_id,
                image_name=config.image, created=container.created_at, spec=json.loads(spec_dump),
                ports=[(p.host_ip, p.host_port, p.container_port, p.protocol) for p in config.ports if p.host_port],
                volumes=named, command=config.command or config.args, user=config.user,
                stop_signal=config.stop_signal, host_network=config.host_network),
            SPEC_DUMP: spec_dump,
        }
        stats = os.path.join(files.checkpoint_work, "stats-dump")
        if os.path.exists(stats):
            with open(stats, "rb") as f:
                members[STATS_DUMP] = f.read()
        for name, data in members.items():
            staged.append(os.path.join(directory, name))
            write_scratch(os.path.join(directory, name), data)
        return list(members)

    def _write_rootfs_diff(self, container: Container, directory: str, staged: list[str]) -> list[str]:
        """The upper dir as podman splits it: changed files in a tar, deletions in a list."""
        upper = ContainerFiles(directory).upper
        tar_path, deleted_path = os.path.join(directory, ROOTFS_DIFF), os.path.join(directory, DELETED_FILES)
        staged += [tar_path, deleted_path]
        layers = self.containers.images.layer_paths(self.containers.images.get(container.image_id))
        deleted = write_tree_diff(upper, tar_path, hidden_below=functools.partial(image_names_below, layers))
        write_scratch(deleted_path, json.dumps(deleted))
        return [ROOTFS_DIFF, DELETED_FILES]

    def _write_volumes(self, container: Container, directory: str, staged: list[str]) -> list[str]:
        names = []
        volume_dir = os.path.join(directory, VOLUMES)
        for volume in container.config.named_volumes:   # host directories stay with the host, as in podman
            os.makedirs(volume_dir, mode=0o700, exist_ok=True)
            if volume_dir not in staged:
                staged.append(volume_dir)
            path = os.path.join(volume_dir, f"{volume.source}.tar")
            write_tree_diff(self.containers.volumes.data_dir(volume.source), path)
            names.append(f"{VOLUMES}/{volume.source}.tar")
        return names

    # ---- restore -------------------------------------------------------------
    def restore(self, name_or_id: str | None, options: RestoreOptions,
                progress: Progress = _no_progress) -> RestoreResult:
        if options.checkpoint:
            return self._restore_chosen(name_or_id, options, progress)
        if options.import_path or options.import_stream is not None or options.image_layer:
            return self._restore_import(options, progress)
        if not name_or_id:
            raise UsageError("restore needs a container name, or --import FILE")
        if not self._is_container(name_or_id):
            # A container that a failed restore of its stored checkpoint left gone.
            stored = self.store.stored_named(name_or_id)
            if stored:
                return self._restore_entry(stored[0], options, progress)
            # podman's order: a container of that name first, then a checkpoint image.
            from ferry.engine import checkpoint_images
            images = self.containers.images
            image = checkpoint_images.find(images, name_or_id, tls_verify=options.tls_verify, creds=options.creds)
            if image is None:
                raise _no_such(name_or_id)
            layer = checkpoint_images.checkpoint_layer(images, image, name_or_id)
            return self._restore_import(options._replace(image_layer=layer, image_name=name_or_id), progress)
        for flag, given in (("--name", options.name), ("-v", options.volumes),
                            ("--allow-bind-mounts", options.allow_bind_mounts),
                            ("--allow-privileges", options.allow_privileges),
                            ("--verify-key", options.verify_key)):
            if given:
                raise UsageError(f"{flag} can only be used with a checkpoint image or --import: an in-place "
                                 "restore keeps the container as it was")
        return self._restore_in_place(name_or_id, options, progress)

    def _is_container(self, name_or_id: str) -> bool:
        try:
            self.containers.get(name_or_id)
        except NotFound:
            return False
        return True

    def _restore_chosen(self, name_or_id: str | None, options: RestoreOptions, progress: Progress) -> RestoreResult:
        """--checkpoint ID: that checkpoint, of the container named (if one is)."""
        if options.import_path or options.import_stream is not None:
            raise UsageError("give either --checkpoint ID or --import FILE, not both")
        entry = self.store.find(options.checkpoint)
        if name_or_id is not None and not self.store.of_container(entry, name_or_id):
            raise UsageError(f"checkpoint {entry.id[:12]} is not one of container {name_or_id!r}'s",
                             hint=f"it is {entry.container_name!r}'s; see 'ferry checkpoint ls'")
        return self._restore_entry(entry, options._replace(checkpoint=None), progress)

    def _restore_entry(self, entry: CheckpointEntry, options: RestoreOptions, progress: Progress) -> RestoreResult:
        """A listed checkpoint: in place, or from its archive. Without --name, the
        container comes back as itself, ID and name, in place of its stopped self;
        with --name, as a new container beside it."""
        if entry.in_place:
            if options.name:
                raise UsageError(f"checkpoint {entry.id[:12]} is container {entry.container_name!r} itself, "
                                 "stopped by its checkpoint: it restores in place only",
                                 hint=f"'ferry container restore {entry.container_name}'")
            return self._restore_in_place(entry.container_id, options)
        if not os.path.isfile(entry.path):
            raise NotFound(f"checkpoint {entry.id[:12]} is gone: {entry.path} no longer exists",
                           hint="see 'ferry checkpoint ls'")
        own = entry.kind == LOCAL
        if own:
            # This root's own archive, of a container whose mounts and privileges `run` granted.
            options = options._replace(allow_bind_mounts=True, allow_privileges=True)
        if options.name:
            options = options._replace(import_path=entry.path)
        else:
            options = options._replace(import_path=entry.path, container_id=entry.container_id,
                                       name=self._current_name(entry), replace=True)
        result = self._restore_import(options, progress)
        if own and result.authenticity == Authenticity.UNVERIFIED:
            result = result._replace(authenticity=Authenticity.LOCAL, granted_binds=())
        return result._replace(in_place=options.replace)

    def _current_name(self, entry: CheckpointEntry) -> str:
        try:
            return self.containers.get(entry.container_id, refresh=False).name
        except NotFound:
            return entry.container_name

    def _restore_in_place(self, name_or_id: str, options: RestoreOptions,
                          progress: Progress = _no_progress) -> RestoreResult:
        started, timer = time.monotonic(), Timer()
        container = self.containers.get(name_or_id)
        with self.containers.locked(container, "container restore"):
            container = self.containers.get(container.id)
            directory = self.containers.dir(container.id)
            files = ContainerFiles(directory)
            images = files.checkpoint_images
            if container.state == RUNNING:
                raise Conflict(f"container {container.name!r} is running", hint="checkpoint it first")
            stored = self.store.stored_of(container.id)
            if stored and not (container.checkpointed_at and container.checkpointed_at > stored[0].created_at):
                return self._restore_entry(stored[0], options, progress)   # the latest; the lock is re-entrant
            dumped = os.path.exists(os.path.join(images, "inventory.img"))
            # Without a record, images are those of a -R checkpoint that an older
            # ferry kept in place, before the container stopped (podman's way).
            if not container.checkpointed_at and not dumped:
                raise NotFound(f"container {container.name!r} has no local checkpoint",
                               hint="checkpoint it without --export, or restore with --import FILE")
            if not dumped:
                raise NotFound(f"the local checkpoint of container {container.name!r} is gone: it was kept in "
                               "memory, and the host has restarted since", hint="restore it from an archive")
            work = files.checkpoint_work
            remove_tree(work)
            os.makedirs(work, mode=0o700)
            remove_file(os.path.join(directory, IMAGE_ARCHIVE))   # a --create-image that died before its image
            journal.begin(directory, journal.RESTORE)
            try:
                phases.reached("restore:begun")
                # Once CRIU restores, the container runs or the checkpoint stays: a signal waits.
                with signals.deferred():
                    with timer.phase("runc_restore"):
                        self.containers.start(container.id, restore=RestoreFrom(
                            images, work, options.tcp_established, file_locks=file_locks_in(images)))
                    criu = _restore_stats(images, work)
                    self.containers.set_checkpointed(container.id, None)
                    if not options.keep:   # podman's way; with --keep it restores again once stopped
                        remove_tree_later(images)
            finally:
                journal.finish(directory)
        return RestoreResult(container.id, container.name, time.monotonic() - started, timer.phases, criu,
                             Authenticity.LOCAL, in_place=True)

    def _restore_import(self, options: RestoreOptions, progress: Progress) -> RestoreResult:
        """Everything the archive says is checked before anything is made; what
        it proposes about this host (bind mounts) needs the user's grant."""
        name = ids.check_name(options.name) if options.name is not None else None
        restated = tuple(self.containers.check_volume(v) for v in options.volumes)
        verify_key = load_public_key(options.verify_key) if options.verify_key else None
        self.sweep_stale_imports()
        container_id = options.container_id or ids.new_id()
        # The container's lock from the start: the staging dir, named after it,
        # is in use while it is held (sweep_stale_imports).
        try:
            with _import_source(options) as source, \
                    self.containers.lock_id(container_id, name or source.name, "container restore"):
                return self._restore_import_locked(container_id, name, restated, verify_key, source, options,
                                                   progress)
        finally:
            # The lock only guarded the staging dir when the restore failed,
            # or kept the archive's ID instead.
            if self._id_is_free(container_id):
                with contextlib.suppress(OSError):
                    os.unlink(self.layout.lock(f"container-{container_id}"))

    def _restore_import_locked(self, container_id: str, name: str | None, restated: tuple[VolumeSpec, ...],
                               verify_key, source: Endpoint, options: RestoreOptions,
                               progress: Progress) -> RestoreResult:
        started, timer = time.monotonic(), Timer()
        scratch = os.path.join(self.layout.tmp, f"{IMPORT_PREFIX}{container_id}")
        staging = os.path.join(scratch, "archive")
        undo = Undo()
        warm = None
        held = contextlib.ExitStack()
        differences: tuple[str, ...] = ()

        def keep_archive_id(archived_id: str, archived_name: str) -> None:
            """Without --name the container keeps its ID, as podman's does:
            scripts (and `exec ID`) name it by that."""
            nonlocal container_id
            if name is None and not options.container_id and self._id_is_free(archived_id):
                held.enter_context(self.containers.lock_id(archived_id, archived_name, "container restore"))
                container_id = archived_id
        try:
            with timer.phase("archive_read"), archive.ArchiveReader(source.target) as reader:
                head = reader.head()
                foreign_archive = isinstance(head, archive.ForeignHead)
                if not foreign_archive and options.import_stream is None:
                    # A migration's destination checked this in its preflight.
                    differences = self._host_differences(head, options.force)
                if not foreign_archive:   # its records must name the head's container (read_members)
                    keep_archive_id(head.container["id"], head.container["name"])
                # Its interpreter starts while the archive arrives, not after.
                warm = launch.WarmMonitor(self.containers.dir(container_id))
                from ferry.checkpoint import imagecheck
                imagecheck.preload()
                # Under this ID's lock, one left here is a killed restore's (the
                # sweep skips it: the lock is this command's, for a restore in place).
                remove_tree(scratch)
                os.makedirs(scratch, 0o700)
                budget = None
                if foreign_archive:
                    if options.import_stream is not None:
                        raise BadArchive("the migration stream is not a ferry archive", hint=HINT_FORGED)
                    budget = self._room_for_foreign(scratch)
                else:
                    self._stage(scratch, source.name, head.size_bound)
                contents = reader.extract(staging, progress=progress, verify_key=verify_key, budget=budget)
            phases.reached("restore:staged")
            if foreign_archive:
                from ferry.engine import foreign   # pydantic's records, only for another engine's archive
                found, spec, deleted = foreign.read_records(staging, contents, IMAGE_NAME_RE.match)
                image = foreign.find_image(self.containers.images, found, options.image_archive)
                saved = foreign.archived_container(found, spec, image, self.containers.networks.default().name)
                keep_archive_id(saved.id, saved.name)   # known only now: the monitor started for another
                if container_id == saved.id:
                    warm.close()
                    warm = launch.WarmMonitor(self.containers.dir(container_id))
            else:
                saved, deleted = read_members(staging, contents)
                if options.container_id and saved.id != options.container_id:
                    raise BadArchive(f"the archive holds container {saved.id[:12]}, not "
                                     f"{options.container_id[:12]}", hint=HINT_FORGED)
                image = self._image_for(head.container, options)
            own_volumes = self._own_volumes(saved.config, options, restated)
            # An anonymous volume of another container here (the one checkpointed,
            # restored beside it under a new name) is not shared: this one gets its own.
            archived_config, renamed = fresh_anonymous(saved.config, own_volumes, restated,
                                                       self.containers.volumes.exists)
            config, granted = self._config_for_target(archived_config, options, restated, own_volumes)
            self._check_disk_for_files(staging, options)
            if options.replace:
                # Checked whole: only now does the stopped container give up its place.
                with contextlib.suppress(NotFound):
                    self.containers.discard(container_id)
            fresh = [v.source for v in config.named_volumes if not self.containers.volumes.exists(v.source)]
            set_aside: list[str] = []
            container = self._insert_restored(name or saved.name, image, config, options, undo, container_id,
                                              scratch, kept_id=container_id == saved.id)
            directory = self.containers.dir(container.id)
            files = ContainerFiles(directory)
            phases.reached("restore:created")
            with timer.phase("files"):
                if os.path.exists(os.path.join(staging, LOG)):
                    shutil.move(os.path.join(staging, LOG), files.log)
                # CRIU wants the root it dumped, mode and all.
                from ferry.checkpoint.imagecheck import root_mode   # pycriu's protobufs load here only
                mode = root_mode(os.path.join(staging, IMAGES))
                rootfs.make_upper(files.upper, rootfs.ROOT_MODE if mode is None else mode)
                if not options.ignore_rootfs and os.path.exists(os.path.join(staging, ROOTFS_DIFF)):
                    apply_tree_diff(os.path.join(staging, ROOTFS_DIFF), files.upper, deleted)
                if not options.ignore_volumes:
                    self._fill_volumes(fresh, staging, renamed)
                    for volume in own_volumes:
                        set_aside.append(self._roll_back_volume(volume, staging, undo))
                if config.profile.shm_dir:
                    rootfs.make_shm_dir(files.shm)
                    if os.path.exists(os.path.join(staging, DEVSHM)):
                        apply_tree_diff(os.path.join(staging, DEVSHM), files.shm, ())
            work = files.checkpoint_work
            os.makedirs(work, mode=0o700)
            images = os.path.join(staging, IMAGES)
            if options.pages_in:
                with timer.phase("pages_in"):
                    options.pages_in.wait()   # over already: the source sent its pages before the archive
                    from ferry.checkpoint.pagepush import merge_images
                    merge_images(options.pages_in.images, images)
                images = options.pages_in.images
            phases.reached("restore:begun")
            # Past here the container runs or the restore failed: a signal
            # waits for which, and never undoes a container that runs.
            daemon = None
            with signals.deferred():
                with timer.phase("runc_restore"):
                    try:
                        ready = None
                        if options.lazy_from:
                            from ferry.checkpoint.lazy import await_socket, start_daemon
                            # It starts while the container's network and spec are made.
                            daemon = start_daemon(images, work, options.lazy_from)
                            ready = functools.partial(await_socket, daemon, work)
                        self.containers.start(container.id, restore=RestoreFrom(
                            images, work, options.tcp_established, from_archive=True, before_runc=ready,
                            file_locks=file_locks_in(images),
                            lazy_pid=daemon.pid if daemon else None), warm=warm)
                    except BaseException as error:
                        if daemon:
                            from ferry.checkpoint.lazy import stop_daemon
                            stop_daemon(daemon)
                        if isinstance(error, FerryError):
                            raise self._keep_log(error, work, container.name) from None
                        raise
                criu = _restore_stats(images, work)
                undo.steps.clear()
                for aside in set_aside:
                    remove_tree_later(aside)
                journal.finish(directory)
        except BaseException:
            undo.run()
            raise
        finally:
            if warm is not None:
                warm.close()
            remove_tree_later(scratch)
            held.close()
            with contextlib.suppress(OSError):
                os.rmdir(self.layout.tmp)   # only when nothing else is in it
        return RestoreResult(container.id, container.name, time.monotonic() - started, timer.phases, criu,
                             Authenticity.FOREIGN if foreign_archive else _authenticity(contents), granted, daemon,
                             differences)

    @staticmethod
    def _host_differences(head, force: bool) -> tuple[str, ...]:
        """What about this host could keep the checkpoint from restoring or
        running (compat.refusals): refused, or with --force let pass and
        returned. Not authenticated yet: a forged head can only make this
        refuse. The archive's safety checks come later, whatever --force says."""
        from ferry.checkpoint import compat
        from ferry.checkpoint.hostinfo import criu_path, host_info
        found = tuple(str(refusal) for refusal in compat.refusals(head.host, host_info(), criu_path()))
        if found and not force:
            raise Incompatible(f"the checkpoint may not restore on this host: {'; '.join(found)}",
                               hint="restore on a host like the one it was taken on ('ferry system compat FILE' "
                                    "compares them), or pass --force to try anyway")
        return found

    def _id_is_free(self, container_id: str) -> bool:
        if os.path.exists(self.containers.dir(container_id)):
            return False
        try:
            self.containers.get(container_id, refresh=False)
        except NotFound:
            return True
        return False

    def sweep_stale_imports(self) -> list[str]:
        """Remove the staging dirs (and their tmpfs) of restores whose command
        died before it made a container: no one else will."""
        removed = []
        if not os.path.isdir(self.layout.tmp):
            return removed
        for entry in os.listdir(self.layout.tmp):
            container_id = entry[len(IMPORT_PREFIX):]
            if not entry.startswith(IMPORT_PREFIX) or not ids.is_id(container_id):
                continue
            if not is_locked(self.layout.lock(f"container-{container_id}")):
                remove_tree(os.path.join(self.layout.tmp, entry))
                removed.append(f"staging dir {entry}")
        return removed

    def _stage(self, scratch: str, path: str, need: int) -> None:
        """Room for the archive's members, sized from what it declares, and
        refused up front when neither memory nor disk can hold it."""
        if tmpfs_if_it_fits(scratch, need, exact=True):   # CRIU reads the images once; they need not reach the disk
            return
        free = disk_free(scratch)
        if need + need // 10 + margin(scratch) > free:
            raise FerryError(f"cannot restore {path}: its members take {size_text(need)}, more than this host "
                             f"can stage ({size_text(memory_available())} of memory and {size_text(free)} of disk "
                             f"free under {self.layout.tmp}, less a margin)",
                             hint="free memory or disk, or restore on a larger host")

    def _room_for_foreign(self, scratch: str) -> int:
        """What another engine's archive, which declares no size, may unpack:
        the disk under the staging dir, less a margin."""
        room = disk_free(scratch) - margin(scratch)
        if room <= 0:
            raise FerryError(f"cannot restore: no disk is free under {self.layout.tmp}", hint="free disk space")
        return room

    def _check_disk_for_files(self, staging: str, options: RestoreOptions) -> None:
        """The root filesystem diff and the volumes are unpacked to disk."""
        names = [] if options.ignore_rootfs else [ROOTFS_DIFF]
        if not options.ignore_volumes and os.path.isdir(os.path.join(staging, VOLUMES)):
            names += [os.path.join(VOLUMES, n) for n in os.listdir(os.path.join(staging, VOLUMES))]
        need = sum(os.lstat(os.path.join(staging, n)).st_size for n in names
                   if os.path.exists(os.path.join(staging, n)))
        os.makedirs(self.layout.containers, mode=0o700, exist_ok=True)
        free = disk_free(self.layout.containers)
        if need and need + need // 10 + margin(self.layout.containers) > free:
            raise FerryError(f"cannot restore: the archive's files take {size_text(need)}, and {size_text(free)} "
                             f"of disk is free under {self.layout.containers}, less a margin",
                             hint="free disk space, or restore with --ignore-rootfs/--ignore-volumes")

    def _insert_restored(self, name: str, image, config: ContainerConfig, options: RestoreOptions,
                         undo: Undo, container_id: str, scratch: str, kept_id: bool) -> Container:
        """The restored container's record, at its old address while that is
        free here (a move to another host keeps it), else at a new one, as
        podman gives a copy under a new name."""
        attempt = Undo()
        entry = dict(op=journal.RESTORE, from_archive=True, scratch=scratch)
        try:
            for _ in range(3 + 2 * len(config.more_networks)):   # each IP, then MAC, may be taken
                try:
                    # An ID kept from the archive may be its twin's in another root on this host.
                    container = self.containers.insert(name, image, config, attempt, container_id=container_id,
                                                       journal_entry=entry, adopt_lease=options.adopt_lease,
                                                       scoped=kept_id)
                    break
                except UsageError as refusal:   # the archive's address, not the user's command line
                    raise Conflict(refusal.message, hint="restore with --ignore-static-ip (and --ignore-static-mac) "
                                                         "to take a new address") from None
                except Conflict as clash:
                    attempt.run()
                    config = _readdressed(config, clash, options)
            else:
                raise Conflict(f"cannot find a free address for container {name!r}")
        except BaseException:
            attempt.run()
            raise
        undo.steps += attempt.steps
        return container

    def _image_for(self, wanted: dict, options: RestoreOptions):
        what = f"image {wanted['image']} ({wanted['image_digest']})"
        return image_by_id(self.containers.images, wanted["image_id"], options.image_archive, what,
                                   missing=f"{what} is not in this root",
                                   hint="load it with 'ferry load -i FILE', or pass --image-archive FILE")

    def _own_volumes(self, config: ContainerConfig, options: RestoreOptions,
                     restated: tuple[VolumeSpec, ...]) -> tuple[str, ...]:
        """The named volumes a restore in place of its own container rolls back
        to the checkpoint's content, as it does the root filesystem: the memory
        it restores saw those files (CRIU checks an open file's size). Only
        volumes no other container mounts; -v re-states one as it is here."""
        if not (options.replace and options.container_id) or options.ignore_volumes:
            return ()
        restated_at = {v.destination for v in restated}
        volumes = self.containers.volumes
        own = []
        for volume in config.named_volumes:
            if volume.destination in restated_at or not volumes.exists(volume.source):
                continue
            others = [n for n in self.containers.users_of_volume(volume.source) if n != options.name]
            if others:
                raise Conflict(f"volume {volume.source!r} of the checkpoint is mounted by {', '.join(others)} too, "
                               "and rolling it back would change their files",
                               hint=f"re-state it with -v {volume.source}:{volume.destination} to mount it as it is "
                                    "(its content in the checkpoint is then not restored)")
            own.append(volume.source)
        return tuple(own)

    def _roll_back_volume(self, name: str, staging: str, undo: Undo) -> str:
        """Volume `name` with the checkpoint's content. What it held is set
        aside (returned) until the container runs, and put back if the restore
        fails; one a killed restore set aside is put back first."""
        data = self.containers.volumes.data_dir(name)
        aside = f"{data}.before-restore"
        if os.path.isdir(aside):
            remove_tree(data)
            os.rename(aside, data)
        mode = stat.S_IMODE(os.stat(data).st_mode)
        os.rename(data, aside)
        undo.push(_put_back, aside, data)
        os.mkdir(data, mode)
        tar_path = os.path.join(staging, VOLUMES, f"{name}.tar")
        if os.path.exists(tar_path):
            apply_tree_diff(tar_path, data, ())
        return aside

    def _config_for_target(self, config: ContainerConfig, options: RestoreOptions,
                           restated: tuple[VolumeSpec, ...],
                           own_volumes: tuple[str, ...] = ()) -> tuple[ContainerConfig, tuple[VolumeSpec, ...]]:
        """The archived config made this host's: its network, ports and mounts
        (`own_volumes` are this container's to roll back). Returns it with the
        bind mounts granted by --allow-bind-mounts."""
        from ferry.network.ports import parse_port
        networks = self.containers.networks
        changes: dict = {}
        if config.network_mode == BRIDGE and not config.more_networks:
            try:
                networks.get(config.network)
            except NotFound:
                changes["network"] = networks.default().name
                changes["ip"] = changes["mac"] = ""  # another subnet: the old address means nothing here
        elif config.more_networks:
            # Each interface is one of its networks: none is swapped for the default.
            missing = [j.network for j in config.joined if not networks.has(j.network)]
            if missing:
                raise NotFound(f"the checkpoint's container joined networks this host lacks: {', '.join(missing)}",
                               hint="create them here first ('ferry network create NAME')")
        if options.ignore_static_ip:
            changes["ip"] = ""
        if options.ignore_static_mac or (changes.get("ip") == "" and not config.static_mac):
            changes["mac"] = ""   # a MAC nobody chose goes with its address
        if config.more_networks and (options.ignore_static_ip or options.ignore_static_mac):
            changes["more_networks"] = tuple(j._replace(ip="" if options.ignore_static_ip else j.ip, mac="")
                                             for j in config.more_networks)
        if options.ports is not None and config.network_mode == BRIDGE:   # none and host publish nothing
            changes["ports"] = tuple(parse_port(p) for p in options.ports)
        check_privileges(config, options.allow_privileges, migration=options.import_stream is not None)
        archived = config.volumes
        if options.ignore_volumes:
            archived = tuple(v for v in archived if v.kind != "volume")
        volumes, granted = mounts_for_target(archived, restated, options.allow_bind_mounts,
                                              lambda n: n not in own_volumes and self.containers.volumes.exists(n))
        for volume in volumes:
            if volume.kind == "bind" and not os.path.exists(volume.source):
                raise NotFound(f"host path {volume.source!r} mounted at {volume.destination} does not exist here",
                               hint="create it on this host before restoring, or re-state it with -v")
        return config._replace(volumes=volumes, **changes), granted

    def _fill_volumes(self, names: list[str], staging: str, renamed: dict[str, str] | None = None) -> None:
        """Fill the volumes this restore made with their content in the archive
        (a renamed anonymous one's under its archived name); one that existed
        before stays as it is."""
        for name in names:
            tar_path = os.path.join(staging, VOLUMES, f"{(renamed or {}).get(name, name)}.tar")
            if os.path.exists(tar_path):
                apply_tree_diff(tar_path, self.containers.volumes.data_dir(name), ())

    def _keep_log(self, error: FerryError, work: str, name: str) -> FerryError:
        """The container dir goes away with the failed restore; CRIU's log must not."""
        log = os.path.join(work, "restore.log")
        if not os.path.exists(log):
            return error
        kept_dir = os.path.join(self.layout.root, "logs")
        os.makedirs(kept_dir, mode=0o700, exist_ok=True)
        kept = os.path.join(kept_dir, f"restore-{ids.check_name(name)}-{time.strftime('%Y%m%dT%H%M%S')}.log")
        shutil.copyfile(log, kept)
        error.hint = f"CRIU's log is kept at {kept}"
        return error


def _put_back(aside: str, data: str) -> None:
    remove_tree(data)
    os.rename(aside, data)


def fresh_anonymous(config: ContainerConfig, own: tuple[str, ...], restated: tuple[VolumeSpec, ...],
                    volume_exists) -> tuple[ContainerConfig, dict[str, str]]:
    """`config` with a new name for each anonymous volume that exists here and
    is not the restored container's own (nor re-stated by -v); with the map
    from each new name to the archived one, whose content fills it."""
    restated_at = {v.destination for v in restated}
    renamed: dict[str, str] = {}
    volumes = []
    for volume in config.volumes:
        if volume.anonymous and volume.destination not in restated_at and volume.source not in own \
                and volume_exists(volume.source):
            new = ids.new_id()
            renamed[new] = volume.source
            volume = volume._replace(source=new)
        volumes.append(volume)
    return (config._replace(volumes=tuple(volumes)) if renamed else config), renamed


def privileges_asked(config: ContainerConfig) -> list[str]:
    """What the container was run with beyond ferry's defaults, as the flags
    that asked it: its host config's (--privileged, --cap-add, --ipc host) and
    the host's network namespace (--network host)."""
    return config.host.grants() + (["--network host"] if config.network_mode == HOST_NETWORK else [])


def check_privileges(config: ContainerConfig, allowed: bool, *, migration: bool = False) -> None:
    """An archive may propose privileges; only this host's user grants them:
    privileges_asked needs `allowed` (this root's own checkpoint,
    --allow-privileges, or the agent's policy). Limits (memory, CPUs, ulimits,
    read-only, tmpfs) only restrict, so they are applied as archived; bind
    sources are mounts_for_target's."""
    asked = privileges_asked(config)
    if asked and not allowed:
        raise FerryError(f"the checkpoint asks for privileges beyond ferry's defaults, which only this host's "
                         f"user may grant: {', '.join(asked)}",
                         hint="start this host's agent with --allow-privileges" if migration
                         else "pass --allow-privileges to grant what the archive asks, if you trust it")


def mounts_for_target(archived: tuple[VolumeSpec, ...], restated: tuple[VolumeSpec, ...], allow_binds: bool,
                       volume_exists) -> tuple[tuple[VolumeSpec, ...], tuple[VolumeSpec, ...]]:
    """An archive never chooses data of this host. Each of its mounts is
    replaced by the user's -v at the same destination; a named volume is made
    here (and filled from the archive) unless one of that name exists, which
    only -v may share; a bind of a host path needs --allow-bind-mounts.
    Otherwise the restore is refused with the list. CRIU restores the mount
    tree it dumped, so -v can only re-state a mount the container had."""
    by_destination = {v.destination: v for v in restated}
    if len(by_destination) != len(restated):
        raise UsageError("two -v options name the same container path")
    known = {v.destination for v in archived}
    for volume in restated:
        if volume.destination not in known:
            raise UsageError(f"-v {volume}: the checkpoint has no mount at {volume.destination}",
                             hint="a restore can only re-state the mounts the container had"
                                  + (f": {', '.join(sorted(known))}" if known else ""))
    kept, granted, binds, existing = [], [], [], []
    for volume in archived:
        if volume.destination in by_destination:
            kept.append(by_destination[volume.destination])
        elif volume.kind == "volume":
            (existing if volume_exists(volume.source) else kept).append(volume)
        elif allow_binds:
            kept.append(volume)
            granted.append(volume)
        else:
            binds.append(volume)
    if binds:
        listed = ", ".join(f"{v.source} at {v.destination}" for v in binds)
        raise FerryError(f"the checkpoint mounts host paths, which only this host's user may grant: {listed}",
                         hint="re-state each with -v HOST_PATH:CONTAINER_PATH, or pass --allow-bind-mounts "
                              "to mount the paths the archive names")
    if existing:
        listed = ", ".join(f"{v.source} at {v.destination}" for v in existing)
        raise Conflict(f"the checkpoint mounts volumes that already exist here: {listed}",
                       hint="remove them first, or re-state each with -v NAME:CONTAINER_PATH to mount it "
                            "as it is here (its content in the archive is then not restored)")
    return tuple(kept), tuple(granted)


MAX_JSON_MEMBER = 16 << 20
# The members a ferry archive may hold besides CRIU's images and volume tars.
KNOWN_MEMBERS = (CONFIG_DUMP, FERRY_CONFIG, SPEC_DUMP, NETWORK_STATUS, STATS_DUMP, ROOTFS_DIFF, DELETED_FILES, LOG,
                 DEVSHM)
IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")


def read_members(staging: str, contents) -> tuple[ArchivedContainer, tuple[str, ...]]:
    """The archive's own records, parsed strictly, and its layout checked:
    config.dump, network.status (which must agree with it), deleted.files,
    and no member without a place in a ferry checkpoint."""
    sizes = {m.name: m.size for m in contents.members}
    for name, size in sizes.items():
        if name.endswith((".dump", ".status", ".files")) and size > MAX_JSON_MEMBER:
            raise BadArchive(f"{name} in the archive is too large ({size} bytes)", hint=HINT_FORGED)
    if CONFIG_DUMP not in sizes or f"{IMAGES}/inventory.img" not in sizes:
        raise BadArchive(f"the archive has no {CONFIG_DUMP if CONFIG_DUMP not in sizes else 'CRIU inventory'}",
                         hint=HINT_FORGED)
    # Archives before podman's shape kept ferry's record in config.dump.
    record = FERRY_CONFIG if FERRY_CONFIG in sizes else CONFIG_DUMP
    saved = _parse_member(staging, record, ArchivedContainer.from_json)
    if saved.id != contents.container["id"] or saved.name != contents.container["name"] \
            or saved.image_id != contents.container["image_id"]:
        raise BadArchive(f"{record} names another container than the archive's manifest", hint=HINT_FORGED)
    if record == FERRY_CONFIG:   # what podman would restore must be the same container
        if _parse_member(staging, CONFIG_DUMP, podman_identity) != (saved.id, saved.name, saved.image_id):
            raise BadArchive(f"{CONFIG_DUMP} names another container than {FERRY_CONFIG}", hint=HINT_FORGED)
    if NETWORK_STATUS in sizes:
        _parse_member(staging, NETWORK_STATUS, lambda text: check_network_status(text, saved.config))
    deleted = _parse_member(staging, DELETED_FILES, parse_deleted_files) if DELETED_FILES in sizes else ()
    volume_tars = {f"{VOLUMES}/{v.source}.tar" for v in saved.config.named_volumes}
    for name in sizes:
        top, _, rest = name.partition("/")
        if name in KNOWN_MEMBERS or name in volume_tars or (top == IMAGES and IMAGE_NAME_RE.match(rest)):
            continue
        raise BadArchive(f"member {shown(name)} has no place in a ferry checkpoint", hint=HINT_FORGED)
    return saved, deleted


def _parse_member(staging: str, name: str, parse):
    with open(os.path.join(staging, name), "rb") as f:
        data = f.read(MAX_JSON_MEMBER + 1)
    try:
        return parse(data)
    except ValueError as exc:
        raise BadArchive(f"{name} in the archive is invalid: {exc}", hint=HINT_FORGED) from None


def _authenticity(contents) -> str:
    return Authenticity.VERIFIED if getattr(contents, "verified", False) else Authenticity.UNVERIFIED


def load_public_key(path: str):
    from ferry.checkpoint import signing   # cryptography loads only when asked for
    return signing.load_public_key(path)


def load_private_key(path: str):
    from ferry.checkpoint import signing
    return signing.load_private_key(path)


def _readdressed(config: ContainerConfig, clash: Conflict, options: RestoreOptions) -> ContainerConfig:
    """The config with a new address where `clash` says the old one is taken;
    the clash itself, with a hint, where it may not take a new one."""
    if config.ip and config.ip in clash.message:
        if options.tcp_established:
            clash.hint = ("its TCP connections live on that address: stop or remove the container holding it "
                          "first, or restore without --tcp-established (the connections are then dropped)")
            raise clash
        return config._replace(ip="", mac=config.mac if config.static_mac else "")
    if config.mac and config.mac.lower() in clash.message.lower() and not config.static_mac:
        return config._replace(mac="")   # only a MAC the user chose is kept at any cost
    for position, joined in enumerate(config.more_networks):   # eth1...: no address chosen by the user
        if (joined.ip and joined.ip in clash.message) or (joined.mac and joined.mac.lower() in clash.message.lower()):
            if joined.ip and joined.ip in clash.message and options.tcp_established:
                clash.hint = ("its TCP connections live on that address: stop or remove the container holding it "
                              "first, or restore without --tcp-established (the connections are then dropped)")
                raise clash
            more = list(config.more_networks)
            more[position] = joined._replace(ip="" if joined.ip in clash.message else joined.ip, mac="")
            return config._replace(more_networks=tuple(more))
    raise _restore_hint(clash, config)


def _restore_hint(clash: Conflict, config: ContainerConfig) -> Conflict:
    """Point a restore's clash at the restore flag that resolves it."""
    text = clash.message
    if config.ip and config.ip in text:
        clash.hint = "restore with --ignore-static-ip to take a new address"
    elif config.mac and config.mac.lower() in text.lower():
        clash.hint = "restore with --ignore-static-mac to take a new MAC address"
    elif "name" in text:
        clash.hint = "restore with --name NEW"
    return clash


def _entry(checkpoint_id: str, container: Container, path: str, kind: str, options: CheckpointOptions,
           signer) -> CheckpointEntry:
    return CheckpointEntry(checkpoint_id, container.id, container.name, container.config.image, kind, path,
                           utc_now(), 0, options.leave_running, signer is not None, options.sealing is not None)


def _archive_identity(container: Container) -> dict:
    return {"id": container.id, "name": container.name, "image": container.config.image,
            "image_id": container.image_id, "image_digest": container.config.image_digest}


def _is_pages_image(name: str) -> bool:
    """CRIU's memory images: nearly all of a dump's bytes, written one after another."""
    return name.startswith("pages-") and name.endswith(".img")


def _restore_stats(images: str, work: str) -> dict:
    for directory in (work, images):
        with contextlib.suppress(NotFound):
            stats = read_restore_stats(directory)
            return {"forking_time": stats.forking_time_us, "restore_time": stats.restore_time_us,
                    "pages_restored": stats.pages_restored}
    return {}


def _compression_of(target: Endpoint, explicit: str | None) -> str:
    """--compress, else the file name's; a stream that no name describes (stdout) gets zstd."""
    try:
        return archive.compression_for(target.name, explicit)
    except UsageError:
        if explicit is None and target.stream:
            return "zstd"
        raise


def _import_source(options: RestoreOptions):
    """The archive to read, as an Endpoint (a context manager)."""
    if options.import_stream is not None:
        stream = Endpoint(options.import_stream, "the migration stream")
        return stream if options.keys is None else decrypted_endpoint(stream, options.keys)
    if options.image_layer:
        from ferry.checkpoint.archive.layerstream import layer_endpoint
        return layer_endpoint(options.image_layer, f"checkpoint image {options.image_name}")
    return archive_source(options.import_path, opening(options.decrypt_keys, options.decrypt_passphrase_file))


def file_locks_in(images: str) -> bool:
    """Whether a dump holds file locks (dumped with --file-locks): CRIU's
    restore takes them again only when told to, and otherwise drops them
    silently, as podman's restore without --file-locks does. The image's
    header is two 4-byte magics: anything past it is a lock entry."""
    try:
        found = os.lstat(os.path.join(images, FILE_LOCKS_IMAGE))
    except FileNotFoundError:
        return False
    return stat.S_ISREG(found.st_mode) and found.st_size > CRIU_IMAGE_HEADER
