"""Image archives as `podman save` writes them: docker-archive (manifest.json
with Config/RepoTags/Layers) and oci-archive (an OCI image layout in a tar).

Reading only: members are looked up by name and never written to disk here,
so hostile member names cannot escape. Anything unreadable is BadArchive."""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import tarfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from ferry.image import digest as digests
from ferry.image import reference
from ferry.image.manifest import Index, Manifest, parse_document, select_platform
from ferry.util.errors import BadArchive, FerryError

MAX_JSON_BYTES = 4 << 20
BLOB_MEMBER_RE = re.compile(r"^blobs/sha256/([0-9a-f]{64})\Z")
# Where OCI layouts keep an image's name: containerd/docker put the full name
# in their own key; podman and skopeo use the OCI key.
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError)


@dataclass(frozen=True)
class ArchiveLayer:
    member: str
    digest: str | None   # the blob digest to verify, when the archive names it


@dataclass(frozen=True)
class ArchiveImage:
    config: bytes
    manifest: bytes | None          # OCI archives carry one; docker archives do not
    names: list[str]
    layers: tuple[ArchiveLayer, ...]


def _damaged(path: str, why: str) -> BadArchive:
    return BadArchive(f"archive {path} is damaged or not an image archive: {why}",
                      hint="save it again with 'podman save' (docker-archive or oci-archive)")


def _normalise(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


class ImageArchive:
    def __init__(self, path: str):
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}

    def __enter__(self) -> "ImageArchive":
        try:
            self._tar = tarfile.open(self.path, "r:*")
            self._members = {_normalise(m.name): m for m in self._tar.getmembers() if m.isreg()}
        except READ_ERRORS as exc:
            raise _damaged(self.path, str(exc) or type(exc).__name__) from None
        return self

    def __exit__(self, *exc) -> None:
        if self._tar is not None:
            self._tar.close()

    # ---- members --------------------------------------------------------

    @contextlib.contextmanager
    def open(self, member: str) -> Iterator[BinaryIO]:
        info = self._members.get(_normalise(member))
        if info is None or self._tar is None:
            raise _damaged(self.path, f"it lacks {member!r}")
        try:
            stream = self._tar.extractfile(info)
        except READ_ERRORS as exc:
            raise _damaged(self.path, f"reading {member!r}: {exc or type(exc).__name__}") from None
        if stream is None:
            raise _damaged(self.path, f"{member!r} is not a file")
        # Read errors inside the caller's block are the layer unpacker's to name.
        with stream:
            yield stream

    def read(self, member: str, expected_digest: str | None = None) -> bytes:
        with self.open(member) as stream:
            try:
                data = stream.read(MAX_JSON_BYTES + 1)
            except READ_ERRORS as exc:
                raise _damaged(self.path, f"reading {member!r}: {exc or type(exc).__name__}") from None
        if len(data) > MAX_JSON_BYTES:
            raise _damaged(self.path, f"{member!r} is too large for a JSON document")
        if expected_digest:
            digests.verify(expected_digest, digests.of_bytes(data), f"{member} in {self.path}")
        return data

    def _json(self, member: str):
        try:
            return json.loads(self.read(member))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _damaged(self.path, f"{member!r} is not JSON ({exc})") from None

    def _names(self, given: list, what: str) -> list[str]:
        names = []
        for text in given:
            try:
                names.append(reference.parse_local(str(text)).name)
            except FerryError:
                raise _damaged(self.path, f"{what} names an image {text!r}, not a valid reference") from None
        return names

    # ---- formats --------------------------------------------------------

    def images(self) -> list[ArchiveImage]:
        if "manifest.json" in self._members:
            found = self._docker_images()
        elif "index.json" in self._members:
            found = self._oci_images()
        else:
            raise _damaged(self.path, "it has neither manifest.json (docker-archive) "
                           "nor index.json (oci-archive)")
        if not found:
            raise _damaged(self.path, "it holds no image")
        return found

    def _docker_images(self) -> list[ArchiveImage]:
        entries = self._json("manifest.json")
        if not isinstance(entries, list):
            raise _damaged(self.path, "manifest.json is not a list")
        found = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                    or not isinstance(entry.get("Layers"), list):
                raise _damaged(self.path, "a manifest.json entry lacks Config or Layers")
            config_member = entry["Config"]
            match = BLOB_MEMBER_RE.match(_normalise(config_member))
            config = self.read(config_member, f"sha256:{match.group(1)}" if match else None)
            layers = []
            for member in entry["Layers"]:
                if not isinstance(member, str):
                    raise _damaged(self.path, "manifest.json lists a layer that is not a file name")
                match = BLOB_MEMBER_RE.match(_normalise(member))
                layers.append(ArchiveLayer(member, f"sha256:{match.group(1)}" if match else None))
            found.append(ArchiveImage(config, None, self._names(entry.get("RepoTags") or [],
                                                                "manifest.json"), tuple(layers)))
        return found

    @staticmethod
    def _blob_member(digest: str) -> str:
        return f"blobs/sha256/{digests.hex_of(digest)}"

    def _oci_images(self) -> list[ArchiveImage]:
        index = parse_document(self.read("index.json"), what=f"index.json of {self.path}")
        if not isinstance(index, Index):
            raise _damaged(self.path, "index.json is not an image index")
        found = []
        for entry in index.manifests:
            body = self.read(self._blob_member(entry.digest), entry.digest)
            document = parse_document(body, entry.media_type, f"manifest {entry.digest} in {self.path}")
            if isinstance(document, Index):
                chosen = select_platform(document, self.path)
                body = self.read(self._blob_member(chosen.digest), chosen.digest)
                document = parse_document(body, chosen.media_type, f"manifest {chosen.digest} in {self.path}")
            if not isinstance(document, Manifest):
                raise _damaged(self.path, "an index points at another index")
            config = self.read(self._blob_member(document.config.digest), document.config.digest)
            layers = tuple(ArchiveLayer(self._blob_member(d.digest), d.digest) for d in document.layers)
            found.append(ArchiveImage(config, body, self._names(self._oci_names(entry), "index.json"),
                                      layers))
        return found

    @staticmethod
    def _oci_names(entry) -> list[str]:
        for key in NAME_ANNOTATIONS:
            name = entry.annotation(key)
            # A bare tag ("latest") names no repository, so it cannot name an image here.
            if name and ("/" in name or ":" in name):
                return [name]
        return []
