"""Container root filesystems: an overlay of the image's layers and a private upper dir."""

from __future__ import annotations

import os

from ferry.util import proc
from ferry.util.errors import ToolError
from ferry.util.fs import mounts_under

# The kernel takes mount options as one page.
MAX_MOUNT_OPTIONS = 4096


def mount_overlay(layers_lowest_first: list[str], upper: str, work: str, target: str) -> None:
    for path in (upper, work, target):
        os.makedirs(path, mode=0o755, exist_ok=True)
    if is_mounted(target):
        return
    lower = ":".join(reversed(layers_lowest_first))
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if len(options) >= MAX_MOUNT_OPTIONS:
        raise ToolError("mount the container's root filesystem", 1,
                        f"overlay options are {len(options)} bytes, over the kernel's page")
    proc.run(["mount", "-t", "overlay", "overlay", "-o", options, target],
             desc="mount the container's root filesystem")


def is_mounted(target: str) -> bool:
    return os.path.realpath(target) in mounts_under(target)


def unmount(target: str) -> None:
    for point in mounts_under(target):
        proc.run(["umount", point], desc=f"unmount {point}", check=False)
        if point in mounts_under(point):
            proc.run(["umount", "-l", point], desc=f"lazily unmount {point}")
