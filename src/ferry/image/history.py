"""An image's history (`image history`) from its config's `history` entries,
newest first, as podman 4.3.1 lists it: the image's ID on the top entry, a
local image's ID where its top layer begins, `<missing>` elsewhere, and each
entry that made a layer sized as that layer."""

from __future__ import annotations

import json
from typing import Callable, NamedTuple

from ferry.util.errors import BadArchive

MISSING = "<missing>"


class HistoryEntry(NamedTuple):
    id: str            # the image's ID on the newest entry, else "<missing>"
    created: str       # RFC 3339 as the config says it ("" when it says nothing)
    created_by: str
    size: int          # the uncompressed size of the layer it made; 0 for an empty layer
    comment: str


def history_of(image_id: str, config_bytes: bytes, layer_sizes: list[int],
               images_at: Callable[[int], list[str]] | None = None) -> list[HistoryEntry]:
    """The entries of a config (its blob's bytes); `layer_sizes` lowest layer first.
    `images_at(N)` names the local images whose layers are exactly this image's
    lowest N+1 (the image itself first): as podman, the newest entry made at or
    above such a layer shows the first of them not shown yet, others `<missing>`.
    A config that lists more layer-making entries than layers is refused, as podman does."""
    try:
        raw = json.loads(config_bytes).get("history") or []
    except (ValueError, AttributeError):
        raise BadArchive(f"the config of image {image_id[:12]} is not a JSON object") from None
    if not isinstance(raw, list):
        raise BadArchive(f"the config of image {image_id[:12]} has a malformed history")
    images_at = images_at or (lambda position: [image_id] if position == len(layer_sizes) - 1 else [])
    layer = len(layer_sizes) - 1   # the layer the next entry (going down) sits on; -1: below them all
    shown: set[str] = set()
    entries = []
    for item in reversed(raw):
        item = item if isinstance(item, dict) else {}
        shown_id, size = MISSING, 0
        if layer >= 0:
            first = next(iter(images_at(layer)), None)
            if first is not None and first not in shown:
                shown_id = first
                shown.add(first)
            if not item.get("empty_layer"):
                size = layer_sizes[layer]
                layer -= 1
        elif not item.get("empty_layer"):
            raise BadArchive(f"image {image_id[:12]}: its history lists more layers than it has",
                             hint="the image's config is inconsistent")
        entries.append(HistoryEntry(shown_id, str(item.get("created") or ""), str(item.get("created_by") or ""),
                                    size, str(item.get("comment") or "")))
    return entries


def created_by_column(text: str, no_trunc: bool) -> str:
    """CREATED BY as podman's table shows it: cut to 45 characters."""
    return text if no_trunc or len(text) <= 45 else text[:42] + "..."
