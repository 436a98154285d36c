"""Image operations that reach beyond the image store: removing an image
must know which containers were made from it."""

from __future__ import annotations


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
