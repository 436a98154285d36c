"""Files inside a container's root, reached without ever leaving it.

A container's files are hostile: a symlink there may point anywhere on the
host. Every path is resolved by the kernel with openat2(RESOLVE_IN_ROOT), so
absolute links and `..` stay inside the root given, and every entry is then
made or read through a directory fd, never by a host path. Trees travel as
tar streams (what `cp -` reads and writes), packed and unpacked here.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import tarfile
from typing import BinaryIO, Callable, NamedTuple

SYS_OPENAT2 = 437           # x86-64 and arm64 alike
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
# A container root: no mount crossing, no /proc magic links, `/` is the root.
IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
CHUNK = 1 << 20


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = None


def openat2(dir_fd: int, path: str, flags: int, resolve: int = IN_ROOT, mode: int = 0) -> int:
    """The kernel's openat2; OSError as os.open raises it."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = _libc.syscall(SYS_OPENAT2, ctypes.c_int(dir_fd), os.fsencode(path or "."), ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


class Entry(NamedTuple):
    """One resolved entry: its parent dir (an O_PATH fd) and its name there,
    with its lstat; the root itself has name "" and parent the root's fd."""
    parent: int
    name: str
    info: os.stat_result


def split(rel: str) -> tuple[str, str]:
    """'a/b/c' -> ('a/b', 'c')."""
    rel = rel.strip("/")
    head, _, tail = rel.rpartition("/")
    return head, tail


def open_dir(root: int, rel: str, resolve: int = IN_ROOT) -> int:
    """An O_PATH fd of directory `rel` below `root` (symlinks followed, inside it)."""
    return openat2(root, rel.strip("/") or ".", os.O_PATH | os.O_DIRECTORY, resolve)


def lookup(root: int, rel: str, resolve: int = IN_ROOT) -> Entry:
    """The entry at `rel` itself (a final symlink is not followed);
    FileNotFoundError/NotADirectoryError when it is not there."""
    head, name = split(rel)
    if not name:
        return Entry(os.dup(root), "", os.stat(root))
    parent = open_dir(root, head, resolve)
    try:
        return Entry(parent, name, os.stat(name, dir_fd=parent, follow_symlinks=False))
    except OSError:
        os.close(parent)
        raise


def _info(name: str, st: os.stat_result, link: str = "") -> tarfile.TarInfo | None:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = int(st.st_mtime)
    if stat.S_ISREG(st.st_mode):
        info.type, info.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, link
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
    else:
        return None   # device nodes and sockets do not travel
    return info


