"""Where things live under one state root.

All paths of a root derive from here, so two roots on one machine (as tests
use to simulate two hosts) can never share a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_ROOT = "/var/lib/ferry"


@dataclass(frozen=True)
class Layout:
    root: str

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
