"""OCI and docker v2 schema2 documents: manifests, indexes (manifest lists)
with platform selection, and image configs. Pure parsing, no I/O."""

from __future__ import annotations

import json
import os
from typing import NamedTuple

from ferry.image.digest import hex_of
from ferry.util.errors import BadArchive, Incompatible, NotFound

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# What we ask registries for, best first.
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
LAYER_TYPES = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER_GZIP,
               "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
               "application/vnd.oci.image.layer.nondistributable.v1.tar",
               "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")

DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# os.uname().machine -> OCI architecture names (platform.machine() is the same; its module costs 2 ms)
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def host_architecture() -> str:
    machine = os.uname().machine
    return _ARCH.get(machine, machine)


class Platform(NamedTuple):
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


class Descriptor(NamedTuple):
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)


class Manifest(NamedTuple):
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


class Index(NamedTuple):
    media_type: str
    manifests: tuple[Descriptor, ...]


class ImageConfig(NamedTuple):
    """What `run` needs from an image's config (the OCI/docker `config` object)."""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()   # e.g. ("80/tcp",)
    stop_signal: str = ""                 # "" when unset
    labels: tuple[tuple[str, str], ...] = ()   # sorted by key
    volumes: tuple[str, ...] = ()         # the image's VOLUME paths, sorted


class ParsedConfig(NamedTuple):
    config: ImageConfig
    diff_ids: tuple[str, ...]
    created: str
    architecture: str
    os: str


def _bad(what: str, why: str) -> BadArchive:
    return BadArchive(f"{what} is malformed: {why}",
                      hint="the image source is damaged or not an OCI/docker v2 image")


