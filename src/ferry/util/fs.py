"""File helpers: atomic writes (temp file in the same directory, fsync, rename),
and removing trees that may hold mounts without touching any mount outside them."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import namedtuple

from ferry.util.errors import ToolError


def atomic_write(path: str, data: bytes | str, mode: int = 0o600) -> None:
    if isinstance(data, str):
        data = data.encode()
    import tempfile
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    except OSError as error:
        raise _naming(error, path)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError):
            raise _naming(error, path)
        raise
    fsync_dir(directory)


def write_scratch(path: str, data: bytes | str, mode: int = 0o600) -> None:
    """A file that this command reads back and removes (an archive's staged
    member): neither atomic nor synced, as a crash leaves it for the next
    command to overwrite. atomic_write's two fsyncs cost 5-20 ms a file here."""
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
    finally:
        os.close(fd)


def _naming(error: OSError, path: str) -> OSError:
    """The error, naming the file the caller asked for rather than its temp file."""
    error.filename, error.filename2 = path, None
    return error


def remove_file(path: str) -> None:
    """Unlink PATH; one already gone is what the caller wanted."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def fsync_dir(directory: str) -> None:
    """Make a rename or create in `directory` durable."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# linux/mount.h
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
# Stacked mounts on one point come off one per round; more than this many is
# not a leftover of ferry's but something still mounting.
UNMOUNT_ROUNDS = 16


class Mount(namedtuple("Mount", "id parent point fstype source options")):
    """One line of /proc/self/mountinfo, with its escapes decoded."""
    __slots__ = ()


def mountinfo(path: str = "/proc/self/mountinfo") -> list[Mount]:
    mounts = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            tail = fields.index("-", 6) + 1  # optional fields (shared:N...) end at "-"
            mounts.append(Mount(int(fields[0]), int(fields[1]), _unescape(fields[4]), fields[tail],
                                _unescape(fields[tail + 1]), _unescape(fields[tail + 2])))
    return mounts


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def resolved_tree(path: str) -> str | None:
    """`path` as mountinfo spells it: the symlinks above it resolved, but not
    `path` itself. A symlink where a tree of ours should be leads out of it,
    so it has no mounts of ours (None)."""
    path = os.path.abspath(path)
    if os.path.islink(path):
        return None
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _within(point: str, top: str) -> bool:
    # By whole components: /a/bc is not under /a/b.
    return point == top or point.startswith(top.rstrip("/") + "/")


def _depth(point: str) -> int:
    return point.rstrip("/").count("/")


