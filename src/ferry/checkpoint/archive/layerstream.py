"""A checkpoint image's layer, unpacked by the image store, read back as the
archive it was made from, so that it takes the same reader, with the same
checks, as an archive file: names, sizes, digests, signature, allowlists.

The layer's files become a plain tar on a pipe, in the order the reader
wants: ferry's head first and its members as its trailer lists them (a
layer re-tarred by buildah keeps every byte but not the order), podman's
config.dump first otherwise. Only regular files travel: anything else in
the layer is refused here, before a byte is sent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from typing import Iterator

from ferry.checkpoint.archive.endpoints import Endpoint
from ferry.checkpoint.archive.manifest import (CHECKSUMS_NAME, MANIFEST_NAME, MAX_CHECKSUMS_BYTES, MAX_MEMBERS,
                                               SIGNATURE_NAME, Checksums, shown)
from ferry.checkpoint.archive.tarfmt import TAR_END, padding, tar_header
from ferry.checkpoint.foreign_layout import CONFIG_DUMP
from ferry.util.errors import BadArchive, FerryError, from_os_error

MAX_DEPTH = 8
COPY_CHUNK = 1 << 20
NOT_A_CHECKPOINT_HINT = "restore from an image made by 'checkpoint --create-image' or by podman, CRI-O or buildah"


def _refused(what: str, name: str, why: str) -> BadArchive:
    return BadArchive(f"{what}: its layer holds {shown(name)}, {why}", hint="the image is broken or forged; "
                      "do not restore it")


def layer_files(root: str, what: str) -> list[str]:
    """The regular files below `root`, relative; BadArchive for anything else."""
    found: list[str] = []

    def walk(directory: str, prefix: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _refused(what, prefix, f"nested deeper than {MAX_DEPTH} directories")
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = f"{prefix}{entry.name}"
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    walk(entry.path, f"{name}/", depth + 1)
                elif stat.S_ISREG(mode):
                    found.append(name)
                    if len(found) > MAX_MEMBERS:
                        raise _refused(what, name, f"beyond {MAX_MEMBERS} files")
                else:
                    kind = "a symlink" if stat.S_ISLNK(mode) else "a special file"
                    raise _refused(what, name, f"{kind}, which has no place in a checkpoint")
    walk(root, "", 0)
    return found


def archive_order(root: str, files: list[str], what: str) -> list[str]:
    """`files` in the order the archive had: ferry's head, its members as its
    trailer lists them, the rest, the trailer and the signature; or podman's
    config.dump first. BadArchive when the layer holds no checkpoint at all."""
    present = set(files)
    if MANIFEST_NAME in present:
        listed: list[str] = []
        if CHECKSUMS_NAME in present and os.path.getsize(os.path.join(root, CHECKSUMS_NAME)) <= MAX_CHECKSUMS_BYTES:
            with open(os.path.join(root, CHECKSUMS_NAME), "rb") as f:
                # A bad trailer is the reader's to name; only its order is wanted here.
                with contextlib.suppress(Exception):
                    listed = [m.name for m in Checksums.from_json(f.read()).members if m.name in present]
        ends = [n for n in (CHECKSUMS_NAME, SIGNATURE_NAME) if n in present]
        chosen = {MANIFEST_NAME, *listed, *ends}
        return [MANIFEST_NAME, *listed, *(n for n in files if n not in chosen), *ends]
    if CONFIG_DUMP in present:
        return [CONFIG_DUMP, *(n for n in files if n != CONFIG_DUMP)]
    raise BadArchive(f"{what} holds no checkpoint: its layer has neither ferry's {MANIFEST_NAME} nor podman's "
                     f"{CONFIG_DUMP}", hint=NOT_A_CHECKPOINT_HINT)


def _send_file(out: int, root: str, name: str) -> None:
    fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FerryError(f"{shown(name)} in the image's layer changed while it was read")
        os.write(out, tar_header(name, info.st_size, int(info.st_mtime)))
        sent = 0
        while sent < info.st_size:
            count = os.sendfile(out, fd, sent, min(COPY_CHUNK, info.st_size - sent))
            if count == 0:
                raise FerryError(f"{shown(name)} in the image's layer shrank while it was read")
            sent += count
        os.write(out, bytes(padding(info.st_size)))
    finally:
        os.close(fd)


@contextlib.contextmanager
def layer_endpoint(root: str, what: str) -> Iterator[Endpoint]:
    """The layer at `root` as an archive stream (the read end of a pipe) that
    a thread fills. A failure of that thread, other than the reader going
    away, is raised here in place of the truncation the reader saw."""
    names = archive_order(root, layer_files(root, what), what)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            for name in names:
                _send_file(write_fd, root, name)
            os.write(write_fd, TAR_END)
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                failure.append(from_os_error(exc, f"cannot read {what}"))
        except BaseException as exc:   # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)
        finally:
            os.close(write_fd)

    thread = threading.Thread(target=feed, name="ferry-layer-stream", daemon=True)
    thread.start()
    endpoint = Endpoint(read_fd, what, owned_fd=read_fd)
    try:
        yield endpoint
    finally:
        endpoint.close()   # a reader that stopped early ends the feeder with EPIPE
        thread.join()
        if failure:
            raise failure[0]