class Packer:
    """Writes entries below a dir fd into a tar, hard links as links."""

    def __init__(self, tar: tarfile.TarFile, skip: Callable[[str], bool] = lambda rel: False):
        self.tar = tar
        self.skip = skip
        self.seen: dict[tuple[int, int], str] = {}

    def add(self, parent: int, name: str, arcname: str, st: os.stat_result | None = None) -> None:
        """One entry (a dir with all below it), named `arcname` in the tar."""
        if st is None:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        link = os.readlink(name, dir_fd=parent) if stat.S_ISLNK(st.st_mode) else ""
        info = _info(arcname, st, link)
        if info is None:
            return
        key = (st.st_dev, st.st_ino)
        if info.type == tarfile.REGTYPE and st.st_nlink > 1 and key in self.seen:
            info.type, info.size, info.linkname = tarfile.LNKTYPE, 0, self.seen[key]
            self.tar.addfile(info)
            return
        if info.type == tarfile.REGTYPE:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
            with os.fdopen(fd, "rb") as source:
                now = os.fstat(fd)
                if not stat.S_ISREG(now.st_mode):
                    return   # swapped under us
                info.size = now.st_size
                self.tar.addfile(info, _Exactly(source, now.st_size))
            if st.st_nlink > 1:
                self.seen[key] = arcname
            return
        self.tar.addfile(info)
        if info.type == tarfile.DIRTYPE:
            fd = os.open(name or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                self.add_children(fd, arcname)
            finally:
                os.close(fd)

    def add_children(self, dir_fd: int, arcname: str) -> None:
        for child in sorted(os.listdir(dir_fd)):
            rel = f"{arcname}/{child}" if arcname else child
            if not self.skip(rel):
                try:
                    self.add(dir_fd, child, rel)
                except FileNotFoundError:
                    continue   # removed while we walked


class _Exactly:
    """A file's first `size` bytes, zeros after it if it shrank meanwhile:
    the tar header already promised `size`."""

    def __init__(self, source: BinaryIO, size: int):
        self.source, self.left = source, size

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.source.read(size)
        data += b"\0" * (size - len(data))
        self.left -= len(data)
        return data


class Conflicting(Exception):
    """An entry of one type where the archive brings another (no --overwrite)."""


def _member_path(name: str) -> list[str]:
    """A tar member's name as components; absolute names and `..` refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"archive member {name!r} climbs out with '..'")
    return parts


class Unpacker:
    """Extracts a tar below `dest` (a path relative to `root`), each member's
    parent resolved inside `root`. `top` renames the archive's first path
    component (None keeps it, "" drops it: the contents go into dest). Without
    `setid`, set-user-ID and set-group-ID bits are dropped: a container's file
    must not become a privileged program on the host."""

    def __init__(self, root: int, dest: str, *, resolve: int = IN_ROOT, top: str | None = None,
                 owner: tuple[int, int] | None = None, overwrite: bool = False, setid: bool = True):
        self.root, self.dest, self.resolve = root, dest.strip("/"), resolve
        self.top, self.owner, self.overwrite = top, owner, overwrite
        self.mode_bits = 0o7777 if setid else 0o1777
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []

    def target(self, name: str) -> str | None:
        parts = _member_path(name)
        if self.top is not None and parts:
            parts = ([self.top] if self.top else []) + parts[1:]
        if not parts:
            return None   # dest itself
        return "/".join(([self.dest] if self.dest else []) + parts)

    def check_all(self, tar: tarfile.TarFile) -> None:
        """Conflicting for the first member that would need --overwrite, before
        anything is written: a refused copy leaves nothing half done."""
        if self.overwrite:
            return
        for member in tar:
            rel = self.target(member.name)
            if rel is None:
                continue
            try:
                entry = lookup(self.root, rel, self.resolve)
            except OSError:
                continue   # not there (yet): nothing to clash with
            os.close(entry.parent)
            if stat.S_ISDIR(entry.info.st_mode) != member.isdir():
                raise Conflicting(entry.name)

    def extract_all(self, tar: tarfile.TarFile) -> None:
        for member in tar:
            self.extract(tar, member)
        for rel, member in reversed(self.dirs):
            try:
                fd = openat2(self.root, rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, self.resolve)
            except OSError:
                continue
            try:
                self._metadata(fd, member)
            finally:
                os.close(fd)

    def extract(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = self.target(member.name)
        if rel is None:
            return
        head, name = split(rel)
        parent = open_dir(self.root, head, self.resolve)
        try:
            self._extract_at(tar, member, parent, name, rel)
        finally:
            os.close(parent)

    def _clear(self, parent: int, name: str, want_dir: bool) -> None:
        """Make room for the member: a dir stays for a dir, anything else goes."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and want_dir:
            return
        if is_dir != want_dir and not self.overwrite:
            raise Conflicting(name)
        if is_dir:
            shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)

    def _extract_at(self, tar, member: tarfile.TarInfo, parent: int, name: str, rel: str) -> None:
        if member.isdir():
            self._clear(parent, name, True)
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
            except FileExistsError:
                pass
            self.dirs.append((rel, member))
            return
        if member.isreg():
            self._clear(parent, name, False)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent)
            with os.fdopen(fd, "wb") as out:
                source = tar.extractfile(member)
                while chunk := source.read(CHUNK):
                    out.write(chunk)
                out.flush()
                self._metadata(fd, member)
            return
        if member.issym():
            self._clear(parent, name, False)
            os.symlink(member.linkname, name, dir_fd=parent)
            uid, gid = self.owner or (member.uid, member.gid)
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
            return
        if member.islnk():
            target = self.target(member.linkname)
            if target is None:
                return
            self._clear(parent, name, False)
            src = lookup(self.root, target, self.resolve)
            try:
                if not stat.S_ISREG(src.info.st_mode):
                    return
                os.link(src.name, name, src_dir_fd=src.parent, dst_dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(src.parent)
            return
        if member.isfifo():
            self._clear(parent, name, False)
            os.mkfifo(name, 0o600, dir_fd=parent)
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                uid, gid = self.owner or (member.uid, member.gid)
                os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
                os.chmod(f"/proc/self/fd/{fd}", member.mode & self.mode_bits)
            finally:
                os.close(fd)
        # devices are not made: a container's archive must not hand out host devices

    def _metadata(self, fd: int, member: tarfile.TarInfo) -> None:
        uid, gid = self.owner or (member.uid, member.gid)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, member.mode & self.mode_bits)   # after chown, which clears set-id bits
        os.utime(fd, (member.mtime, member.mtime))


def is_missing(error: OSError) -> bool:
    return error.errno in (errno.ENOENT, errno.ENOTDIR)
