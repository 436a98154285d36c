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
import json
import os
import shutil
import stat
import tarfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from ferry.checkpoint import archive
from ferry.checkpoint.archive_write import ArchiveWriter, WriteResult
from ferry.checkpoint.criu import DumpStats, ensure_pipe_max_size, read_dump_stats, read_restore_stats
from ferry.engine.containers import RUNNING, Container, ContainerConfig, Containers, RestoreFrom, Undo
from ferry.engine.volumes import VolumeSpec
from ferry.store import ids
from ferry.runtime.launch import CHECKPOINTING
from ferry.runtime.runc import memory_in_use
from ferry.util.errors import BadArchive, Conflict, FerryError, NotFound, UsageError
from ferry.util.fs import atomic_write, remove_tree, remove_tree_later, tmpfs_if_it_fits
from ferry.util.timefmt import utc_now

IMAGES = "checkpoint"            # CRIU images, inside the container dir and the archive
WORK = "checkpoint-work"         # CRIU's work dir (logs), never archived
CONFIG_DUMP = "config.dump"
SPEC_DUMP = "spec.dump"
NETWORK_STATUS = "network.status"
STATS_DUMP = "stats-dump"
ROOTFS_DIFF = "rootfs-diff.tar"
DELETED_FILES = "deleted.files"
VOLUMES = "volumes"
LOG = "ctr.log"
OPAQUE_XATTR = "trusted.overlay.opaque"
OPAQUE_MARKER = ".wh..wh..opq"

Progress = Callable[[str, int, int], None]


def _no_progress(_phase: str, _done: int, _total: int) -> None:
    pass


@dataclass(frozen=True)
class CheckpointOptions:
    export: str | None = None
    leave_running: bool = False
    tcp_established: bool = False
    compress: str | None = None
    ignore_rootfs: bool = False
    ignore_volumes: bool = False
    keep: bool = False


@dataclass(frozen=True)
class RestoreOptions:
    import_path: str | None = None
    name: str | None = None
    tcp_established: bool = False
    ports: tuple[str, ...] | None = None
    ignore_static_ip: bool = False
    ignore_static_mac: bool = False
    ignore_rootfs: bool = False
    ignore_volumes: bool = False
    image_archive: str | None = None


@dataclass
class Timer:
    """Seconds spent per phase, for --print-stats."""
    phases: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - start


@dataclass(frozen=True)
class CheckpointResult:
    id: str
    name: str
    archive: str | None
    archive_size: int
    archive_streamed: int   # archive member bytes compressed while CRIU was still writing them
    seconds: float
    phases: dict
    criu: DumpStats | None

    def stats(self) -> dict:
        """podman's --print-stats shape, plus ferry's own phases."""
        entry = {"Id": self.id, "Name": self.name,
                 "runtime_checkpoint_duration": int(self.phases.get("runc_checkpoint", 0) * 1e6),
                 "criu_statistics": _criu_stats(self.criu), "ferry_phases": _micros(self.phases)}
        if self.archive:
            entry.update(archive=self.archive, archive_size=self.archive_size,
                         archive_streamed=self.archive_streamed)
        return {"ferry_checkpoint_duration": int(self.seconds * 1e6), "container_statistics": [entry]}