def _load_json(data: bytes, what: str) -> dict:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(what, f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _bad(what, "not a JSON object")
    return doc


def _descriptor(raw, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise _bad(what, "a descriptor is not an object")
    digest = raw.get("digest", "")
    try:
        hex_of(digest)
    except BadArchive:
        raise _bad(what, f"bad digest {digest!r}") from None
    size = raw.get("size", -1)
    if not isinstance(size, int):
        raise _bad(what, "a descriptor size is not a number")
    plat = raw.get("platform")
    parsed_platform = None
    if isinstance(plat, dict):
        parsed_platform = Platform(str(plat.get("os", "")), str(plat.get("architecture", "")),
                                   str(plat.get("variant", "") or ""))
    annotations = raw.get("annotations") or {}
    if not isinstance(annotations, dict):
        annotations = {}
    return Descriptor(str(raw.get("mediaType", "")), digest, size, parsed_platform,
                      tuple(sorted((str(k), str(v)) for k, v in annotations.items())))


def parse_document(data: bytes, content_type: str = "", what: str = "manifest") -> Manifest | Index:
    """A manifest or an index. `content_type` (from HTTP) wins over the
    document's own mediaType, which OCI makes optional."""
    doc = _load_json(data, what)
    media_type = (content_type.split(";")[0].strip() if content_type else "") or doc.get("mediaType", "")
    if media_type in ("", "application/json", "application/octet-stream"):
        media_type = doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
    if media_type in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise Incompatible(f"{what} uses docker schema 1, which ferry does not support",
                           hint="push the image again with a current docker or podman (schema 2 / OCI)")
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise _bad(what, "an index without a manifests list")
        return Index(media_type, tuple(_descriptor(e, what) for e in entries))
    if media_type in MANIFEST_TYPES:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise _bad(what, "a manifest without a layers list")
        parsed = tuple(_descriptor(layer, what) for layer in layers)
        for layer in parsed:
            if layer.media_type and layer.media_type not in LAYER_TYPES:
                raise Incompatible(f"{what} has a layer of unsupported type {layer.media_type}",
                                   hint="ferry reads tar, tar+gzip and tar+zstd layers")
        return Manifest(media_type, _descriptor(doc.get("config"), what), parsed)
    raise Incompatible(f"{what} has unsupported media type {media_type!r}",
                       hint="ferry reads OCI and docker v2 schema 2 images")


def select_platform(index: Index, ref: str, os_name: str = "linux",
                    architecture: str | None = None) -> Descriptor:
    """The index entry for os/arch (linux/<host arch> by default)."""
    architecture = architecture or host_architecture()
    matches = [d for d in index.manifests
               if d.platform and d.platform.os == os_name and d.platform.architecture == architecture]
    if not matches:
        offered = sorted({str(d.platform) for d in index.manifests
                          if d.platform and d.platform.os != "unknown"})
        raise NotFound(f"{ref} has no {os_name}/{architecture} image "
                       f"(it offers: {', '.join(offered) or 'none'})",
                       hint="pull an image built for this host's platform")
    # Prefer the plain entry (or arm64's v8) over other variants.
    matches.sort(key=lambda d: d.platform.variant not in ("", "v8"))
    return matches[0]


def _strings(value, what: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(what, f"{key} is not a list of strings")
    return tuple(value)


MAX_CONFIG_ENTRIES = 4096


def _string_map(value, what: str, key: str) -> tuple[tuple[str, str], ...]:
    """A JSON object of strings (Labels), sorted by key; null is empty."""
    if value is None:
        return ()
    if not isinstance(value, dict) or len(value) > MAX_CONFIG_ENTRIES \
            or not all(isinstance(v, str) for v in value.values()):
        raise _bad(what, f"{key} is not an object of at most {MAX_CONFIG_ENTRIES} strings")
    return tuple(sorted(value.items()))


def _volume_set(value):
    """Volumes is a set written as an object of empty objects."""
    if not isinstance(value, dict):
        return value
    return {path: "" for path in value}


def normalise_port(port: str) -> str:
    return port if "/" in port else f"{port}/tcp"


def parse_config(data: bytes, what: str = "image config") -> ParsedConfig:
    doc = _load_json(data, what)
    rootfs = doc.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise _bad(what, "rootfs.diff_ids is missing")
    for diff_id in diff_ids:
        try:
            hex_of(diff_id)
        except BadArchive:
            raise _bad(what, f"bad layer diff_id {diff_id!r}") from None
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise _bad(what, "config is not an object")
    ports = cfg.get("ExposedPorts") or {}
    if not isinstance(ports, dict):
        raise _bad(what, "ExposedPorts is not an object")
    image_config = ImageConfig(
        entrypoint=_strings(cfg.get("Entrypoint"), what, "Entrypoint"),
        cmd=_strings(cfg.get("Cmd"), what, "Cmd"),
        env=_strings(cfg.get("Env"), what, "Env"),
        working_dir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        exposed_ports=tuple(sorted(normalise_port(p) for p in ports)),
        stop_signal=str(cfg.get("StopSignal") or ""),
        labels=_string_map(cfg.get("Labels"), what, "Labels"),
        volumes=tuple(key for key, _ in _string_map(_volume_set(cfg.get("Volumes")), what, "Volumes")),
    )
    return ParsedConfig(image_config, tuple(diff_ids), str(doc.get("created") or ""),
                        str(doc.get("architecture") or ""), str(doc.get("os") or ""))


def config_document(config: ImageConfig, diff_ids: list[str], created: str,
                    history_comment: str) -> bytes:
    """An OCI image config for an image ferry makes itself (import, build)."""
    cfg: dict = {}
    if config.env:
        cfg["Env"] = list(config.env)
    if config.entrypoint:
        cfg["Entrypoint"] = list(config.entrypoint)
    if config.cmd:
        cfg["Cmd"] = list(config.cmd)
    if config.working_dir:
        cfg["WorkingDir"] = config.working_dir
    if config.user:
        cfg["User"] = config.user
    if config.exposed_ports:
        cfg["ExposedPorts"] = {normalise_port(p): {} for p in config.exposed_ports}
    if config.labels:
        cfg["Labels"] = dict(config.labels)
    if config.volumes:
        cfg["Volumes"] = {path: {} for path in config.volumes}
    if config.stop_signal:
        cfg["StopSignal"] = config.stop_signal
    doc = {"created": created, "architecture": host_architecture(), "os": "linux", "config": cfg,
           "rootfs": {"type": "layers", "diff_ids": diff_ids},
           "history": [{"created": created, "created_by": history_comment}]}
    return json.dumps(doc, separators=(",", ":")).encode()


def manifest_document(config_digest: str, config_size: int, layers: list[tuple], *,
                      layer_type: str = OCI_LAYER, annotations: dict[str, str] | None = None) -> bytes:
    """An OCI manifest for layers given as (digest, size), of `layer_type`, or
    as (digest, size, media type)."""
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
           "layers": [{"mediaType": layer[2] if len(layer) > 2 else layer_type, "digest": layer[0],
                       "size": layer[1]} for layer in layers]}
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    return json.dumps(doc, separators=(",", ":")).encode()


MAX_ANNOTATIONS = 256
MAX_ANNOTATION_BYTES = 64 << 10


def annotations_of(manifest: bytes) -> dict[str, str]:
    """A manifest's own annotations (an image's, as podman inspect shows
    them): string keys and values only, bounded; {} for a docker manifest."""
    try:
        doc = json.loads(manifest)
    except (ValueError, UnicodeDecodeError):
        return {}
    found = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(found, dict):
        return {}
    kept = {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)
            and len(k) + len(v) <= MAX_ANNOTATION_BYTES}
    return dict(sorted(kept.items())[:MAX_ANNOTATIONS])
