"""Checkpoints as OCI images, in the shape podman's `checkpoint --create-image`
and Kubernetes' checkpointing make them: one layer holding an exported
archive's members, marked by manifest annotations (podman's
io.podman.annotations.checkpoint.*, checkpointctl's org.criu.checkpoint.*).

Making one: the annotations for a ferry checkpoint. Restoring one: which
image a name means (pulled when a registry is named), and whether it is a
checkpoint this host can restore; its layer then goes through the archive
reader like any archive (checkpoint/archive/layerstream.py).
"""

from __future__ import annotations

import contextlib
import os

from ferry import __version__
from ferry.image import reference
from ferry.image.manifest import host_architecture
from ferry.util.errors import BadArchive, Incompatible, NotFound, UsageError

PODMAN = "io.podman.annotations.checkpoint."
CRIU = "org.criu.checkpoint."
CRIO_NAME = "io.kubernetes.cri-o.annotations.checkpoint.name"
# Any of these marks an image as a checkpoint: podman's, checkpointctl's
# (containerd, buildah-made images as CRI-O's tests make them), CRI-O's own.
NAME_KEYS = (f"{PODMAN}name", f"{CRIU}container.name", CRIO_NAME)
ARCH_KEYS = (f"{PODMAN}host.arch", f"{CRIU}host.arch")
HINT = "the image is broken or forged; do not restore it"

_ARCH_NAMES = {"x86_64": "amd64", "aarch64": "arm64"}


def _os_release() -> tuple[str, str]:
    fields = {}
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            fields[key] = value.strip('"')
    return fields.get("ID", ""), fields.get("VERSION_ID", "")


def _criu_number(version: str) -> str:
    """podman writes CRIU's version as one number: 4.2.1 is 40201."""
    parts = (version.split(".") + ["0", "0"])[:3]
    try:
        return str(int(parts[0]) * 10000 + int(parts[1]) * 100 + int(parts[2]))
    except ValueError:
        return version


def annotations_for(head) -> dict[str, str]:
    """What podman and checkpointctl record of a checkpoint, from a ferry
    archive's head: the container, its image, and the host that wrote it."""
    host, container = head.host, head.container
    distribution, distribution_version = _os_release()
    facts = {
        "name": container["name"],
        "rawImageName": container["image"],
        "rootfsImageID": container["image_id"],
        "rootfsImageName": container["image"],
        "criu.version": _criu_number(host.criu_version),
        "runtime.name": "runc",
        "runtime.version": f"runc version {host.runc_version}",
        "host.arch": _ARCH_NAMES.get(host.arch, host.arch),
        "host.kernel": host.kernel,
        "distribution.name": distribution,
        "distribution.version": distribution_version,
    }
    cgroups = "v2" if host.cgroup_mode == "v2" else "v1"
    podman = {f"{PODMAN}{key}": value for key, value in facts.items()}
    podman[f"{PODMAN}cgroups.version"] = cgroups
    criu = {f"{CRIU}{'container.name' if key == 'name' else key}": value for key, value in facts.items()}
    criu.update({f"{CRIU}cgroup.version": cgroups, f"{CRIU}engine.name": "ferry",
                 f"{CRIU}engine.version": __version__})
    return {**podman, **criu}


def find(images, text: str, *, tls_verify: bool = True, creds: str | None = None, pull=None):
    """The image `text` names, pulled first when it is not here and names its
    registry (never a short name, which could reach a public registry); None
    when no image has that name."""
    try:
        return images.get(text)
    except UsageError:
        return None       # not an image reference at all (a container's name may be any)
    except NotFound:
        pass
    if not reference.is_qualified(text) or reference.split_domain(text)[0] == reference.LOCAL_REGISTRY:
        return None
    return (pull or images.pull)(text, tls_verify=tls_verify, creds=creds)


def is_checkpoint(images, image) -> bool:
    annotations = images.annotations(image)
    return any(key in annotations for key in NAME_KEYS)


def checkpoint_layer(images, image, shown: str) -> str:
    """The unpacked layer of a checkpoint image this host can restore."""
    annotations = images.annotations(image)
    if not any(key in annotations for key in NAME_KEYS):
        raise BadArchive(f"image is not a checkpoint: {shown} carries no checkpoint annotation "
                         f"({NAME_KEYS[0]} or {NAME_KEYS[1]})",
                         hint="make one with 'ferry container checkpoint NAME --create-image IMAGE'")
    here = host_architecture()
    made_for = {image.architecture} | {annotations[key] for key in ARCH_KEYS if key in annotations}
    foreign = sorted(arch for arch in made_for if arch and arch != here)
    if foreign:
        raise Incompatible(f"checkpoint image {shown} was made on {foreign[0]}, and this host is {here}",
                           hint="restore it on a host of the architecture it was made on")
    if len(image.layers) != 1:
        raise BadArchive(f"checkpoint image {shown} has {len(image.layers)} layers; a checkpoint image has one",
                         hint=HINT)
    layer = images.layer_paths(image)[0]
    if not os.path.isdir(layer):
        raise NotFound(f"the layer of checkpoint image {shown} is missing from the store",
                       hint="remove the image and pull it again")
    return layer
