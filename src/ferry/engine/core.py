"""The Engine: one state root's services, built lazily, for cli/ and api/."""

from __future__ import annotations

import os
from functools import cached_property

from ferry.store.db import Database
from ferry.store.layout import Layout
from ferry.util.errors import PermissionDenied


def require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionDenied("ferry must run as root (it manages namespaces, mounts, cgroups and CRIU)",
                               hint="run it with sudo, or as root")


class Engine:
    def __init__(self, root: str | None = None):
        self.layout = Layout.at(root)

    @cached_property
    def db(self) -> Database:
        require_root()
        os.makedirs(self.layout.root, mode=0o700, exist_ok=True)
        return Database(self.layout.database)

    @cached_property
    def images(self):
        from ferry.image.store import ImageStore
        return ImageStore(self.layout, self.db)

    @cached_property
    def networks(self):
        from ferry.network.manager import NetworkManager
        return NetworkManager(self.layout, self.db)

    @cached_property
    def volumes(self):
        from ferry.engine.volumes import Volumes
        return Volumes(self.layout, self.db)

    @cached_property
    def containers(self):
        from ferry.engine.containers import Containers
        return Containers(self.layout, self.db, self)

    @cached_property
    def listing(self):
        """`ps` without loading Containers (runc, OCI spec, network), which would double its time."""
        from ferry.engine.listing import Listing
        return Listing(self.layout, self.db, self)

    def prune(self) -> list[str]:
        """Remove exited containers, then whatever a crash left behind."""
        removed = []
        for container in self.containers.list(all_states=True):
            if container.state != "running":
                self.containers.remove(container.id)
                removed.append(f"container {container.name}")
        removed += self.containers.prune_leftovers()
        return removed
