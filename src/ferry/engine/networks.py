"""Network operations that reach beyond the network layer: removing a network
must know which containers use it."""

from __future__ import annotations

from ferry.util.errors import NotFound


def remove_network(engine, name: str, *, force: bool = False) -> None:
    """`network rm`: refuse while containers use the network; with force, remove
    those containers first, as podman's `network rm -f` does. A container is
    never left without its network (its restart would find no address)."""
    networks = engine.networks
    if force:
        for reservation in networks.reservations(name):
            try:
                engine.containers.remove(reservation.container_id, force=True)
            except NotFound:   # a lease whose container is gone (a crash): nothing runs on it
                networks.release(reservation.container_id)
    networks.remove(name)   # refuses if a container joined meanwhile
