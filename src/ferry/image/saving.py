"""Images written out as archives, the two kinds `podman save` writes and
`ferry load` reads: docker-archive (manifest.json, the config, one
uncompressed tar per layer) and oci-archive (an OCI image layout in a tar).

Layers come from the tars the store keeps (zstd of the exact bytes their
diff_id names), checked against that diff_id as they are copied; the config
is the stored blob itself, so the image keeps its ID wherever it is loaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Iterator

from ferry.image import digest as digests
from ferry.image.layers import decompressed
from ferry.image.manifest import OCI_LAYER, OCI_LAYER_ZSTD, OCI_MANIFEST, manifest_document
from ferry.util.errors import NotFound, UsageError, from_os_error

FORMATS = ("docker-archive", "oci-archive")
NAME_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Stored:
    """An image as the store keeps it: what writing it out needs."""
    id: str
    shown: str                      # how messages name it
    layers: tuple[str, ...]         # diff_ids, lowest first
    config: bytes                   # the config blob: its digest is the image's ID
    annotations: dict[str, str]     # its manifest's
    tars: dict[str, str]            # diff_id -> the kept tar (zstd of the layer's exact bytes)
    sizes: dict[str, int]           # diff_id -> bytes of the uncompressed tar


def _kept_tar(image: Stored, diff_id: str) -> str:
    path = image.tars[diff_id]
    if not os.path.exists(path):
        raise NotFound(f"layer {diff_id[:19]} of image {image.shown} has no kept tar (it was stored by an older "
                       "ferry)", hint="remove the image and pull, load or import it again")
    return path


@contextlib.contextmanager
def layer_stream(image: Stored, diff_id: str) -> Iterator[digests.HashingReader]:
    """The layer's uncompressed tar; its digest is checked once the caller has read it all."""
    with open(_kept_tar(image, diff_id), "rb") as kept:
        reader = digests.HashingReader(decompressed(kept))
        yield reader
        reader.drain()
    digests.verify(diff_id, reader.digest, f"kept tar of layer {diff_id[:19]}")


def _add_bytes(out: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    out.addfile(info, io.BytesIO(data))


def _add_layer(out: tarfile.TarFile, image: Stored, diff_id: str, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = image.sizes[diff_id], 0o644
    with layer_stream(image, diff_id) as stream:
        out.addfile(info, stream)


def _oci_head(out: tarfile.TarFile, config: bytes, manifest: bytes, name: str | None) -> None:
    entry: dict = {"mediaType": OCI_MANIFEST, "digest": digests.of_bytes(manifest), "size": len(manifest)}
    if name:
        entry["annotations"] = {NAME_ANNOTATION: name}
    index = json.dumps({"schemaVersion": 2, "manifests": [entry]}, separators=(",", ":")).encode()
    _add_bytes(out, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    _add_bytes(out, "index.json", index)
    _add_bytes(out, f"blobs/sha256/{digests.hex_of(digests.of_bytes(config))}", config)
    _add_bytes(out, f"blobs/sha256/{digests.hex_of(entry['digest'])}", manifest)


def write_oci(out: tarfile.TarFile, image: Stored, name: str | None) -> None:
    """The whole image, its layers uncompressed (blob digest = diff_id), and
    its manifest's annotations (a checkpoint image's) kept."""
    manifest = manifest_document(digests.of_bytes(image.config), len(image.config),
                                 [(d, image.sizes[d]) for d in image.layers], annotations=image.annotations)
    _oci_head(out, image.config, manifest, name)
    for diff_id in dict.fromkeys(image.layers):
        _add_layer(out, image, diff_id, f"blobs/sha256/{digests.hex_of(diff_id)}")


def write_oci_subset(out: tarfile.TarFile, image: Stored, name: str | None, sent: list[str]) -> None:
    """The image with only the layers `sent`, each as its kept tar (zstd):
    enough for a store that has the others (a migration's destination), which
    never opens those, so their diff_id stands in for their blob digest."""
    blobs, layers = {}, []
    for diff_id in image.layers:
        if diff_id in sent:
            tar = _kept_tar(image, diff_id)
            digest = digests.of_file(tar)
            blobs[digest] = tar
            layers.append((digest, os.path.getsize(tar), OCI_LAYER_ZSTD))
        else:
            layers.append((diff_id, image.sizes[diff_id], OCI_LAYER))
    _oci_head(out, image.config, manifest_document(digests.of_bytes(image.config), len(image.config), layers), name)
    for digest, tar in blobs.items():
        out.add(tar, arcname=f"blobs/sha256/{digests.hex_of(digest)}", recursive=False)


def write_docker(out: tarfile.TarFile, images: list[tuple[Stored, list[str]]]) -> None:
    """docker-archive: manifest.json lists each image's config, names and layers."""
    entries, written = [], set()
    for image, names in images:
        config_member = f"{image.id}.json"
        if config_member not in written:
            _add_bytes(out, config_member, image.config)
            written.add(config_member)
        members = []
        for diff_id in image.layers:
            member = f"{digests.hex_of(diff_id)}.tar"
            if member not in written:
                _add_layer(out, image, diff_id, member)
                written.add(member)
            members.append(member)
        entries.append({"Config": config_member, "RepoTags": names, "Layers": members})
    _add_bytes(out, "manifest.json", json.dumps(entries, separators=(",", ":")).encode())


@contextlib.contextmanager
def archive_file(path: str | None) -> Iterator[tarfile.TarFile]:
    """A tar being written: to `path` through a temp file renamed into place
    when it is whole (a failure leaves nothing), or to stdout (path None)."""
    if path is None:
        if os.isatty(1):
            raise UsageError("will not write an image archive to a terminal",
                             hint="redirect stdout to a file, or use -o FILE")
        out = tarfile.open(fileobj=os.fdopen(1, "wb", closefd=False), mode="w|", format=tarfile.PAX_FORMAT)
        with out:
            yield out
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"cannot write {path}: it is a directory", hint="give the archive's file name")
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    except OSError as exc:
        raise from_os_error(exc, f"cannot write {path}") from None
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as out:
            yield out
        os.chmod(temp, 0o644)
        os.rename(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise from_os_error(exc, f"cannot write {path}") from None
        raise


def check_format(fmt: str, count: int) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"unsupported format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    if count > 1 and fmt != "docker-archive":
        raise UsageError(f"{fmt} holds one image", hint="save several into one docker-archive with -m")
