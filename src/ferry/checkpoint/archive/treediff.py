"""The overlay diff format of rootfs-diff.tar and volumes/NAME.tar, as
podman writes it: a tar of an upper dir (or a volume) whose opaque dirs
carry the OCI opaque entry, and the list of paths it deletes, which a
restore turns back into overlay whiteouts."""

from __future__ import annotations

import os
import stat
import tarfile
from typing import Callable, Iterable

from ferry.image.layers import OPAQUE_MARKER, OPAQUE_XATTR, safe_relpath, unpack_layer
from ferry.util.errors import from_os_error

__all__ = ["write_tree_diff", "apply_tree_diff", "image_names_below"]


def write_tree_diff(tree: str, tar_path: str, *, opaque_xattr: str = OPAQUE_XATTR,
                    hidden_below: Callable[[str], Iterable[str]] | None = None) -> list[str]:
    """Tar an overlay upper dir (or any dir); return the paths it deletes.

    Overlay whiteouts (0/0 character devices) become the deleted list. An
    opaque directory (deleted and made again) is kept, and what it hides of
    the image goes in the list too: `hidden_below(dir)` names what the image
    has directly below it. That is how podman applies the list (unpack, then
    delete), and ferry turns each into a whiteout. Without hidden_below the
    directory is marked with the OCI opaque entry instead, which podman would
    unpack as a file. `opaque_xattr` is overlayfs's (user.overlay.* for a
    userxattr mount, and for tests without root).
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
                if stat.S_ISDIR(info.st_mode) and _is_opaque(path, opaque_xattr):
                    tar.add(path, arcname=rel, recursive=False)
                    if hidden_below is None:
                        deleted.append(rel)
                        tar.addfile(tarfile.TarInfo(os.path.join(rel, OPAQUE_MARKER)))
                    else:
                        kept = set(os.listdir(path))
                        deleted += [os.path.join(rel, n) for n in sorted(set(hidden_below(rel)) - kept)]
                    continue
                if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) or stat.S_ISSOCK(info.st_mode):
                    continue  # device nodes and sockets do not travel
                tar.add(path, arcname=rel, recursive=False)
    return deleted


def _is_opaque(path: str, opaque_xattr: str) -> bool:
    try:
        return os.getxattr(path, opaque_xattr, follow_symlinks=False) == b"y"
    except OSError:
        return False


def apply_tree_diff(tar_path: str, target: str, deleted: tuple[str, ...], *,
                    opaque_xattr: str = OPAQUE_XATTR) -> None:
    """Unpack a diff into an upper dir (or volume) with the image layer's safe
    unpacker, then turn each deleted path into an overlay whiteout."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
        with open(tar_path, "rb") as source:
            unpack_layer(source, target, opaque_xattr=opaque_xattr)
        os.chmod(target, mode)
        for path in deleted:
            rel = safe_relpath(path, "deleted file")
            full = os.path.join(target, rel)
            parent = os.path.dirname(full)
            if not rel or os.path.lexists(full) or os.path.realpath(parent) != parent:
                continue  # kept by the diff (an opaque dir), or not safely reachable
            os.makedirs(parent, exist_ok=True)
            os.mknod(full, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    except OSError as exc:   # a full disk, or a name the filesystem refuses
        raise from_os_error(exc, f"cannot unpack {os.path.basename(tar_path)} into {target}") from None


def image_names_below(layers_lowest_first: list[str], rel: str, *, opaque_xattr: str = OPAQUE_XATTR) -> set[str]:
    """The names an image's unpacked layers show directly below directory
    `rel`, as overlayfs merges them: whiteouts and opaque dirs hide lower ones."""
    names: set[str] = set()
    hidden: set[str] = set()
    for layer in reversed(layers_lowest_first):
        path = os.path.join(layer, rel)
        if os.path.realpath(path) != os.path.join(os.path.realpath(layer), rel) or not os.path.isdir(path):
            break   # a file or a link there hides whatever lower layers hold
        with os.scandir(path) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                    hidden.add(entry.name)
                elif entry.name not in hidden:
                    names.add(entry.name)
        if _is_opaque(path, opaque_xattr):
            break
    return names
