"""The Engine: one state root's services, built lazily, for the commands in cli/."""

from __future__ import annotations

import contextlib
import os
from functools import cached_property

from ferry.store.db import Database
from ferry.store.layout import Layout
from ferry.util.errors import Conflict, NotFound, PermissionDenied, UsageError


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
        self.layout.prepare()
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
        return Volumes(self.layout, self.db, self)

    @cached_property
    def containers(self):
        from ferry.engine.containers import Containers
        return Containers(self.layout, self.db, self)

    @cached_property
    def checkpoints(self):
        from ferry.engine.checkpoints import Checkpoints
        return Checkpoints(self.containers)

    @cached_property
    def migrations(self):
        from ferry.engine.migrations import Migrations
        return Migrations(self)

    @cached_property
    def listing(self):
        """`ps` without loading Containers (runc, OCI spec, network), which would double its time."""
        from ferry.engine.listing import Listing
        return Listing(self.layout, self.db, self)

    def prune_containers(self, filters: list[str] = ()) -> tuple[list[tuple[str, str]], int]:
        """Remove the stopped (exited or created) containers the filters (label,
        until) let through; ((id, name) of each, bytes they had written). A
        checkpointed container is kept: its checkpoint is a service waiting to
        be restored, not garbage."""
        from ferry.engine.listing import CREATED, EXITED
        from ferry.util.fs import tree_size
        keep = _container_filter(filters)
        removed, reclaimed = [], 0
        # Listing finishes or undoes what interrupted commands left (their journals).
        for container in self.containers.list(all_states=True):
            if container.state not in (EXITED, CREATED) or container.checkpointed_at or \
                    self.containers.checkpoint_store.stored_of(container.id) or not keep(container):
                continue
            written = tree_size(self.layout.container_files(container.id).upper)
            try:
                self.containers.remove(container.id)
            except (NotFound, Conflict):   # gone, or started, meanwhile
                continue
            removed.append((container.id, container.name))
            reclaimed += written
        return removed, reclaimed

    def prune_leftovers(self) -> list[str]:
        """What interrupted imports, checkpoints and crashes left."""
        removed = self.checkpoints.sweep_stale_imports()
        removed += self.containers.checkpoint_store.sweep()
        removed += self.containers.prune_leftovers()
        return removed

    def prune_runc_leftovers(self) -> list[str]:
        """Mounts an interrupted `runc restore` left in runc's state dir: its
        criu-root, a recursive bind of the container's rootfs (HOST-NOTES).
        They come off before anything there is deleted, which would otherwise
        delete through them into the rootfs: a prune runs this first, as
        `runc delete` removes its state dir recursively."""
        from ferry.engine.listing import RUNNING
        from ferry.util.fs import mounts_under, remove_tree, unmount_under
        from ferry.util.locks import file_lock
        if not os.path.isdir(self.layout.runc):
            return []
        removed = []
        table = self.containers.db  # the containers table is declared by then
        for entry in sorted(os.listdir(self.layout.runc)):
            state_dir = os.path.join(self.layout.runc, entry)
            if not mounts_under(state_dir):
                continue
            # A restore holds the container's lock while runc works in there.
            with file_lock(self.layout.lock(f"container-{entry}")):
                row = table.read().execute("SELECT state FROM containers WHERE id = ?", (entry,)).fetchone()
                if row is not None and row["state"] == RUNNING:
                    continue
                for point in mounts_under(state_dir):
                    removed.append(f"mount {point}")
                unmount_under(state_dir)
                if not os.path.exists(os.path.join(state_dir, "state.json")):
                    remove_tree(state_dir)  # runc knows nothing of it, so no `runc delete` will
            if row is None:
                with contextlib.suppress(OSError):
                    os.unlink(self.layout.lock(f"container-{entry}"))
        return removed


def _container_filter(filters):
    """podman's container prune filters as one test of a container: label=KEY[=VALUE]
    (label!= negates) and until=TIME (created before it; a duration counts back
    from now). Untyped: `ferry ps` builds an Engine, and typing costs it 4 ms."""
    from ferry.util.timefmt import go_time_ns, podman_time_ns
    tests = []
    for text in filters:
        key, _, value = text.partition("=")
        if key in ("label", "label!"):
            name, has_value, expected = value.partition("=")
            negated = key == "label!"
            tests.append(lambda c, name=name, has_value=has_value, expected=expected, negated=negated: (
                (name in dict(c.config.extras.labels)
                 and (not has_value or dict(c.config.extras.labels)[name] == expected)) != negated))
        elif key == "until":
            try:
                when = podman_time_ns(value, since=True)
            except ValueError:
                raise UsageError(f"failed to parse value as time or duration: {value!r}") from None
            tests.append(lambda c, when=when: go_time_ns(c.created_at) < when)
        else:
            raise UsageError(f"{key} is an invalid filter", hint="use label=... or until=...")
    return lambda container: all(test(container) for test in tests)
