"""Network operations that reach beyond the network layer: removing a network
must know which containers use it."""

from __future__ import annotations

from ferry.network import hostfiles
from ferry.util.errors import Conflict, NotFound

# A container's /etc/hosts past this size (written inside it) is left as it is.
MAX_HOSTS_FILE = 1 << 20


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


def connect_network(engine, network: str, name_or_id: str, *, ip: str | None = None) -> None:
    """`network connect`: the container joins one more network, recorded in its
    config (its next start, a checkpoint's restore, here or elsewhere, bring
    the interface back); a running container gets the interface at once."""
    from ferry.engine.config import BRIDGE, MAX_NETWORKS, NetworkLink
    containers = engine.containers
    container = containers.get(name_or_id)
    net = engine.networks.get(network)   # NotFound before anything changes
    with containers.locked(container, "network connect"):
        config = containers.get(container.id, refresh=False).config
        if config.network_mode != BRIDGE:
            raise Conflict(f"container {container.name} uses network mode {config.network_mode}, which joins "
                           "no network", hint="run it on a bridge network to connect it to others")
        if net.name in (link.network for link in config.joined):
            raise Conflict(f"container {container.name} is already connected to network {net.name!r}",
                           hint=f"disconnect it first: 'ferry network disconnect {net.name} {container.name}'")
        if 1 + len(config.more_networks) >= MAX_NETWORKS:
            raise Conflict(f"container {container.name} is on {MAX_NETWORKS} networks, the most ferry gives one",
                           hint="disconnect it from another first")
        joined = engine.networks.join(container.id, net.name, ip=ip)
        try:
            _save_config(containers, container.id, config._replace(
                more_networks=(*config.more_networks, NetworkLink(net.name, joined.ip, joined.mac))))
        except BaseException:
            engine.networks.leave(container.id, net.name)
            raise
        _edit_hosts_file(containers, container.id, lambda text: hostfiles.with_address(
            text, joined.ip, config.hostname))


def disconnect_network(engine, network: str, name_or_id: str) -> None:
    """`network disconnect`: the container leaves a network it joined beyond
    its first; a running one loses the interface at once."""
    containers = engine.containers
    container = containers.get(name_or_id)
    net = engine.networks.get(network)
    with containers.locked(container, "network disconnect"):
        config = containers.get(container.id, refresh=False).config
        if net.name not in (link.network for link in config.joined):
            raise Conflict(f"container {container.name} is not connected to network {net.name}",
                           hint="see its networks with 'ferry inspect'")
        left = engine.networks.leave(container.id, net.name)
        _save_config(containers, container.id, config._replace(
            more_networks=tuple(link for link in config.more_networks if link.network != net.name)))
        _edit_hosts_file(containers, container.id, lambda text: hostfiles.without_address(
            text, left.ip, config.hostname))


def _edit_hosts_file(containers, container_id: str, edit) -> None:
    """The /etc/hosts of a running container, edited in place: it is bind-mounted,
    so a new file (a rename) would not be seen inside. A container that does not run
    has none yet; its start writes it afresh."""
    try:
        path = containers.files(container_id).at("hosts")
        with open(path, "r+", encoding="utf-8", errors="surrogateescape") as hosts:
            text = hosts.read(MAX_HOSTS_FILE + 1)
            if len(text) > MAX_HOSTS_FILE:   # grown inside the container past what ferry rewrites
                return
            edited = edit(text)
            if edited != text:
                hosts.seek(0)
                hosts.write(edited)
                hosts.truncate()
    except FileNotFoundError:
        pass


def _save_config(containers, container_id: str, config) -> None:
    with containers.db.write() as conn:
        conn.execute("UPDATE containers SET config = ? WHERE id = ?", (config.to_json(), container_id))


def prunable_networks(engine, labels: list[str] | None = None) -> list[str]:
    """`network prune`: the networks no container uses, never the default one."""
    from ferry.engine.volumes import labels_match
    from ferry.network.ipam import DEFAULT_NETWORK
    networks = engine.networks
    used = {r.network for r in networks.reservations()}
    return [n.name for n in networks.list()
            if n.name != DEFAULT_NETWORK and n.name not in used
            and (not labels or labels_match(dict(n.labels), labels))]


def prune_networks(engine, names: list[str]) -> list[str]:
    """Remove these networks unless a container joined one meanwhile; the removed."""
    removed = []
    for name in names:
        try:
            engine.networks.remove(name)
        except (Conflict, NotFound):
            continue
        removed.append(name)
    return removed
