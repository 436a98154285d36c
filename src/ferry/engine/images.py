"""Image operations that reach beyond the image store: removing an image
must know which containers were made from it, a restore finds its image
by ID or in the archive the user hands it, and a push compresses with the
archive codecs."""

from __future__ import annotations

from ferry.util.errors import NotFound


def remove_image(engine, ref_or_id: str, *, force: bool = False) -> list[str]:
    """`rmi`: refuse while containers use the image; with force, remove those
    containers first, as podman's `rmi -f` does. Returns podman's lines."""
    containers = engine.containers

    def in_use(image_id: str) -> list[str]:
        # Called by the store only once it has decided to delete the image
        # (not when it merely untags one of several names).
        users = containers.users_of_image(image_id)
        if not force:
            return users
        for name in users:
            containers.remove(name, force=True)
        return []

    return engine.images.remove(ref_or_id, force=force, in_use=in_use)


def image_by_id(images, image_id: str, image_archive: str | None, what: str, missing: str, hint: str,
                archive_hint: str | None = None):
    """The image of this ID, loading --image-archive first when it is not here:
    a restore looks an image up by the ID its archive records, as podman does
    (a name may point at another image here). `missing` and `hint` say why
    and how when neither has it."""
    try:
        return images.get(image_id)
    except NotFound:
        if not image_archive:
            raise NotFound(missing, hint=hint) from None
    images.load(image_archive)
    try:
        return images.get(image_id)
    except NotFound:
        raise NotFound(f"--image-archive {image_archive} does not hold {what}", hint=archive_hint) from None


def push_image(engine, ref: str, dest: str | None, **options) -> str:
    """`ferry push`, its layers compressed by the archive codecs."""
    from ferry.checkpoint.archive.codecs import sink_for
    from ferry.image.push import push
    return push(engine.images, ref, dest, sink_for=sink_for, tmp_dir=engine.layout.tmp, **options)
