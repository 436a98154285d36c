"""Listing the image store (`ferry images`) from its records alone.

`images` must start about as fast as podman's, so this module imports none of
the store's machinery (layers, archives, zstd, tar, dataclasses: about 40 ms):
it reads two tables, and an image's config only when asked for its digest.
"""

from __future__ import annotations

from collections import namedtuple

# What `images` shows of one image; the store's Image has the same names.
ListedImage = namedtuple("ListedImage", "id digest names size created")


def list_images(db) -> list[ListedImage]:
    """Every image, newest first; none in a root whose store was never made."""
    conn = db.read()
    try:
        rows = conn.execute("SELECT id, digest, size, created FROM images").fetchall()
        named = conn.execute("SELECT image_id, name FROM image_names ORDER BY rowid").fetchall()
    except Exception as exc:   # sqlite3.OperationalError; sqlite3 itself is the db's to import
        if "no such table" in str(exc):
            return []
        raise
    names: dict[str, list[str]] = {}
    for image_id, name in named:
        names.setdefault(image_id, []).append(name)
    found = [ListedImage(row[0], row[1], tuple(names.get(row[0], ())), row[2], row[3]) for row in rows]
    return sorted(found, key=lambda image: image.created, reverse=True)
