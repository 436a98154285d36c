"""ferry's event records, which `ferry events` reads: written by the commands
themselves, as there is no daemon."""

from __future__ import annotations


def record(layout, action: str, *, kind: str = "container", id: str = "", name: str = "",
           image: str = "", attributes: dict | None = None) -> None:
    """Note that `action` (create, start, died, checkpoint, restore...) happened to
    the `kind` object; never fails the command that reports it."""
