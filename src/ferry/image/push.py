"""`ferry push`: an image from the store to an OCI distribution registry.

Each layer is compressed from the tar the store keeps (checked against its
diff_id on the way) into an unnamed temp file, which gives the blob's digest
before the upload names it; blobs the registry has are not sent again. The
manifest is OCI, so a checkpoint image's annotations travel with it.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Callable, Iterator

from ferry.image import digest as digests
from ferry.image import reference
from ferry.image.manifest import OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST, manifest_document
from ferry.image.saving import Stored, layer_stream
from ferry.util.errors import UsageError

if TYPE_CHECKING:
    from ferry.image.store import ImageStore

COMPRESSIONS = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}
TRANSPORT = "docker://"
READ_CHUNK = 1 << 20


def destination(store: "ImageStore", ref: str, dest: str | None) -> tuple[str, reference.Reference]:
    """(the image's ID, where it goes): DEST, or the name the image was found
    by. The registry must be named: nothing goes to a default registry."""
    image_id, by_name = store.resolve(ref)
    text = dest[len(TRANSPORT):] if dest and dest.startswith(TRANSPORT) else dest
    if not text:
        text = by_name if by_name else (ref if reference.is_qualified(ref) else None)
    if not text:
        raise UsageError(f"image {ref} was given by ID, so it names no registry to push to",
                         hint="give a destination: ferry push IMAGE REGISTRY/NAME[:TAG]")
    if not reference.is_qualified(text):
        raise UsageError(f"destination {text!r} names no registry",
                         hint="name it in full, e.g. registry.example:5000/name:tag")
    target = reference.parse(text)
    if target.digest:
        raise UsageError(f"cannot push to a digest ({target})", hint="give REGISTRY/NAME[:TAG]")
    return image_id, target


def _compressed(image: Stored, diff_id: str, compression: str, sink_for, into) -> tuple[str, int]:
    """The layer compressed into the file `into`: (blob digest, size)."""
    sink = sink_for(compression, into.fileno(), image.sizes[diff_id])
    try:
        with layer_stream(image, diff_id) as stream:
            while data := stream.read(READ_CHUNK):
                sink.write(data)
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    into.flush()
    return digests.of_file(f"/proc/self/fd/{into.fileno()}"), os.fstat(into.fileno()).st_size


def _chunks(fileobj) -> Callable[[], Iterator[bytes]]:
    def read() -> Iterator[bytes]:
        fileobj.seek(0)
        while data := fileobj.read(READ_CHUNK):
            yield data
    return read


def push(store: "ImageStore", ref: str, dest: str | None = None, *, tls_verify: bool = True,
         creds: str | None = None, compression: str = "gzip", sink_for, tmp_dir: str,
         report: Callable[[str], None] = lambda line: None) -> str:
    """Push; the digest of the manifest the registry now holds. `sink_for`
    (compression, fd, size) gives a compressing writer into fd: the archive
    codecs' (zstd on every core, pigz), which the image layer does not own."""
    if compression not in COMPRESSIONS:
        raise UsageError(f"unsupported compression format {compression!r}",
                         hint=f"use one of {', '.join(COMPRESSIONS)}")
    image_id, target = destination(store, ref, dest)
    image = store.stored(store.get(image_id))
    config = image.config
    from ferry.image.registry import RegistryClient   # httpx loads only when something is pushed
    os.makedirs(tmp_dir, mode=0o700, exist_ok=True)
    what = str(target)
    with RegistryClient(target.registry, tls_verify=tls_verify, creds=creds) as client:
        client.login(target.repository, push=True)
        layers: dict[str, tuple[str, int]] = {}
        for diff_id in dict.fromkeys(image.layers):
            # Unnamed (O_TMPFILE): a push that dies leaves nothing behind.
            with tempfile.TemporaryFile(dir=tmp_dir) as blob:
                digest, size = _compressed(image, diff_id, compression, sink_for, blob)
                layers[diff_id] = (digest, size)
                report(f"Copying blob {digest}")
                if not client.has_blob(target.repository, digest, f"blob {digest[7:19]} of {what}"):
                    client.upload_blob(target.repository, digest, size, _chunks(blob),
                                       f"blob {digest[7:19]} of {what}")
        config_digest = f"sha256:{image.id}"
        report(f"Copying config {config_digest}")
        if not client.has_blob(target.repository, config_digest, f"config of {what}"):
            client.upload_blob(target.repository, config_digest, len(config), config, f"config of {what}")
        body = manifest_document(config_digest, len(config), [layers[d] for d in image.layers],
                                 layer_type=COMPRESSIONS[compression], annotations=image.annotations)
        report("Writing manifest to image destination")
        return client.put_manifest(target.repository, target.tag or reference.DEFAULT_TAG, body, OCI_MANIFEST,
                                   f"manifest of {what}")