def mounts_under(path: str, mountinfo_path: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points at or below `path`, deepest first."""
    top = resolved_tree(path)
    if top is None:
        return []
    found = {m.point for m in mountinfo(mountinfo_path) if _within(m.point, top)}
    return sorted(found, key=_depth, reverse=True)


def unmount_under(path: str, *, keep_top: bool = False) -> None:
    """Detach every mount at or below `path` (with `keep_top`, only those below
    it), and nothing outside it.

    Every mount is made private before anything below it is unmounted: a bind of
    a shared mount (a -v of /run/netns; runc's criu-root over a rootfs holding
    one) is a peer of the host's, and an unmount below one peer unmounts the
    same point below all of them (HOST-NOTES: every netns vanished once). Each
    mount is reached from `path` without following a symlink, so a container
    that turns a directory of its rootfs into a symlink cannot steer this out
    of the tree, and it is detached only if it is still the mount that was
    listed under `path`.
    """
    top = resolved_tree(path)
    if top is None:
        return
    if top == "/":
        raise ValueError("refusing to unmount everything under /")
    for _ in range(UNMOUNT_ROUNDS):
        mounts = [m for m in mountinfo() if _within(m.point, top) and not (keep_top and m.point == top)]
        if not mounts:
            return
        ours = {m.id for m in mounts}
        # Parents first, so that no unmount below can propagate; then each
        # mount again as it is detached: one that another covered is reached
        # only once the cover is gone.
        for m in sorted(mounts, key=lambda m: _depth(m.point)):
            _at(top, m.point, ours, _make_private)
        for m in sorted(mounts, key=lambda m: _depth(m.point), reverse=True):
            _at(top, m.point, ours, _detach)
    left = [p for p in mounts_under(path) if not (keep_top and p == top)]
    if left:
        raise ToolError(f"unmount {left[0]}", 1, f"still mounted after {UNMOUNT_ROUNDS} rounds")


def _at(top: str, point: str, ours: set[int], action) -> None:
    """action("/proc/self/fd/N", point) on the mount at `point`, reached from
    `top` component by component without following a symlink, if it is one of
    `ours`; a path that leads elsewhere is skipped."""
    relative = os.path.relpath(point, top)
    parts = [] if relative == "." else relative.split("/")
    try:
        fd = os.open(top, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if parts else 0))
    except OSError:
        return  # gone meanwhile
    try:
        try:
            for i, part in enumerate(parts):
                flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if i < len(parts) - 1 else 0)
                inner = os.open(part, flags, dir_fd=fd)
                os.close(fd)
                fd = inner
        except OSError as error:  # a symlink or a vanished directory on the way
            _log().debug("skip %s: %s", point, error)
            return
        if stat.S_ISLNK(os.fstat(fd).st_mode) or _mount_id(fd) not in ours:
            return  # replaced since mountinfo was read: not the mount we listed
        action(f"/proc/self/fd/{fd}", point)
    finally:
        os.close(fd)


def _mount_id(fd: int) -> int | None:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    return None


_libc_handle = None


def _libc():
    global _libc_handle
    if _libc_handle is None:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                               ctypes.c_void_p)
        libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
        _libc_handle = libc
    return _libc_handle


def _make_private(target: str, point: str) -> None:
    _log().debug("make private %s", point)
    if _libc().mount(None, target.encode(), None, MS_PRIVATE | MS_REC, None) != 0:
        # Unmounting below a mount that may still have peers could reach the host.
        code = _errno()
        raise ToolError(f"make {point} private before unmounting it", 1, os.strerror(code))


def _detach(target: str, point: str) -> None:
    _make_private(target, point)
    _log().debug("detach %s", point)
    if _libc().umount2(target.encode(), MNT_DETACH) != 0 and _errno() != errno.EINVAL:
        _log().debug("unmount %s: %s", point, os.strerror(_errno()))  # the rounds retry, then report


def _errno() -> int:
    import ctypes
    return ctypes.get_errno()


def _log():
    from ferry.util.log import get_logger
    return get_logger("ferry.fs")


def remove_tree(path: str) -> None:
    """Delete a directory without ever deleting through a mount inside it.

    A failed CRIU restore can leave a bind mount of a container rootfs inside a
    state directory (HOST-NOTES), so unmount everything below first, and never
    cross a filesystem boundary while deleting. A symlink is removed, never
    followed.
    """
    from ferry.util import proc
    if not os.path.lexists(path):
        return
    if os.path.islink(path):
        os.unlink(path)
        return
    unmount_under(path)
    proc.run(["rm", "-rf", "--one-file-system", "--", path], desc=f"remove {path}")


def read_small_file(path: str, what: str, limit: int) -> bytes:
    """A small file the user named (a key, a passphrase), never more than `limit`
    bytes of it read: one line for each way it cannot be one."""
    from ferry.util.errors import NotFound, UsageError, from_os_error
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise NotFound(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise from_os_error(exc, f"cannot read {what} {path}") from None
    if len(data) > limit:
        raise UsageError(f"{what} {path} is too large (larger than {limit} bytes)")
    return data


def tree_size(path: str) -> int:
    """The bytes of the files under `path` (apparent sizes; what vanishes meanwhile counts 0)."""
    total = 0
    for directory, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


def memory_available() -> int:
    """MemAvailable of /proc/meminfo, in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def tmpfs_if_it_fits(path: str, need: int | None, *, exact: bool = False) -> bool:
    """Mount a private tmpfs on the empty directory `path` when `need` bytes
    fit in memory with room to spare, and say whether it did. CRIU images
    written there cost no disk writeback, and deleting them is free.

    With `exact`, the tmpfs holds `need` and a margin, no more: `need` came
    from an archive, which must not be able to fill the host's memory."""
    from ferry.util import proc
    available = memory_available()
    if need is None or need + need // 4 + (512 << 20) > available:
        return False
    # Huge pages make CRIU's restore read its pages about 30% faster; a kernel
    # without them for tmpfs refuses the option, and small pages do. Under a
    # size limit, huge=always would charge each small image a whole 2 MiB
    # page (30 one-byte files took 60 MiB here); within_size charges them 4 KiB.
    size, huge = (need + need // 16 + EXACT_TMPFS_MARGIN, "within_size") if exact else (available, "always")
    def mount(options: str, check: bool):
        # Private: under a shared parent (/ on systemd hosts) it would join
        # that peer group, and mounts and unmounts would travel both ways.
        return proc.run(["mount", "--make-private", "-t", "tmpfs", "-o", f"mode=0700,size={size}{options}",
                         "ferry-scratch", path], desc=f"mount a tmpfs on {path}", check=check)
    if mount(f",huge={huge}", check=False).returncode != 0:
        mount("", check=True)
    return True


EXACT_TMPFS_MARGIN = 64 << 20   # directories, and the 4 KiB pages of small files


def remove_tree_later(path: str) -> None:
    """Move a tree out of the way now and delete it in the background: a GiB of
    CRIU images takes 0.4 s to unlink, which no caller should wait for."""
    from ferry.util import proc
    if not os.path.lexists(path):
        return
    if mounts_under(path):
        remove_tree(path)  # never hand a tree with mounts to an unattended rm
        return
    trash = os.path.join(os.path.dirname(path), f".trash-{os.path.basename(path)}-{os.getpid()}-{id(path):x}")
    os.rename(path, trash)
    proc.spawn(["rm", "-rf", "--one-file-system", trash], desc=f"remove {trash}", new_session=True)
