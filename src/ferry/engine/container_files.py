"""A container's files from outside it: cp, diff, export and commit.

A running container's root is its overlay, mounted where `run` mounted it;
a stopped one's is mounted for the command, under the container's lock, and
unmounted after. Paths inside are resolved inside the root (runtime.inroot):
the container's files never lead to the host's. A path under a volume goes
to the volume, as podman's cp does.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shlex
import stat
import tarfile
import tempfile
from typing import BinaryIO, Iterator, NamedTuple

from ferry.engine.listing import RUNNING
from ferry.runtime import inroot, rootfs
from ferry.store.layout import ETC_FILES
from ferry.util.errors import Conflict, FerryError, NotFound, UsageError
from ferry.util.fs import mountinfo, resolved_tree
from ferry.util.space import BoundedWriter

# What podman leaves out of a container's diff (libpod's initInodes): mount
# points the runtime makes, not the user's changes.
MOUNT_POINTS = frozenset({"/dev", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/proc", "/run",
                          "/run/notify", "/run/.containerenv", "/run/secrets", "/sys", "/etc/mtab",
                          "/run/podman-init"})
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
HOST_RESOLVE = 0    # the host side: the user's own path, followed as any tool would


class Changes(NamedTuple):
    changed: list[str]
    added: list[str]
    deleted: list[str]

    def lines(self) -> list[str]:
        marked = [(p, "C") for p in self.changed] + [(p, "A") for p in self.added] + \
                 [(p, "D") for p in self.deleted]
        return [f"{kind} {path}" for path, kind in sorted(marked)]


class CommitOptions(NamedTuple):
    changes: tuple[str, ...] = ()
    message: str = ""
    author: str = ""
    fmt: str = "oci"


class Root(NamedTuple):
    """A container's root, opened, and where its volumes live on the host."""
    fd: int
    mounts: tuple[tuple[str, str], ...]   # (destination, host dir), longest first

    files: tuple[tuple[str, str], ...] = ()   # (destination, host file) bound over the root's

    def locate(self, path: str) -> tuple[int, str, bool]:
        """(dir fd, path relative to it, whether it is a volume's) for a path in the container."""
        for destination, source in self.files:
            if path == destination:
                return os.open(os.path.dirname(source), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), \
                    os.path.basename(source), True
        for destination, source in self.mounts:
            if path == destination or path.startswith(destination.rstrip("/") + "/"):
                return os.open(source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), path[len(destination):], True
        return os.dup(self.fd), path, False


def parse_location(text: str) -> tuple[str | None, str]:
    """podman's `[CONTAINER:]PATH`: a path that starts with / or . is the host's."""
    if text == "-" or text.startswith(("/", ".")) or ":" not in text:
        return None, text
    name, _, path = text.partition(":")
    return name, path


def clean(path: str) -> str:
    """An absolute, lexically clean path in the container (`..` cannot leave /);
    a trailing slash, which says "a directory", is kept."""
    cleaned = posixpath.normpath("/" + path.lstrip("/"))   # "//" would stay: POSIX keeps it
    return cleaned + "/" if path.endswith("/") and cleaned != "/" else cleaned


