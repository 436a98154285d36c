"""`ferry network create|ls|inspect|rm|connect|disconnect|prune`: podman's verbs over NetworkManager."""

from __future__ import annotations

from ferry.cli import render
from ferry.cli.parsing import add_commands, engine_of, needs_subcommand, subcommands
from ferry.util.errors import UsageError

DRIVER = "bridge"
NETWORK_FILTERS = ("name", "id", "driver", "label", "dangling")   # podman 4.3.1's, less until
PRUNE_FILTERS = ("label",)
PRUNE_WARNING = "WARNING! This will remove all networks not used by at least one container."


def register(commands, only: str | None = None) -> bool:
    """Add `network` to the top-level subparsers of ferry.cli.main.build_parser, unless
    `only` names another command. True when it added `only`."""
    return add_commands(commands, {"network": _add_network}, only)


def _add_network(commands) -> None:
    network = commands.add_parser("network", help="manage container networks")
    verbs = subcommands(network, "network commands")
    network.set_defaults(handler=needs_subcommand(network))

    create = verbs.add_parser("create", help="create a bridge network")
    create.add_argument("-d", "--driver", default=DRIVER, help="only bridge")
    create.add_argument("--subnet", metavar="CIDR", help="IPv4 subnet (default: a free 10.N.0.0/16)")
    create.add_argument("--gateway", metavar="IP", help="gateway address on the bridge (default: first host)")
    create.add_argument("--ip-range", metavar="CIDR", help="give containers addresses from this part of the subnet")
    create.add_argument("--internal", action="store_true",
                        help="no route out: its containers reach each other only")
    create.add_argument("--label", action="append", default=[], metavar="KEY[=VALUE]",
                        help="set metadata on the network")
    create.add_argument("--interface-name", metavar="NAME", dest="bridge",
                        help="bridge name; roots that name the same bridge share one network")
    create.add_argument("name", metavar="NAME")
    create.set_defaults(handler=cmd_create)

    ls = verbs.add_parser("ls", aliases=["list"], help="list networks")
    ls.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                    help="name=REGEX, id=PREFIX, driver=bridge, label=KEY[=VALUE], dangling=true|false")
    ls.add_argument("--format", default="table", help="table, json, or a Go template like '{{.Name}}'")
    ls.add_argument("-q", "--quiet", action="store_true", help="print names only")
    ls.add_argument("--noheading", action="store_true", help="omit the table header")
    ls.set_defaults(handler=cmd_ls)

    inspect = verbs.add_parser("inspect", help="show networks as JSON")
    inspect.add_argument("-f", "--format", default="json", help="json, or a Go template like '{{.Subnets}}'")
    inspect.add_argument("names", metavar="NAME", nargs="+")
    inspect.set_defaults(handler=cmd_inspect)

    rm = verbs.add_parser("rm", aliases=["remove"], help="remove networks")
    rm.add_argument("-f", "--force", action="store_true",
                    help="remove the containers that use it first")
    rm.add_argument("names", metavar="NAME", nargs="+")
    rm.set_defaults(handler=cmd_rm)

    connect = verbs.add_parser("connect", help="connect a container to a network")
    connect.add_argument("--ip", help="a static IPv4 address on the network")
    connect.add_argument("network", metavar="NETWORK")
    connect.add_argument("container", metavar="CONTAINER")
    connect.set_defaults(handler=cmd_connect)

    disconnect = verbs.add_parser("disconnect", help="disconnect a container from a network")
    disconnect.add_argument("-f", "--force", action="store_true", help="accepted, as podman's")
    disconnect.add_argument("network", metavar="NETWORK")
    disconnect.add_argument("container", metavar="CONTAINER")
    disconnect.set_defaults(handler=cmd_disconnect)

    prune = verbs.add_parser("prune", help="remove the networks no container uses")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    prune.add_argument("--filter", action="append", default=[], metavar="label=KEY[=VALUE]",
                       help="only networks with this label")
    prune.set_defaults(handler=cmd_prune)


def as_podman(network) -> dict:
    """The keys `podman network inspect` prints (labels and lease_range only when set, as podman)."""
    data = {"name": network.name, "id": network.id, "driver": DRIVER,
            "network_interface": network.bridge, "created": network.created,
            "subnets": [_subnet(network)],
            "ipv6_enabled": False, "internal": network.internal, "dns_enabled": False}
    if network.labels:
        data["labels"] = dict(network.labels)
    data["ipam_options"] = {"driver": "host-local"}
    return data