@dataclass(frozen=True)
class RestoreResult:
    id: str
    name: str
    seconds: float
    phases: dict
    criu: dict

    def stats(self) -> dict:
        return {"ferry_restore_duration": int(self.seconds * 1e6),
                "container_statistics": [{
                    "Id": self.id, "Name": self.name,
                    "runtime_restore_duration": int(self.phases.get("runc_restore", 0) * 1e6),
                    "criu_statistics": self.criu, "ferry_phases": _micros(self.phases)}]}


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
        started = time.monotonic()
        timer = Timer()
        compression = archive.compression_for(options.export, options.compress) if options.export else None
        container = self.containers.get(name_or_id)
        if container.state != RUNNING:
            raise Conflict(f"cannot checkpoint container {container.name!r}: it is {container.state}",
                           hint="only running containers can be checkpointed")
        directory = self.containers.dir(container.id)
        images, work = os.path.join(directory, IMAGES), os.path.join(directory, WORK)
        for path in (images, work):
            remove_tree(path)
            os.makedirs(path, mode=0o700)
        if options.export and not options.keep:
            # Images that only pass through on their way into the archive.
            tmpfs_if_it_fits(images, memory_in_use(container.id))
        ensure_pipe_max_size()  # CRIU's page pipes must be able to grow (HOST-NOTES)
        marker = os.path.join(directory, CHECKPOINTING)
        atomic_write(marker, "")
        writer = None
        try:
            if options.export:
                writer = ArchiveWriter(options.export, compression=compression,
                                       container=_archive_identity(container))
                writer.follow(images, IMAGES, _is_pages_image)   # compress while CRIU writes
            progress("dump", 0, 1)
            with timer.phase("runc_checkpoint"):
                self.containers.runc.checkpoint(container.id, images=images, work=work,
                                                leave_running=options.leave_running,
                                                tcp_established=options.tcp_established)
            progress("dump", 1, 1)
            if not options.leave_running:
                # The checkpoint is recorded before anything of the archive can
                # fail: the container is gone, and its images must stay
                # restorable. Once the monitor has the exit, the log is complete.
                with timer.phase("exit"):
                    self.containers.wait_exit_recorded(container)
                self.containers.set_checkpointed(container.id, utc_now())
            if writer:
                with timer.phase("archive_follow"):
                    writer.stop_following(complete=True)
            criu_stats = read_dump_stats(work)  # runc has CRIU write stats to its work dir
            written = None
            if writer:
                written = self._export(writer, container, options, timer, progress)
            if not options.leave_running:
                with timer.phase("stop"):   # the monitor leaves the cleanup to this command
                    self.containers.wait_monitor(container)
                    self.containers.cleanup(container.id)
                if options.export and not options.keep:
                    remove_tree_later(images)
                    self.containers.set_checkpointed(container.id, None)
        except BaseException as failure:
            if writer:
                writer.abort()
            current = self.containers.get(container.id)
            if options.leave_running or current.state == RUNNING:
                remove_tree(images)
            elif isinstance(failure, FerryError) and current.checkpointed_at:
                failure.hint = (f"the checkpoint is kept: 'ferry container restore {container.name}' "
                                "brings the container back here")
            if not options.leave_running:
                # The monitor saw the marker and left the cleanup to this
                # command, and a failed dump may have ended the container too.
                self.containers.wait_monitor(container)
                with contextlib.suppress(FerryError):
                    self.containers.cleanup(container.id)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(marker)
        return CheckpointResult(container.id, container.name, options.export,
                                written.size if written else 0, written.streamed if written else 0,
                                time.monotonic() - started, timer.phases, criu_stats)

    def _export(self, writer: ArchiveWriter, container: Container, options: CheckpointOptions,
                timer: Timer, progress: Progress) -> WriteResult:
        directory = self.containers.dir(container.id)
        staged: list[str] = []   # members made only for the archive, removed afterwards
        try:
            with timer.phase("config"):
                names = self._write_config_members(container, directory, staged)
            if not options.ignore_rootfs:
                with timer.phase("rootfs_diff"):
                    names += self._write_rootfs_diff(directory, staged)
            if not options.ignore_volumes:
                with timer.phase("volumes"):
                    names += self._write_volumes(container, directory, staged)
            images = os.path.join(directory, IMAGES)
            names += sorted(os.path.join(IMAGES, n) for n in os.listdir(images)
                            if stat.S_ISREG(os.lstat(os.path.join(images, n)).st_mode))
            if os.path.exists(os.path.join(directory, LOG)):
                names.append(LOG)
            with timer.phase("archive_write"):
                return writer.commit(directory, names, progress=progress)
        finally:
            for path in staged:
                with contextlib.suppress(FileNotFoundError):
                    if os.path.isdir(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)

    def _write_config_members(self, container: Container, directory: str, staged: list[str]) -> list[str]:
        config = {"id": container.id, "name": container.name, "image_id": container.image_id,
                  "created_at": container.created_at, "config": asdict(container.config)}
        network = {"network": container.config.network, "ip": container.config.ip,
                   "mac": container.config.mac, "ports": list(container.config.ports)}
        members = {CONFIG_DUMP: json.dumps(config, indent=1), NETWORK_STATUS: json.dumps(network, indent=1)}
        with open(os.path.join(directory, "config.json")) as f:
            members[SPEC_DUMP] = f.read()
        stats = os.path.join(directory, WORK, "stats-dump")
        if os.path.exists(stats):
            with open(stats, "rb") as f:
                members[STATS_DUMP] = f.read()
        for name, data in members.items():
            atomic_write(os.path.join(directory, name), data, mode=0o600)
            staged.append(os.path.join(directory, name))
        return list(members)

    def _write_rootfs_diff(self, directory: str, staged: list[str]) -> list[str]:
        """The upper dir as podman splits it: changed files in a tar, deletions in a list."""
        upper = os.path.join(directory, "upper")
        tar_path, deleted_path = os.path.join(directory, ROOTFS_DIFF), os.path.join(directory, DELETED_FILES)
        staged += [tar_path, deleted_path]
        deleted = write_tree_diff(upper, tar_path)
        atomic_write(deleted_path, json.dumps(deleted), mode=0o600)
        return [ROOTFS_DIFF, DELETED_FILES]

    def _write_volumes(self, container: Container, directory: str, staged: list[str]) -> list[str]:
        names = []
        volume_dir = os.path.join(directory, VOLUMES)
        for data in container.config.volumes:
            volume = VolumeSpec.from_dict(data)
            if volume.kind != "volume":
                continue  # host directories stay with the host, as in podman
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
        if options.import_path:
            return self._restore_import(options, progress)
        if not name_or_id:
            raise UsageError("restore needs a container name, or --import FILE")
        if options.name:
            raise UsageError("--name needs --import: an in-place restore keeps the container's name")
        return self._restore_in_place(name_or_id, options)

    def _restore_in_place(self, name_or_id: str, options: RestoreOptions) -> RestoreResult:
        started, timer = time.monotonic(), Timer()
        container = self.containers.get(name_or_id)
        directory = self.containers.dir(container.id)
        images = os.path.join(directory, IMAGES)
        if container.state == RUNNING:
            raise Conflict(f"container {container.name!r} is running", hint="checkpoint it first")
        if not container.checkpointed_at or not os.path.exists(os.path.join(images, "inventory.img")):
            raise NotFound(f"container {container.name!r} has no local checkpoint",
                           hint="checkpoint it without --export, or restore with --import FILE")
        work = os.path.join(directory, WORK)
        remove_tree(work)
        os.makedirs(work, mode=0o700)
        with timer.phase("runc_restore"):
            self.containers.start(container.id, restore=RestoreFrom(images, work, options.tcp_established))
        criu = _restore_stats(images, work)
        self.containers.set_checkpointed(container.id, None)
        remove_tree_later(images)
        return RestoreResult(container.id, container.name, time.monotonic() - started, timer.phases, criu)

    def _restore_import(self, options: RestoreOptions, progress: Progress) -> RestoreResult:
        started, timer = time.monotonic(), Timer()
        os.makedirs(self.layout.tmp, mode=0o700, exist_ok=True)
        scratch = os.path.join(self.layout.tmp, f"import-{ids.new_id()[:12]}")
        staging = os.path.join(scratch, "archive")
        undo = Undo()
        try:
            with timer.phase("archive_read"):
                size = archive.read_manifest(options.import_path).total_size
                os.mkdir(scratch, 0o700)
                # CRIU reads the images once; they need never reach the disk.
                tmpfs_if_it_fits(scratch, size)
                manifest = archive.read_archive(options.import_path, staging, progress=progress)
            saved = _load_json(staging, CONFIG_DUMP)
            try:
                config = ContainerConfig(**{**saved["config"], **{k: tuple(saved["config"][k]) for k in
                                            ("args", "command", "env", "ports", "volumes")}})
            except (KeyError, TypeError) as exc:
                raise BadArchive(f"{CONFIG_DUMP} is not a ferry container config ({exc})") from None
            image = self._image_for(manifest, options)
            config = self._config_for_target(config, options)
            name = options.name or saved.get("name")
            attempt = Undo()
            try:
                container = self.containers.insert(name, image, config, attempt)
            except Conflict as clash:
                attempt.run()
                # A new address with the old MAC would confuse every switch on the
                # segment when the original still runs: --ignore-static-ip takes both.
                if not (options.ignore_static_ip and config.mac and config.mac.lower() in clash.message.lower()):
                    raise _restore_hint(clash, config) from None
                config = replace(config, mac="")
                container = self.containers.insert(name, image, config, attempt)
            undo.steps += attempt.steps
            directory = self.containers.dir(container.id)
            with timer.phase("files"):
                if os.path.exists(os.path.join(staging, LOG)):
                    shutil.move(os.path.join(staging, LOG), os.path.join(directory, LOG))
                if not options.ignore_rootfs and os.path.exists(os.path.join(staging, ROOTFS_DIFF)):
                    upper = os.path.join(directory, "upper")
                    os.makedirs(upper, mode=0o755, exist_ok=True)
                    apply_tree_diff(os.path.join(staging, ROOTFS_DIFF), upper,
                                    _load_json(staging, DELETED_FILES))
                if not options.ignore_volumes:
                    self._restore_volumes(container, staging, undo)
            work = os.path.join(directory, WORK)
            os.makedirs(work, mode=0o700)
            images = os.path.join(staging, IMAGES)
            with timer.phase("runc_restore"):
                try:
                    self.containers.start(container.id,
                                          restore=RestoreFrom(images, work, options.tcp_established))
                except FerryError as error:
                    raise self._keep_log(error, work, container.name) from None
            criu = _restore_stats(images, work)
            undo.steps.clear()
        except BaseException:
            undo.run()
            raise
        finally:
            remove_tree_later(scratch)
        return RestoreResult(container.id, container.name, time.monotonic() - started, timer.phases, criu)

    def _image_for(self, manifest, options: RestoreOptions):
        wanted = manifest.container
        images = self.containers.images
        try:
            return images.get(wanted["image_id"])
        except NotFound:
            if not options.image_archive:
                raise NotFound(f"image {wanted['image']} ({wanted['image_digest']}) is not in this root",
                               hint="load it with 'ferry load -i FILE', or pass --image-archive FILE") from None
        images.load(options.image_archive)
        try:
            return images.get(wanted["image_id"])
        except NotFound:
            raise NotFound(f"--image-archive {options.image_archive} does not hold image {wanted['image']} "
                           f"({wanted['image_digest']})") from None

    def _config_for_target(self, config: ContainerConfig, options: RestoreOptions) -> ContainerConfig:
        from ferry.network.ports import parse_port
        networks = self.containers.networks
        changes: dict = {}
        try:
            networks.get(config.network)
        except NotFound:
            changes["network"] = networks.default().name
            changes["ip"] = changes["mac"] = ""  # another subnet: the old address means nothing here
        if options.ignore_static_ip:
            changes["ip"] = ""
        if options.ignore_static_mac:
            changes["mac"] = ""
        if options.ports is not None:
            changes["ports"] = tuple(asdict(parse_port(p)) for p in options.ports)
        else:  # publish the same host ports again
            changes["ports"] = config.ports
        if options.ignore_volumes:
            changes["volumes"] = tuple(v for v in config.volumes if v["kind"] != "volume")
        for data in config.volumes:
            if data["kind"] == "bind" and not os.path.exists(data["source"]):
                raise NotFound(f"host path {data['source']!r} mounted at {data['destination']} does not exist here",
                               hint="create it on this host before restoring")
        return replace(config, **changes)

    def _restore_volumes(self, container: Container, staging: str, undo: Undo) -> None:
        volumes = self.containers.volumes
        for data in container.config.volumes:
            volume = VolumeSpec.from_dict(data)
            tar_path = os.path.join(staging, VOLUMES, f"{volume.source}.tar")
            if volume.kind != "volume" or not os.path.exists(tar_path):
                continue
            target = volumes.data_dir(volume.source)
            if os.listdir(target):
                raise Conflict(f"volume {volume.source!r} already exists here and is not empty",
                               hint="remove it first, or restore with --ignore-volumes")
            apply_tree_diff(tar_path, target, [])

    def _keep_log(self, error: FerryError, work: str, name: str) -> FerryError:
        """The container dir goes away with the failed restore; CRIU's log must not."""
        log = os.path.join(work, "restore.log")
        if not os.path.exists(log):
            return error
        kept_dir = os.path.join(self.layout.root, "logs")
        os.makedirs(kept_dir, mode=0o700, exist_ok=True)
        kept = os.path.join(kept_dir, f"restore-{name}-{time.strftime('%Y%m%dT%H%M%S')}.log")
        shutil.copyfile(log, kept)
        error.hint = f"CRIU's log is kept at {kept}"
        return error


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


