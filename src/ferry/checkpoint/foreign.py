"""Checkpoint archives of other engines: podman's `container checkpoint
--export`, and CRI-O's (checkpointctl's layout). ferry's own archives borrow
their members' names but begin with ferry's manifest; these begin with one of
FOREIGN_MEMBERS, carry no digests and no signature, and are trusted no more
than their bytes: what ferry reads of them is parsed here, bounded, into typed
fields, and the rest is ignored.

config.dump names the container and its image (podman's is libpod's whole
ContainerConfig, CRI-O's checkpointctl's short metadata); spec.dump is the OCI
spec the container ran with. ferry takes from them what it would have asked
of a user (command, environment, ports, volumes) and the few places where the
spec's shape differs from ferry's (engine/config.py SpecProfile). It never
takes capabilities, seccomp, devices or host paths as given: it builds its own
spec, and its image check refuses images that need more.
"""

from __future__ import annotations

import posixpath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ferry.checkpoint.foreign_layout import MAX_RECORD
from ferry.util import strictjson

MAX_LIST = 4096
MAX_TEXT = 128 << 10

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}\z")]
Label = Annotated[str, StringConstraints(max_length=256, pattern=r"^[\x21-\x7e]+\z")]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=r"^[^\x00]*\z")]
Path = Annotated[str, StringConstraints(max_length=4095, pattern=r"^/[^\x00]*\z")]
Port = Annotated[int, Field(ge=0, le=65535)]
Id32 = Annotated[int, Field(ge=0, le=0xFFFFFFFF)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, populate_by_name=True)


class PortMap(_Record):
    """libpod's PortMapping (one range of published ports)."""
    host_ip: Label | Literal[""] = ""
    container_port: Port
    host_port: Port
    range: Annotated[int, Field(ge=0, le=65536)] = 1
    protocol: Label = "tcp"


class NamedVolume(_Record):
    name: Label = Field(alias="volumeName")
    dest: Path
    options: list[Label] = Field(default_factory=list, max_length=64)


class PodmanConfig(_Record):
    """The fields of podman's config.dump (libpod's ContainerConfig) ferry reads."""
    id: Hex64
    name: Label
    image_id: Hex64 | None = Field(None, alias="rootfsImageID")
    image_name: Label | None = Field(None, alias="rootfsImageName")
    command: list[Text] | None = Field(None, max_length=MAX_LIST)
    stop_signal: Annotated[int, Field(ge=1, le=64)] | None = Field(None, alias="stopSignal")
    ports: list[PortMap] = Field(default_factory=list, alias="newPortMappings", max_length=1024)
    named_volumes: list[NamedVolume] = Field(default_factory=list, alias="namedVolumes", max_length=256)
    user_volumes: list[Path] = Field(default_factory=list, alias="userVolumes", max_length=256)
    stdin: bool = False


class CheckpointctlConfig(_Record):
    """CRI-O's config.dump: checkpointctl's container metadata."""
    id: Hex64
    name: Label
    image_ref: Hex64 | None = Field(None, alias="rootfsImageRef")
    image_name: Label | None = Field(None, alias="rootfsImageName")
    runtime: Label | None = None


class SpecUser(_Record):
    uid: Id32 = 0
    gid: Id32 = 0


class SpecProcess(_Record):
    args: list[Text] = Field(min_length=1, max_length=MAX_LIST)
    env: list[Text] = Field(default_factory=list, max_length=MAX_LIST)
    cwd: Path = "/"
    user: SpecUser = SpecUser()
    terminal: bool = False
    no_new_privileges: bool = Field(False, alias="noNewPrivileges")


class SpecMount(_Record):
    destination: Path
    type: Label | None = None
    source: Text | None = None
    options: list[Label] = Field(default_factory=list, max_length=64)


class SpecNamespace(_Record):
    type: Literal["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"]


class SpecLinux(_Record):
    namespaces: list[SpecNamespace] = Field(default_factory=list, max_length=16)


class SpecRoot(_Record):
    readonly: bool = False


class Spec(_Record):
    """The fields of spec.dump (the OCI spec the container ran with) ferry reads."""
    process: SpecProcess
    root: SpecRoot = SpecRoot()
    hostname: Label | None = None
    mounts: list[SpecMount] = Field(default_factory=list, max_length=512)
    linux: SpecLinux = SpecLinux()

    @property
    def namespaces(self) -> frozenset[str]:
        return frozenset(n.type for n in self.linux.namespaces)


class ForeignContainer(BaseModel):
    """config.dump of either engine, as far as ferry reads it."""
    model_config = ConfigDict(frozen=True)
    engine: str          # podman | CRI-O
    id: str
    name: str
    image_id: str | None
    image_name: str | None
    podman: PodmanConfig | None = None

    def describe(self) -> str:
        image = ", ".join(filter(None, (self.image_name, self.image_id[:12] if self.image_id else None)))
        return f"{self.engine}'s checkpoint of container {self.name!r}" + (f" (image {image})" if image else "")


def _json(data: bytes):
    if len(data) > MAX_RECORD:
        raise ValueError(f"it is larger than {MAX_RECORD} bytes")
    try:
        return strictjson.loads(data)
    except RecursionError:
        raise ValueError("it nests too deeply") from None


def _why(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the record"
    return f"{where}: {first['msg']}"


def read_config(data: bytes) -> ForeignContainer:
    """config.dump of a podman or CRI-O archive (ValueError naming the field)."""
    fields = _json(data)
    if not isinstance(fields, dict):
        raise ValueError("it is not a JSON object")
    try:
        if "rootfsImageRef" in fields or "checkpointedTime" in fields:
            cri = CheckpointctlConfig.model_validate(fields)
            return ForeignContainer(engine="CRI-O", id=cri.id, name=cri.name, image_id=cri.image_ref,
                                    image_name=cri.image_name)
        podman = PodmanConfig.model_validate(fields)
    except ValidationError as exc:
        raise ValueError(_why(exc)) from None
    return ForeignContainer(engine="podman", id=podman.id, name=podman.name, image_id=podman.image_id,
                            image_name=podman.image_name, podman=podman)


def read_spec(data: bytes) -> Spec:
    fields = _json(data)
    try:
        spec = Spec.model_validate(fields)
    except ValidationError as exc:
        raise ValueError(_why(exc)) from None
    destinations = [posixpath.normpath(m.destination) for m in spec.mounts]
    if len(set(destinations)) != len(destinations):
        raise ValueError("it mounts two things at one destination")
    return spec


def parse_config(data: bytes) -> ForeignContainer | None:
    """config.dump of a podman or CRI-O archive; None when it is neither (or is forged past reading)."""
    try:
        return read_config(data)
    except ValueError:
        return None

