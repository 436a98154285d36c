"""Checkpoint archives of other engines: podman's `container checkpoint
--export`, and CRI-O's (checkpointctl's layout). ferry's own archives borrow
their members' names but begin with ferry's manifest; these begin with one of
FOREIGN_MEMBERS.

Their config.dump names the container and its image: podman's is podman's
whole container config, CRI-O's checkpointctl's short metadata. Either is read
as any archive's records are: bounded, into typed fields, the rest ignored.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

# The top-level members of `podman container checkpoint --export` (4.x) and of
# CRI-O's checkpoint archives.
FOREIGN_MEMBERS = frozenset({"artifacts", "checkpoint", "config.dump", "spec.dump", "network.status",
                             "stats-dump", "dump.log", "restore.log", "ctr.log", "rootfs-diff.tar",
                             "deleted.files", "devshm-checkpoint.tar", "volumes", "bind.mounts", "pod.options",
                             "pod.dump"})
CONFIG_DUMP = "config.dump"
MAX_CONFIG = 1 << 20           # podman's config.dump of a busybox httpd: 24 KiB
SCAN_MEMBERS = 32              # podman writes config.dump third, CRI-O among the first few
SCAN_BYTES = 256 << 20         # what a look for config.dump may read past (devshm-checkpoint.tar first)

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}\z")]
Label = Annotated[str, StringConstraints(max_length=256, pattern=r"^[\x21-\x7e]+\z")]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, populate_by_name=True)


class PodmanConfig(_Record):
    """The fields of podman's config.dump (libpod's ContainerConfig) ferry reads."""
    id: Hex64
    name: Label
    image_id: Hex64 | None = Field(None, alias="rootfsImageID")
    image_name: Label | None = Field(None, alias="rootfsImageName")


class CheckpointctlConfig(_Record):
    """CRI-O's config.dump: checkpointctl's container metadata."""
    id: Hex64
    name: Label
    image_ref: Hex64 | None = Field(None, alias="rootfsImageRef")
    image_name: Label | None = Field(None, alias="rootfsImageName")
    runtime: Label | None = None


class ForeignContainer(BaseModel):
    model_config = ConfigDict(frozen=True)
    engine: str          # podman | CRI-O
    id: str
    name: str
    image_id: str | None
    image_name: str | None

    def describe(self) -> str:
        image = ", ".join(filter(None, (self.image_name, self.image_id[:12] if self.image_id else None)))
        return f"{self.engine}'s checkpoint of container {self.name!r}" + (f" (image {image})" if image else "")


def parse_config(data: bytes) -> ForeignContainer | None:
    """config.dump of a podman or CRI-O archive; None when it is neither (or is forged past reading)."""
    if len(data) > MAX_CONFIG:
        return None
    try:
        fields = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(fields, dict):
        return None
    try:
        if "rootfsImageRef" in fields or "checkpointedTime" in fields:
            cri = CheckpointctlConfig.model_validate(fields)
            return ForeignContainer(engine="CRI-O", id=cri.id, name=cri.name, image_id=cri.image_ref,
                                    image_name=cri.image_name)
        podman = PodmanConfig.model_validate(fields)
        return ForeignContainer(engine="podman", id=podman.id, name=podman.name, image_id=podman.image_id,
                                image_name=podman.image_name)
    except ValidationError:
        return None