def _archive_identity(container: Container) -> dict:
    return {"id": container.id, "name": container.name, "image": container.config.image,
            "image_id": container.image_id, "image_digest": container.config.image_digest}


def _is_pages_image(name: str) -> bool:
    """CRIU's memory images: nearly all of a dump's bytes, written one after another."""
    return name.startswith("pages-") and name.endswith(".img")


def _load_json(directory: str, name: str):
    try:
        with open(os.path.join(directory, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        raise BadArchive(f"the archive has no {name}") from None
    except ValueError:
        raise BadArchive(f"{name} in the archive is not valid JSON") from None


def _restore_stats(images: str, work: str) -> dict:
    for directory in (work, images):
        with contextlib.suppress(NotFound):
            stats = read_restore_stats(directory)
            return {"forking_time": stats.forking_time_us, "restore_time": stats.restore_time_us,
                    "pages_restored": stats.pages_restored}
    return {}


# ---- filesystem diffs -----------------------------------------------------

def write_tree_diff(tree: str, tar_path: str) -> list[str]:
    """Tar an overlay upper dir (or any dir); return the paths it deletes.

    Overlay whiteouts (0/0 character devices) become the deleted list; opaque
    directories are kept, marked with the OCI opaque entry so a restore hides
    what lies below them again.
    """
    deleted: list[str] = []
    fd = os.open(tar_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if not os.path.isdir(tree):
            return deleted
        for current, dirs, files in os.walk(tree):
            dirs.sort()
            rel_dir = os.path.relpath(current, tree)
            for name in sorted(dirs + files):
                path = os.path.join(current, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                info = os.lstat(path)
                if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                    deleted.append(rel)
                    continue
                if stat.S_ISDIR(info.st_mode) and _is_opaque(path):
                    deleted.append(rel)
                    tar.add(path, arcname=rel, recursive=False)
                    marker = tarfile.TarInfo(os.path.join(rel, OPAQUE_MARKER))
                    tar.addfile(marker)
                    continue
                if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) or stat.S_ISSOCK(info.st_mode):
                    continue  # device nodes and sockets do not travel
                tar.add(path, arcname=rel, recursive=False)
    return deleted


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def apply_tree_diff(tar_path: str, target: str, deleted: list) -> None:
    """Unpack a diff into an upper dir (or volume) with the image layer's safe
    unpacker, then turn each deleted path into an overlay whiteout."""
    from ferry.image.layers import safe_relpath, unpack_layer
    if not isinstance(deleted, list) or not all(isinstance(p, str) for p in deleted):
        raise BadArchive(f"{DELETED_FILES} is not a list of paths")
    mode = stat.S_IMODE(os.stat(target).st_mode)
    with open(tar_path, "rb") as source:
        unpack_layer(source, target)
    os.chmod(target, mode)
    for path in deleted:
        rel = safe_relpath(path, "deleted file")
        full = os.path.join(target, rel)
        parent = os.path.dirname(full)
        if not rel or os.path.lexists(full) or os.path.realpath(parent) != parent:
            continue  # kept by the diff (an opaque dir), or not safely reachable
        os.makedirs(parent, exist_ok=True)
        os.mknod(full, stat.S_IFCHR | 0o000, os.makedev(0, 0))