class ContainerFiles:
    def __init__(self, engine):
        self.engine = engine
        self.containers = engine.containers

    # ---- the root --------------------------------------------------------------
    def container(self, name: str):
        """The container, or podman's NotFound: for a check before any output is opened."""
        return self._get(name)

    def latest(self) -> str:
        """The ID of the container created last (--latest)."""
        rows = self.engine.db.read().execute("SELECT id FROM containers ORDER BY created_at DESC LIMIT 1").fetchall()
        if not rows:
            raise NotFound("no containers to act on with --latest")
        return rows[0]["id"]

    def _get(self, name: str):
        try:
            return self.containers.get(name)
        except NotFound:
            raise NotFound(f"no container with name or ID {name!r} found: no such container") from None

    @contextlib.contextmanager
    def root(self, container) -> Iterator[Root]:
        """The container's merged root, opened; mounted for the while if it is not."""
        files = self.containers.files(container.id)
        target = files.rootfs
        if self._mounted(target, files.upper):
            yield self._open_root(container, target)
            return
        with self.containers.locked(container, "cp"):
            container = self.containers.get(container.id)
            if self._mounted(target, files.upper):
                yield self._open_root(container, target)
                return
            if container.state == RUNNING:
                # a second overlay on a live upper dir would corrupt it
                raise Conflict(f"container {container.name!r} runs, but its root filesystem is not mounted here",
                               hint="run ferry in the mount namespace that started it")
            image = self.containers.images.get(container.image_id)
            rootfs.mount_overlay(self.containers.images.layer_paths(image), files.upper, files.overlay_work, target)
            try:
                yield self._open_root(container, target)
            finally:
                rootfs.unmount(target)

    def _open_root(self, container, target: str) -> Root:
        mounts = []
        for volume in container.config.volumes:
            source = self.containers.volumes.data_dir(volume.source) if volume.kind == "volume" else volume.source
            mounts.append((clean(volume.destination), source))
        mounts.sort(key=lambda m: len(m[0]), reverse=True)
        bound = []
        if container.state == RUNNING:   # the files ferry binds over /etc exist while it runs
            files = self.containers.files(container.id)
            bound = [(f"/etc/{name}", files.at(name)) for name in ETC_FILES
                     if not (name == "resolv.conf" and container.config.extras.dns_none)]
        return Root(os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), tuple(mounts), tuple(bound))

    @staticmethod
    def _mounted(target: str, upper: str) -> bool:
        point = resolved_tree(target)
        return any(m.point == point and m.fstype == "overlay" and f"upperdir={upper}," in m.options + ","
                   for m in mountinfo())

    # ---- cp --------------------------------------------------------------------
    def copy(self, source: str, dest: str, *, archive: bool = True, overwrite: bool = False,
             stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """`ferry cp SRC DEST`, one side CONTAINER:PATH, the other a host path or `-`."""
        src_name, src_path = parse_location(source)
        dst_name, dst_path = parse_location(dest)
        if src_name is not None and dst_name is not None:
            raise UsageError("copying between containers is not supported",
                             hint="copy out to the host, then in")
        if src_name is None and dst_name is None:
            raise UsageError("one of SRC and DEST must be CONTAINER:PATH",
                             hint="e.g. 'ferry cp ./file web:/tmp/'")
        if src_name is not None:
            if dst_path == "-" and not dst_name:
                container = self._get(src_name)
                with self.root(container) as root, _closing(root):
                    self._pack_out(root, container.name, src_path, stdout)
                return
            container = self._get(src_name)
            with self.root(container) as root, _closing(root), tempfile.TemporaryFile(dir=self._tmp()) as spool:
                bounded = self._bounded(spool, f"cannot copy {src_path} of container {container.name} to the host")
                top, is_dir = self._pack_out(root, container.name, src_path, bounded)
                spool.seek(0)
                host = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    self._unpack_in(host, _host_path(dst_path), spool, top, is_dir, src_path,
                                    resolve=HOST_RESOLVE, owner=None, overwrite=overwrite,
                                    where="on the host", shown=dst_path, setid=False)
                finally:
                    os.close(host)
            return
        container = self._get(dst_name)
        with tempfile.TemporaryFile(dir=self._tmp()) as spool:
            if src_path == "-":
                _copy_stream(stdin, self._bounded(spool, f"cannot copy stdin into container {container.name}"))
                spool.seek(0)
                if not _is_tar(spool):
                    raise UsageError("source must be a (compressed) tar archive when copying from stdin")
                top, is_dir = None, None
            else:
                host = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    bounded = self._bounded(spool, f"cannot copy {src_path} into container {container.name}")
                    top, is_dir = self._pack(host, _host_path(src_path), bounded, HOST_RESOLVE,
                                             f'"{src_path}" could not be found on the host',
                                             contents=_wants_contents(src_path))
                finally:
                    os.close(host)
            spool.seek(0)
            with self.root(container) as root, _closing(root):
                owner = self._owner(root, container) if archive else None
                if clean(dst_path).rstrip("/") in dict(root.files):
                    raise UsageError(f"{clean(dst_path)} of container {container.name} is ferry's: it is written "
                                     "at every start", hint="use --add-host, --dns or --hostname when creating it")
                fd, rel, _ = root.locate(clean(dst_path))
                try:
                    self._unpack_in(fd, rel, spool, top, is_dir, src_path, resolve=inroot.IN_ROOT, owner=owner,
                                    overwrite=overwrite, where=f"on container {container.name}", shown=dst_path)
                finally:
                    os.close(fd)

    def _tmp(self) -> str:
        path = self.engine.layout.tmp
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def _bounded(self, spool, what: str) -> BoundedWriter:
        """Writes into a spool under ROOT/tmp that stop short of filling the
        disk ferry's state lives on: what is spooled has no size known ahead."""
        return BoundedWriter(spool, self._tmp(), what)

    def _pack_out(self, root: Root, name: str, path: str, out) -> tuple[str, bool]:
        fd, rel, _ = root.locate(clean(path))
        try:
            return self._pack(fd, rel, out, inroot.IN_ROOT, f'"{path}" could not be found on container {name}',
                              contents=_wants_contents(path))
        finally:
            os.close(fd)

    @staticmethod
    def _pack(fd: int, rel: str, out, resolve: int, missing: str, *, contents: bool = False) -> tuple[str, bool]:
        """Tar the entry at `rel` (a dir with all below it) into `out`; its
        name in the tar, and whether it is a dir."""
        try:
            entry = inroot.lookup(fd, rel, resolve)
        except OSError as error:
            if inroot.is_missing(error) or error.errno == 40:   # ELOOP: a link out of the root
                raise NotFound(f"{missing}: no such file or directory") from None
            raise
        try:
            is_dir = stat.S_ISDIR(entry.info.st_mode)
            top = entry.name
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                packer = inroot.Packer(tar)
                if contents and is_dir or not top:
                    dir_fd = os.open(entry.name or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     dir_fd=entry.parent)
                    try:
                        packer.add_children(dir_fd, "")
                    finally:
                        os.close(dir_fd)
                    top = ""
                else:
                    packer.add(entry.parent, entry.name, top, entry.info)
            return top, is_dir
        finally:
            os.close(entry.parent)

    def _unpack_in(self, fd: int, rel: str, spool, top: str | None, is_dir: bool | None, src_path: str, *,
                   resolve: int, owner, overwrite: bool, where: str, shown: str, setid: bool = True) -> None:
        """Place the spooled tar at `rel` by cp's rules: into an existing dir,
        over an existing file, or as a new entry in an existing parent."""
        try:
            existing = inroot.lookup(fd, rel, resolve)
            os.close(existing.parent)
            dest_is_dir = stat.S_ISDIR(existing.info.st_mode) or (
                stat.S_ISLNK(existing.info.st_mode) and self._is_dir(fd, rel, resolve))
        except OSError as error:
            if not inroot.is_missing(error):
                raise
            existing = dest_is_dir = None
        if top is None:   # a tar from stdin: its members go into the dir
            if not dest_is_dir:
                raise UsageError("destination must be a directory when copying from stdin")
            into, rename = rel, None
        elif existing is None:
            if rel.endswith("/") or not _parent_is_dir(fd, rel, resolve):
                raise NotFound(f'"{shown}" could not be found {where}: no such file or directory')
            # a new entry: the source under the destination's name
            head, name = inroot.split(rel)
            into, rename = head, name
        elif dest_is_dir:
            into, rename = rel, (None if top else "")
        else:
            if is_dir:
                raise UsageError("destination must be a directory when copying a directory")
            if rel.endswith("/"):
                raise UsageError(f'"{shown}" exists but is not a directory')
            head, name = inroot.split(rel)
            into, rename = head, name
        if top == "" and rename is None:
            rename = ""
        unpacker = inroot.Unpacker(fd, into, resolve=resolve, top=rename if top is not None else None,
                                   owner=owner, overwrite=overwrite, setid=setid)
        if top == "":
            unpacker.top = None   # a tar of a dir's contents: no top entry to rename
        try:
            with tarfile.open(fileobj=spool, mode="r|*") as tar:
                unpacker.check_all(tar)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r|*") as tar:
                unpacker.extract_all(tar)
        except inroot.Conflicting as conflict:
            raise Conflict(f"cannot overwrite {conflict} {where}: a directory and a non-directory",
                           hint="pass --overwrite to replace it") from None
        except (tarfile.TarError, ValueError) as error:
            raise UsageError(f"cannot unpack the archive: {error}") from None

    @staticmethod
    def _is_dir(fd: int, rel: str, resolve: int) -> bool:
        try:
            os.close(inroot.open_dir(fd, rel, resolve))
            return True
        except OSError:
            return False

    def _owner(self, root: Root, container) -> tuple[int, int]:
        """The container's user as uid, gid (podman's --archive), read from
        its own /etc/passwd and /etc/group inside its root."""
        user = container.config.user or ""
        name, _, group = user.partition(":")
        uid = gid = 0
        if name:
            entries = _read_db(root.fd, "etc/passwd")
            entry = next((e for e in entries if (e[2] if name.isdigit() else e[0]) == name), None)
            if name.isdigit():
                uid = int(name)
                gid = int(entry[3]) if entry and entry[3].isdigit() else 0
            elif entry and entry[2].isdigit() and entry[3].isdigit():
                uid, gid = int(entry[2]), int(entry[3])
        if group:
            if group.isdigit():
                gid = int(group)
            else:
                entry = next((e for e in _read_db(root.fd, "etc/group") if e[0] == group), None)
                gid = int(entry[2]) if entry and entry[2].isdigit() else gid
        return uid, gid

    # ---- diff ------------------------------------------------------------------
    def diff(self, name: str) -> Changes:
        """What a container's upper dir changes (or what an image's top layer
        adds to those below it)."""
        try:
            container = self.containers.get(name)
        except NotFound:
            container = None
        images = self.containers.images
        if container is not None:
            image = images.get(container.image_id)
            upper = self.containers.files(container.id).upper
            return tree_changes(upper, images.layer_paths(image), skip=MOUNT_POINTS)
        try:
            image = images.get(name)
        except NotFound:
            raise NotFound(f"{name} not found: layer not known") from None
        layers = images.layer_paths(image)
        return tree_changes(layers[-1], layers[:-1], skip=MOUNT_POINTS)

    # ---- export ----------------------------------------------------------------
    def export(self, name: str, out: BinaryIO) -> None:
        """The container's whole filesystem (its merged root, no volumes) as a tar."""
        container = self._get(name)
        with self.root(container) as root, _closing(root):
            dir_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root.fd)
            try:
                with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    inroot.Packer(tar).add_children(dir_fd, "")
            finally:
                os.close(dir_fd)

    # ---- commit ----------------------------------------------------------------
    def commit(self, name: str, ref: str | None, options: CommitOptions):
        """A new image: the container's image and one layer of its changes."""
        config_changes = parse_changes(options.changes)
        if options.fmt not in ("oci", "docker"):
            raise UsageError(f"unrecognized image type {options.fmt!r}", hint="use oci or docker")
        if options.message and options.fmt != "docker":
            raise UsageError("messages are only compatible with the docker image format (-f docker)")
        container = self._get(name)
        images = self.containers.images
        if ref is not None:
            from ferry.image import reference
            try:
                ref = reference.parse_local(ref).name
            except FerryError:
                raise UsageError("invalid reference format") from None
        base = images.get(container.image_id)
        config = commit_config(base.config, container.config, config_changes)
        upper = self.containers.files(container.id).upper
        with tempfile.NamedTemporaryFile(dir=self._tmp(), suffix=".tar") as layer:
            write_layer(upper, layer, skip=MOUNT_POINTS)
            layer.flush()
            shown = container.config.image or base.id[:12]
            image = images.commit_layer(base, layer.name, ref, config, comment=options.message
                                        or f"FROM {shown}", author=options.author)
        from ferry.engine import events
        events.note_by(self.containers, container, "commit")   # podman's is a container event, not an image one
        return image


