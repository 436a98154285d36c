"""Restoring another engine's checkpoint: the members of a podman or CRI-O
archive (checkpoint/foreign.py reads them typed) become the records a ferry
archive carries, so that the rest of a restore is the same for both. Such an
archive carries no digests and no signature: nothing in it is trusted more
than its bytes, and the same host-path rules apply."""

from __future__ import annotations

import os

from ferry.checkpoint import foreign, foreign_layout
from ferry.engine.images import image_by_id
from ferry.engine.config import ArchivedContainer, config_from_foreign, parse_deleted_files
from ferry.util.errors import BadArchive
from ferry.util.strictjson import shown
from ferry.util.timefmt import utc_now

HINT = "the archive is damaged or forged; do not restore from it"


def read_records(staging: str, contents, image_name_ok) -> tuple[foreign.ForeignContainer, foreign.Spec,
                                                                  tuple[str, ...]]:
    """config.dump, spec.dump and deleted.files, and the layout: CRIU's
    inventory and images named as CRIU names them (`image_name_ok`)."""
    sizes = {m.name: m.size for m in contents.members}
    for required in (foreign_layout.CONFIG_DUMP, foreign_layout.SPEC_DUMP, "checkpoint/inventory.img"):
        if required not in sizes:
            raise BadArchive(f"the archive has no {required}", hint=HINT)
    for name in sizes:
        top, _, rest = name.partition("/")
        if top == "checkpoint" and not image_name_ok(rest):
            raise BadArchive(f"member {shown(name)} is not named as CRIU names its images", hint=HINT)
    found = parse_record(staging, foreign_layout.CONFIG_DUMP, foreign.read_config)
    spec = parse_record(staging, foreign_layout.SPEC_DUMP, foreign.read_spec)
    deleted = ()
    if "deleted.files" in sizes:
        # podman lists them from the container's root ("/etc/motd"); ferry's are relative.
        deleted = parse_record(staging, "deleted.files", _relative_deleted)
    return found, spec, deleted


def _relative_deleted(data: bytes) -> tuple[str, ...]:
    import json
    try:
        paths = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"is not JSON: {exc}") from None
    if isinstance(paths, list):
        paths = [p.lstrip("/") if isinstance(p, str) else p for p in paths]
    return parse_deleted_files(json.dumps(paths))


def parse_record(staging: str, name: str, parse):
    """Record `name` of an unpacked archive, read bounded and parsed; BadArchive naming it."""
    with open(os.path.join(staging, name), "rb") as f:
        data = f.read(foreign_layout.MAX_RECORD + 1)
    try:
        return parse(data)
    except ValueError as exc:
        raise BadArchive(f"{name} in the archive is invalid: {exc}", hint=HINT) from None


def find_image(images, found: foreign.ForeignContainer, image_archive: str | None):
    """The image the archive's container ran, by the ID it records."""
    if not found.image_id:
        raise BadArchive(f"{found.describe()} does not record its image's ID", hint=HINT)
    what = f"image {found.image_name or 'its image'} ({found.image_id[:12]})"
    get = (f"'podman save -o image.tar {found.image_name}' where it was made, then 'ferry load -i image.tar'"
           if found.image_name else "'ferry load -i FILE'")
    return image_by_id(images, found.image_id, image_archive, what,
                       missing=f"{what}, which {found.describe()} ran, is not in this root",
                       hint=f"get it with {get}, 'ferry pull' from a registry, or pass --image-archive FILE; "
                            "a rebuilt image has another ID",
                       archive_hint="save the image where the checkpoint was made ('podman save')")


def archived_container(found: foreign.ForeignContainer, spec: foreign.Spec, image, network: str) -> ArchivedContainer:
    try:
        config = config_from_foreign(found, spec, image=image.names[0] if image.names else image.id,
                                     image_digest=image.digest, network=network)
        return ArchivedContainer(found.id, found.name, image.id, utc_now(), config)
    except ValueError as exc:
        raise BadArchive(f"{found.describe()} cannot be restored here: {exc}", hint=HINT) from None
