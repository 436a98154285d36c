"""Container root filesystems: an overlay of the image's layers and a private upper dir."""

from __future__ import annotations

import os

from ferry.util import proc
from ferry.util.errors import ToolError
from ferry.util.fs import mountinfo, mounts_under, resolved_tree, unmount_under

# The kernel takes mount options as one page.
MAX_MOUNT_OPTIONS = 4096


def mount_overlay(layers_lowest_first: list[str], upper: str, work: str, target: str) -> None:
    if not os.path.isdir(upper):
        make_upper(upper)
    for path in (work, target):
        os.makedirs(path, mode=0o755, exist_ok=True)
    lower = ":".join(reversed(layers_lowest_first))
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if len(options) >= MAX_MOUNT_OPTIONS:
        raise ToolError("mount the container's root filesystem", 1,
                        f"overlay options are {len(options)} bytes, over the kernel's page")
    if _is_our_overlay(target, upper):
        # Nothing belongs below it in this namespace: runc mounts in the
        # container's. A bind that an interrupted `runc restore` left there
        # would be copied into the next restore's criu-root.
        unmount_under(target, keep_top=True)
        return
    unmount_under(target)  # whatever else is there is no rootfs of ours
    # Private: under a shared parent (/ on systemd hosts) the overlay would join
    # its peer group, and so would criu-root, runc's recursive bind of it.
    proc.run(["mount", "--make-private", "-t", "overlay", "overlay", "-o", options, target],
             desc="mount the container's root filesystem")


# podman's storage gives every container root this mode, whatever its image's
# layers say (containers/storage drivers/overlay defaultPerms): the same here
# lets a ferry checkpoint restore under podman, whose CRIU checks the root's
# mode against the dump's ("File . has bad mode").
ROOT_MODE = 0o555


def make_upper(upper: str, mode: int = ROOT_MODE) -> None:
    """The container's upper dir, whose mode is its root's."""
    os.makedirs(upper, mode=0o700, exist_ok=True)
    os.chmod(upper, mode)


def make_shm_dir(path: str) -> None:
    """/dev/shm of a container in podman's shape: world-writable and sticky,
    as a tmpfs there would be (chmod: a umask would trim mkdir's mode)."""
    os.makedirs(path, mode=0o1777, exist_ok=True)
    os.chmod(path, 0o1777)


def _is_our_overlay(target: str, upper: str) -> bool:
    """One mount at `target`: an overlay over `upper`."""
    point = resolved_tree(target)
    at = [m for m in mountinfo() if m.point == point]
    return len(at) == 1 and at[0].fstype == "overlay" and f"upperdir={upper}," in at[0].options + ","


def is_mounted(target: str) -> bool:
    """Anything mounted at or below `target`."""
    return bool(mounts_under(target))


def unmount(target: str) -> None:
    unmount_under(target)