@contextlib.contextmanager
def _closing(root: Root):
    try:
        yield root
    finally:
        os.close(root.fd)


def _host_path(path: str) -> str:
    """An absolute host path, keeping a trailing slash."""
    absolute = os.path.abspath(path)
    return absolute + "/" if path.endswith("/") and absolute != "/" else absolute


def _wants_contents(path: str) -> bool:
    """`SRC/.`: the directory's contents rather than the directory."""
    return path.endswith("/.") or path == "."


def _parent_is_dir(fd: int, rel: str, resolve: int) -> bool:
    head, _ = inroot.split(rel)
    try:
        os.close(inroot.open_dir(fd, head, resolve))
        return True
    except OSError:
        return False


def _copy_stream(source: BinaryIO, sink) -> None:
    while chunk := source.read(inroot.CHUNK):
        sink.write(chunk)


def _is_tar(spool) -> bool:
    try:
        with tarfile.open(fileobj=spool, mode="r:*"):
            return True
    except (tarfile.TarError, EOFError):
        return False
    finally:
        spool.seek(0)


def _read_db(root_fd: int, rel: str, limit: int = 1 << 20) -> list[list[str]]:
    """Colon-separated lines (passwd, group) of a file inside the root."""
    try:
        fd = inroot.openat2(root_fd, rel, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        text = f.read(limit).decode(errors="replace")
    return [line.split(":") for line in text.splitlines() if line.count(":") >= 3]


# ---- changes of an overlay upper dir ---------------------------------------------

def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(dir_fd: int, name: str) -> bool:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False
    finally:
        os.close(fd)


def in_layers(layers_lowest_first: list[str], rel: str) -> bool:
    """Whether the stacked layers show `rel`: each layer walked name by name
    without following its links; a whiteout or an opaque dir hides lower ones."""
    parts = [p for p in rel.split("/") if p]
    for layer in reversed(layers_lowest_first):
        path = layer
        for i, part in enumerate(parts):
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except OSError:
                break
            if _is_whiteout(st):
                return False
            if i == len(parts) - 1:
                return True
            if not stat.S_ISDIR(st.st_mode):
                return False   # a file or link here hides lower layers' dirs
            try:
                if os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y":
                    return _below(path, parts[i + 1:])
            except OSError:
                pass
    return False


def _below(path: str, parts: list[str]) -> bool:
    for part in parts:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if _is_whiteout(st):
            return False
    return True


def tree_changes(upper: str, lower: list[str], *, skip: frozenset[str]) -> Changes:
    """podman's diff of an upper dir over its lower layers."""
    changes = Changes([], [], [])
    if not os.path.isdir(upper):
        return changes
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(upper, follow_symlinks=False):
        dirnames.sort()
        rel_dir = "/" + os.path.relpath(dirpath, upper).lstrip(".").lstrip("/")
        for name in sorted(dirnames + filenames):
            path = posixpath.join(rel_dir, name)
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if path in skip:
                continue
            if _is_whiteout(st):
                if in_layers(lower, path):
                    changes.deleted.append(path)
                continue
            if stat.S_ISDIR(st.st_mode) and _is_opaque(dir_fd, name):
                changes.added.append(path)
                continue
            (changes.changed if in_layers(lower, path) else changes.added).append(path)
    return Changes(*(sorted(paths) for paths in changes))


def write_layer(upper: str, out: BinaryIO, *, skip: frozenset[str]) -> None:
    """An OCI layer tar of an upper dir: whiteouts as `.wh.NAME`, an opaque
    dir with `.wh..wh..opq`; the files the runtime binds over left out."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if not os.path.isdir(upper):
            return
        root = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _layer_dir(tar, root, "", skip)
        finally:
            os.close(root)


def _layer_dir(tar: tarfile.TarFile, dir_fd: int, rel: str, skip: frozenset[str]) -> None:
    packer = inroot.Packer(tar)
    for name in sorted(os.listdir(dir_fd)):
        path = f"{rel}/{name}" if rel else name
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if "/" + path in skip and not stat.S_ISDIR(st.st_mode):
            continue   # a file the runtime bound over; a dir (/run) may hold the user's files
        if _is_whiteout(st):
            info = tarfile.TarInfo(f"{rel}/{WHITEOUT_PREFIX}{name}" if rel else WHITEOUT_PREFIX + name)
            tar.addfile(info)
            continue
        if not stat.S_ISDIR(st.st_mode):
            packer.add(dir_fd, name, path, st)
            continue
        info = tarfile.TarInfo(path)
        info.type, info.mode = tarfile.DIRTYPE, stat.S_IMODE(st.st_mode)
        info.uid, info.gid, info.mtime = st.st_uid, st.st_gid, int(st.st_mtime)
        tar.addfile(info)
        if _is_opaque(dir_fd, name):
            tar.addfile(tarfile.TarInfo(f"{path}/{OPAQUE_MARKER}"))
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            _layer_dir(tar, child, path, skip)
        finally:
            os.close(child)


# ---- commit's config -------------------------------------------------------------

CHANGE_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER",
                       "VOLUME", "WORKDIR")


def _bad_change(text: str, why: str) -> UsageError:
    return UsageError(f'invalid change "{text}" - {why}')


def _command_form(value: str) -> list[str]:
    """CMD/ENTRYPOINT: a JSON list, else a shell command."""
    if value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed):
            return parsed
    return ["/bin/sh", "-c", value]


def _pairs(text: str, value: str, *, spaced: bool) -> list[tuple[str, str]]:
    """KEY=VALUE words (shell-quoted), or `KEY VALUE` when there is no `=`."""
    if "=" not in value.split(None, 1)[0]:
        if not spaced:
            raise _bad_change(text, "must be formatted as KEY=VALUE")
        key, _, rest = value.partition(" ")
        if not rest.strip():
            raise _bad_change(text, "must be formatted as KEY VALUE")
        return [(key, rest.strip())]
    try:
        words = shlex.split(value)
    except ValueError as error:
        raise _bad_change(text, str(error)) from None
    out = []
    for word in words:
        key, equals, val = word.partition("=")
        if not equals or not key:
            raise _bad_change(text, f"{word!r} must be formatted as KEY=VALUE")
        out.append((key, val))
    return out


def parse_changes(changes: tuple[str, ...] | list[str]) -> list[tuple[str, object]]:
    """`-c INSTRUCTION VALUE` lines as (instruction, parsed value), podman's errors."""
    parsed: list[tuple[str, object]] = []
    for text in changes:
        keyword, _, value = text.strip().partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if "=" in keyword and not value:
            keyword, _, value = text.strip().partition("=")
            keyword = keyword.upper()
        if not keyword or not value:
            raise _bad_change(text, "must be formatted as KEY VALUE")
        if keyword not in CHANGE_INSTRUCTIONS:
            raise _bad_change(text, f"invalid instruction {keyword}")
        if keyword in ("CMD", "ENTRYPOINT"):
            parsed.append((keyword, _command_form(value)))
        elif keyword in ("ENV", "LABEL"):
            parsed.append((keyword, _pairs(text, value, spaced=True)))
        elif keyword == "EXPOSE":
            port, _, proto = value.partition("/")
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise _bad_change(text, f"EXPOSE port must be an integer: {port!r}")
            if proto not in ("", "tcp", "udp", "sctp"):
                raise _bad_change(text, f"EXPOSE protocol must be tcp, udp or sctp, not {proto!r}")
            parsed.append((keyword, f"{int(port)}/{proto or 'tcp'}"))
        elif keyword == "VOLUME":
            paths = _command_form(value) if value.startswith("[") else value.split()
            if paths[:2] == ["/bin/sh", "-c"]:
                paths = value.split()
            for path in paths:
                if not path.startswith("/"):
                    raise _bad_change(text, f"volume {path!r} must be an absolute path")
            parsed.append((keyword, paths))
        else:   # USER, WORKDIR, STOPSIGNAL, ONBUILD
            parsed.append((keyword, value))
    return parsed


def commit_config(base, container_config, changes: list[tuple[str, object]]):
    """The new image's config: the image's, with the container's command,
    environment, working dir and user (as podman's commit), then the changes."""
    env = list(container_config.env) or list(base.env)
    labels = dict(base.labels)
    config = base._replace(cmd=tuple(container_config.command) or base.cmd,
                           entrypoint=tuple(container_config.args[:len(container_config.args)
                                                                   - len(container_config.command)]) or base.entrypoint,
                           working_dir=container_config.workdir if container_config.workdir not in ("", "/")
                           else base.working_dir,
                           user=container_config.user or base.user)
    exposed, volumes = list(base.exposed_ports), list(base.volumes)
    for keyword, value in changes:
        if keyword == "CMD":
            config = config._replace(cmd=tuple(value))
        elif keyword == "ENTRYPOINT":
            config = config._replace(entrypoint=tuple(value))
        elif keyword == "ENV":
            for key, val in value:
                env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={val}"]
        elif keyword == "LABEL":
            labels.update(value)
        elif keyword == "EXPOSE":
            exposed += [] if value in exposed else [value]
        elif keyword == "VOLUME":
            volumes += [v for v in value if v not in volumes]
        elif keyword == "USER":
            config = config._replace(user=value)
        elif keyword == "WORKDIR":
            config = config._replace(working_dir=posixpath.join(config.working_dir or "/", value))
        elif keyword == "STOPSIGNAL":
            config = config._replace(stop_signal=value)
    return config._replace(env=tuple(env), labels=tuple(sorted(labels.items())),
                           exposed_ports=tuple(exposed), volumes=tuple(sorted(volumes)))
