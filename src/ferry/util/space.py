"""Full filesystems: telling one apart, and saying which and what to do.

Light on purpose (os and errno): the state store asks it on every command.
"""

from __future__ import annotations

import errno
import os

from ferry.util.errors import DiskFull

# What a write fails with when its filesystem has no room, or its owner no quota, left.
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# A filesystem with less than this free (for root, who may use ext4's reserved
# blocks) counts as full: SQLite alone wants 32 KiB for its shared memory and a
# page per change, runc a few KiB for its state.
FULL_BELOW = 1 << 20
# ext4 keeps back min(2 %, 4096 clusters) that statfs counts as free but no
# file can use (s_resv_clusters): a full 64 MiB ext4 shows 1.3 MiB free.
EXT4_RESERVED_SHARE, EXT4_RESERVED_CLUSTERS = 50, 4096
# Left free on a disk after ferry stages, unpacks or spools onto it.
DISK_MARGIN = 256 << 20
# Bytes a bounded write goes between two looks at its filesystem's free space:
# others write there too, but a statvfs per chunk would cost more than it tells.
RECHECK_EVERY = 8 << 20


def is_no_space(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS


def _existing(path: str) -> str:
    """`path`, or its nearest ancestor that exists."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def mount_point(path: str) -> str:
    """Where the filesystem holding `path` is mounted."""
    path = os.path.realpath(_existing(path))
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def is_full(path: str) -> bool:
    """Whether the filesystem holding `path` has (next to) no room or no inodes left."""
    try:
        info = os.statvfs(_existing(path))
    except OSError:
        return False
    if info.f_files and not info.f_ffree:   # btrfs and others report no inode counts (0)
        return True
    if os.geteuid() != 0:
        return info.f_bavail * info.f_frsize < FULL_BELOW
    hidden = min(info.f_blocks // EXT4_RESERVED_SHARE, EXT4_RESERVED_CLUSTERS) * info.f_frsize
    if info.f_bfree * info.f_frsize >= FULL_BELOW + hidden:
        return False   # without reading mountinfo, as most calls go
    return info.f_bfree * info.f_frsize < FULL_BELOW + (hidden if fs_type(path) == "ext4" else 0)


def fs_type(path: str) -> str:
    """The type of the filesystem holding `path` (ext4, tmpfs...), or ""."""
    from ferry.util.fs import mountinfo
    point = mount_point(path)
    try:
        found = [m.fstype for m in mountinfo() if m.point == point]
    except (OSError, ValueError, IndexError):
        return ""
    return found[-1] if found else ""   # the last mount on a point is the visible one


def no_space(what: str, place: str, code: int = errno.ENOSPC) -> DiskFull:
    """DiskFull: `what` failed for want of room (ENOSPC) or quota (EDQUOT); the
    hint names the filesystem that holds `place`."""
    reason = os.strerror(code)
    return DiskFull(f"{what}: {reason[0].lower()}{reason[1:]}", hint=space_hint(place, code))


def space_hint(place: str, code: int = errno.ENOSPC) -> str:
    """What to do about a full filesystem: free space on the one holding `place`
    (and where it is mounted, when that is elsewhere)."""
    mount = mount_point(place)
    where = place if mount == os.path.realpath(place) else f"{place} (mounted at {mount})"
    if code == errno.EDQUOT:
        action = "free space, or raise the quota, on"
    elif _no_inodes(place):
        action = "delete files on"
        where += ", which has no inodes left"
    else:
        action = "free space on"
    return f"{action} the filesystem of {where}"


def _no_inodes(path: str) -> bool:
    try:
        info = os.statvfs(_existing(path))
    except OSError:
        return False
    return bool(info.f_files) and not info.f_ffree


def disk_free(path: str) -> int:
    """Bytes an unprivileged writer may still put on path's filesystem."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def margin(path: str) -> int:
    """Room left free after staging, unpacking or spooling: DISK_MARGIN, or a
    twentieth of a small filesystem (a 64 MiB root must still take a small archive)."""
    info = os.statvfs(path)
    return min(DISK_MARGIN, info.f_blocks * info.f_frsize // 20)


class BoundedWriter:
    """Writes to `sink`, a file on the filesystem of `place`, that stop with
    DiskFull before they would leave less than margin(place) free there: for
    a stream whose size is unknown until it ends (stdin, a tree being packed)."""

    def __init__(self, sink, place: str, what: str):
        self.sink, self.place, self.what = sink, place, what
        self.written = 0
        self._look()

    def _look(self) -> None:
        # What is written is already out of the free count (the sink is on this
        # filesystem), so it counts towards what may still be written.
        self.looked_at = self.written
        self.allowed = self.written + disk_free(self.place) - margin(self.place)

    def write(self, data) -> int:
        if self.written - self.looked_at >= RECHECK_EVERY:
            self._look()
        if self.written + len(data) > self.allowed:
            raise DiskFull(f"{self.what}: stopped after {size_text(self.written)}, as more would leave less than "
                           f"{size_text(margin(self.place))} free under {self.place}",
                           hint=space_hint(self.place))
        self.sink.write(data)
        self.written += len(data)
        return len(data)


def size_text(count: int) -> str:
    """1.5 GiB, 12.0 MiB, 300 bytes: for messages."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift:
            return f"{count / (1 << shift):.1f} {unit}"
    return f"{count} bytes"
