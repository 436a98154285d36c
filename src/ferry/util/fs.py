"""File helpers: atomic writes (temp file in the same directory, fsync, rename)."""

from __future__ import annotations

import os
import re
import tempfile


def atomic_write(path: str, data: bytes | str, mode: int = 0o644) -> None:
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    """Make a rename or create in `directory` durable."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def mounts_under(path: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points at or below `path`, deepest first."""
    path = os.path.realpath(path)
    found = []
    with open(mountinfo) as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == path or point.startswith(path.rstrip("/") + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def remove_tree(path: str) -> None:
    """Delete a directory without ever deleting through a mount inside it.

    A failed CRIU restore can leave a bind mount of a container rootfs inside a
    state directory (HOST-NOTES), so unmount everything below first, deepest
    first, and never cross a filesystem boundary while deleting.
    """
    from ferry.util import proc
    if not os.path.lexists(path):
        return
    unmount_under(path)
    proc.run(["rm", "-rf", "--one-file-system", "--", path], desc=f"remove {path}")


def unmount_under(path: str) -> None:
    """Lazily unmount everything at or below `path`, deepest first."""
    from ferry.util import proc
    for point in mounts_under(path):
        proc.run(["umount", "-l", point], desc=f"unmount {point}", check=False)


def memory_available() -> int:
    """MemAvailable of /proc/meminfo, in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def tmpfs_if_it_fits(path: str, need: int | None) -> bool:
    """Mount a private tmpfs on the empty directory `path` when `need` bytes
    fit in memory with room to spare, and say whether it did. CRIU images
    written there cost no disk writeback, and deleting them is free."""
    from ferry.util import proc
    available = memory_available()
    if need is None or need + need // 4 + (512 << 20) > available:
        return False
    # The size is only a ceiling: tmpfs takes memory as files fill it. Huge
    # pages make CRIU's restore read its pages about 30% faster; a kernel
    # without them for tmpfs refuses the option, and small pages do.
    def mount(options: str, check: bool):
        return proc.run(["mount", "-t", "tmpfs", "-o", f"mode=0700,size={available}{options}",
                         "ferry-scratch", path], desc=f"mount a tmpfs on {path}", check=check)
    if mount(",huge=always", check=False).returncode != 0:
        mount("", check=True)
    return True


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
