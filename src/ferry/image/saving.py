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
from typing import TYPE_CHECKING, Iterator

from ferry.image import digest as digests
from ferry.image.layers import decompressed
from ferry.image.manifest import OCI_LAYER, OCI_LAYER_ZSTD, OCI_MANIFEST, annotations_of, manifest_document
from ferry.util.errors import NotFound, UsageError, from_os_error

if TYPE_CHECKING:
    from ferry.image.store import Image, ImageStore

FORMATS = ("docker-archive", "oci-archive")
NAME_ANNOTATION = "org.opencontainers.image.ref.name"


def _kept_tar(store: "ImageStore", image: "Image", diff_id: str) -> str:
    path = store.layer_tar(diff_id)
    if not os.path.exists(path):
        shown = image.names[0] if image.names else image.id[:12]
        raise NotFound(f"layer {diff_id[:19]} of image {shown} has no kept tar (it was stored by an older ferry)",
                       hint="remove the image and pull, load or import it again")
    return path


@contextlib.contextmanager
def layer_stream(store: "ImageStore", image: "Image", diff_id: str) -> Iterator[digests.HashingReader]:
    """The layer's uncompressed tar; its digest is checked once the caller has read it all."""
    with open(_kept_tar(store, image, diff_id), "rb") as kept:
        reader = digests.HashingReader(decompressed(kept))
        yield reader
        reader.drain()
    digests.verify(diff_id, reader.digest, f"kept tar of layer {diff_id[:19]}")


def _add_bytes(out: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    out.addfile(info, io.BytesIO(data))


def _add_layer(out: tarfile.TarFile, store: "ImageStore", image: "Image", diff_id: str, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = store.layer_size(diff_id), 0o644
    with layer_stream(store, image, diff_id) as stream:
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


def write_oci(out: tarfile.TarFile, store: "ImageStore", image: "Image", name: str | None) -> None:
    """The whole image, its layers uncompressed (blob digest = diff_id), and
    its manifest's annotations (a checkpoint image's) kept."""
    config = store.blobs.get(f"sha256:{image.id}")
    unique = list(dict.fromkeys(image.layers))
    manifest = manifest_document(digests.of_bytes(config), len(config),
                                 [(d, store.layer_size(d)) for d in image.layers],
                                 annotations=annotations_of(store.blobs.get(image.digest)))
    _oci_head(out, config, manifest, name)
    for diff_id in unique:
        _add_layer(out, store, image, diff_id, f"blobs/sha256/{digests.hex_of(diff_id)}")


def write_oci_subset(out: tarfile.TarFile, store: "ImageStore", image: "Image", sent: list[str]) -> None:
    """The image with only the layers `sent`, each as its kept tar (zstd):
    enough for a store that has the others (a migration's destination), which
    never opens those, so their diff_id stands in for their blob digest."""
    config = store.blobs.get(f"sha256:{image.id}")
    blobs, layers = {}, []
    for diff_id in image.layers:
        if diff_id in sent:
            tar = _kept_tar(store, image, diff_id)
            digest = digests.of_file(tar)
            blobs[digest] = tar
            layers.append({"mediaType": OCI_LAYER_ZSTD, "digest": digest, "size": os.path.getsize(tar)})
        else:
            layers.append({"mediaType": OCI_LAYER, "digest": diff_id, "size": store.layer_size(diff_id)})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": f"sha256:{image.id}", "size": len(config)},
                           "layers": layers}).encode()
    _oci_head(out, config, manifest, image.names[0] if image.names else None)
    for digest, tar in blobs.items():
        out.add(tar, arcname=f"blobs/sha256/{digests.hex_of(digest)}", recursive=False)


def write_docker(out: tarfile.TarFile, store: "ImageStore", images: list[tuple["Image", list[str]]]) -> None:
    """docker-archive: manifest.json lists each image's config, names and layers."""
    entries, written = [], set()
    for image, names in images:
        config_member = f"{image.id}.json"
        if config_member not in written:
            _add_bytes(out, config_member, store.blobs.get(f"sha256:{image.id}"))
            written.add(config_member)
        members = []
        for diff_id in image.layers:
            member = f"{digests.hex_of(diff_id)}.tar"
            if member not in written:
                _add_layer(out, store, image, diff_id, member)
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
