"""Where things live under one state root.

All paths of a root derive from here, so two roots on one machine (as tests
use to simulate two hosts) can never share a file.
"""

from __future__ import annotations

import os
from collections import namedtuple

DEFAULT_ROOT = "/var/lib/ferry"


# A named tuple rather than a frozen dataclass: every command builds a Layout,
# and importing dataclasses would cost `ferry ps` a fifth of its time.
class Layout(namedtuple("Layout", "root")):
    __slots__ = ()

    @classmethod
    def at(cls, root: str | None) -> "Layout":
        return cls(os.path.abspath(root or os.environ.get("FERRY_ROOT") or DEFAULT_ROOT))

    @property
    def database(self) -> str:
        return os.path.join(self.root, "ferry.db")

    @property
    def tmp(self) -> str:
        return os.path.join(self.root, "tmp")

    @property
    def containers(self) -> str:
        return os.path.join(self.root, "containers")

    @property
    def images(self) -> str:
        return os.path.join(self.root, "images")

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.root, "checkpoints")

    @property
    def volumes(self) -> str:
        return os.path.join(self.root, "volumes")

    @property
    def locks(self) -> str:
        return os.path.join(self.root, "locks")

    def lock(self, name: str) -> str:
        return os.path.join(self.locks, f"{name}.lock")

    def container_dir(self, container_id: str) -> str:
        return os.path.join(self.containers, container_id)