def _subnet(network) -> dict:
    subnet = {"subnet": network.subnet, "gateway": network.gateway}
    if network.ip_range:   # podman's lease_range: the range's first host to its last address
        import ipaddress
        pool = ipaddress.IPv4Network(network.ip_range)
        subnet["lease_range"] = {"start_ip": str(pool.network_address + 1), "end_ip": str(pool.broadcast_address)}
    return subnet


def cmd_create(args) -> int:
    from ferry.engine.volumes import parse_labels
    if args.driver != DRIVER:
        raise UsageError(f"unsupported driver {args.driver}: ferry makes bridge networks only",
                         hint="drop -d, or use -d bridge")
    labels = parse_labels(args.label)
    network = engine_of(args).networks.create(args.name, args.subnet, args.gateway, bridge=args.bridge,
                                              internal=args.internal, labels=labels, ip_range=args.ip_range)
    render.line(network.name)
    return 0


def cmd_ls(args) -> int:
    from ferry.engine.volumes import parse_filters
    filters = parse_filters(args.filter, NETWORK_FILTERS, "network")
    engine = engine_of(args)
    manager = engine.networks
    manager.default()   # like podman, the default network is always listed
    networks = _filtered(engine, manager.list(), filters)
    if args.quiet:
        for n in networks:
            render.line(n.name)
    elif args.format == "json":
        render.json_out([as_podman(n) for n in networks])
    else:
        fmt = "table {{.ID}}\t{{.Name}}\t{{.Driver}}" if args.format == "table" else args.format
        render.template(fmt, [_view(n, short_id=True) for n in networks], LS_HEADERS, heading=not args.noheading,
                        name="ls")
    return 0


LS_HEADERS = {"ID": "NETWORK ID"}


def _view(network, short_id: bool = False) -> dict:
    """The fields podman's network templates see (its Network struct)."""
    from ferry.cli.gotemplate import GoMap
    from ferry.util.timefmt import go_time
    return {"ID": network.id[:12] if short_id else network.id, "Name": network.name, "Driver": DRIVER,
            "NetworkInterface": network.bridge, "Created": go_time(network.created),
            "Subnets": [{"Subnet": network.subnet, "Gateway": network.gateway}], "IPv6Enabled": False,
            "Internal": network.internal, "DNSEnabled": False, "Labels": GoMap(dict(network.labels)), "Options": GoMap(),
            "IPAMOptions": GoMap(driver="host-local")}


def cmd_inspect(args) -> int:
    manager = engine_of(args).networks
    networks = [manager.get(name) for name in args.names]
    if args.format == "json":
        render.json_out([as_podman(n) for n in networks])
    else:
        render.template(args.format, [_view(n) for n in networks], heading=False, name="inspect")
    return 0


def cmd_rm(args) -> int:
    from ferry.cli.parsing import each_name
    from ferry.engine.networks import remove_network
    from ferry.util.errors import InUse
    engine = engine_of(args)
    return each_name(args, args.names, lambda name: remove_network(engine, name, force=args.force), first=InUse)


def _filtered(engine, networks: list, filters: dict[str, list[str]]) -> list:
    """podman's `network ls --filter`: one key's values are alternatives, all keys must match."""
    from ferry.engine.volumes import labels_match, name_matches, truth
    from ferry.network.ipam import DEFAULT_NETWORK
    used = {r.network for r in engine.networks.reservations()} if "dangling" in filters else set()
    def keep(network) -> bool:
        for key, values in filters.items():
            if key == "name" and not name_matches(network.name, values):
                return False
            if key == "id" and not any(network.id.startswith(v) for v in values):
                return False
            if key == "driver" and DRIVER not in values:
                return False
            if key == "label" and not labels_match(dict(network.labels), values):
                return False
            if key == "dangling":   # podman counts its default network as never dangling
                dangling = network.name != DEFAULT_NETWORK and network.name not in used
                if not any(truth(v, "dangling") == dangling for v in values):
                    return False
        return True
    return [n for n in networks if keep(n)]


def cmd_connect(args) -> int:
    from ferry.engine.networks import connect_network
    connect_network(engine_of(args), args.network, args.container, ip=args.ip)
    return 0


def cmd_disconnect(args) -> int:
    from ferry.engine.networks import disconnect_network
    disconnect_network(engine_of(args), args.network, args.container)
    return 0


def cmd_prune(args) -> int:
    """podman's: a question first unless -f; each removed network's name printed."""
    from ferry.engine.networks import prunable_networks, prune_networks
    from ferry.engine.volumes import parse_filters
    filters = parse_filters(args.filter, PRUNE_FILTERS, "network")
    engine = engine_of(args)
    if not args.force:
        render.line(PRUNE_WARNING)
        if not render.confirmed():
            return 0
    for name in prune_networks(engine, prunable_networks(engine, filters.get("label"))):
        render.line(name)
    return 0
