"""The member names of another engine's checkpoint archive (podman's `container
checkpoint --export`, CRI-O's), apart from the typed records that read them
(foreign.py): reading or restoring a ferry archive needs the names, and must
not pay for loading pydantic (about 50 ms a command)."""

from __future__ import annotations

import re

from ferry.util import strictjson

# The top-level members of `podman container checkpoint --export` (4.x) and of
# CRI-O's checkpoint archives.
FOREIGN_FILES = frozenset({"config.dump", "spec.dump", "network.status", "stats-dump", "dump.log", "restore.log",
                           "ctr.log", "rootfs-diff.tar", "deleted.files", "devshm-checkpoint.tar", "bind.mounts",
                           "pod.options", "pod.dump"})
FOREIGN_DIRS = frozenset({"artifacts", "checkpoint", "volumes"})
FOREIGN_MEMBERS = FOREIGN_FILES | FOREIGN_DIRS
# Read but not unpacked: nothing in them is used.
SKIPPED = frozenset({"dump.log", "restore.log", "bind.mounts", "pod.options", "pod.dump", "stats-dump"})
CONFIG_DUMP, SPEC_DUMP, DEVSHM = "config.dump", "spec.dump", "devshm-checkpoint.tar"
MAX_RECORD = 1 << 20           # podman's config.dump of a busybox httpd: 24 KiB, spec.dump 21 KiB
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}\Z")


def is_volume_member(name: str) -> bool:
    """volumes/NAME.tar, where podman keeps a named volume's content."""
    top, _, rest = name.partition("/")
    return top == "volumes" and rest.endswith(".tar") and bool(NAME_RE.match(rest[:-4]))


def podman_identity(data: bytes) -> tuple:
    """(id, name, rootfsImageID) of a podman config.dump, as found: a ferry
    archive's copy only has to name the container its own record names, so
    the caller compares these and the whole record is not typed."""
    if len(data) > MAX_RECORD:
        raise ValueError(f"it is larger than {MAX_RECORD} bytes")
    fields = strictjson.loads(data)
    if not isinstance(fields, dict):
        raise ValueError("it is not a JSON object")
    return fields.get("id"), fields.get("name"), fields.get("rootfsImageID")
