"""`ferry network create|ls|inspect|rm`: podman's verbs over NetworkManager."""

from __future__ import annotations

from ferry.cli import render
from ferry.cli.parsing import add_commands, engine_of, needs_subcommand, subcommands

DRIVER = "bridge"


def register(commands, only: str | None = None) -> bool:
    """Add `network` to the top-level subparsers of ferry.cli.main.build_parser, unless
    `only` names another command. True when it added `only`."""
    return add_commands(commands, {"network": _add_network}, only)


def _add_network(commands) -> None:
    network = commands.add_parser("network", help="manage container networks")
    verbs = subcommands(network, "network commands")
    network.set_defaults(handler=needs_subcommand(network))

    create = verbs.add_parser("create", help="create a bridge network")
    create.add_argument("--subnet", metavar="CIDR", help="IPv4 subnet (default: a free 10.N.0.0/16)")
    create.add_argument("--gateway", metavar="IP", help="gateway address on the bridge (default: first host)")
    create.add_argument("--interface-name", metavar="NAME", dest="bridge",
                        help="bridge name; roots that name the same bridge share one network")
    create.add_argument("name", metavar="NAME")
    create.set_defaults(handler=cmd_create)

    ls = verbs.add_parser("ls", aliases=["list"], help="list networks")
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


def as_podman(network) -> dict:
    """The keys `podman network inspect` prints."""
    return {"name": network.name, "id": network.id, "driver": DRIVER,
            "network_interface": network.bridge, "created": network.created,
            "subnets": [{"subnet": network.subnet, "gateway": network.gateway}],
            "ipv6_enabled": False, "internal": False, "dns_enabled": False,
            "ipam_options": {"driver": "host-local"}}


def cmd_create(args) -> int:
    network = engine_of(args).networks.create(args.name, args.subnet, args.gateway, bridge=args.bridge)
    render.line(network.name)
    return 0


def cmd_ls(args) -> int:
    manager = engine_of(args).networks
    manager.default()   # like podman, the default network is always listed
    networks = manager.list()
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
            "Internal": False, "DNSEnabled": False, "Labels": GoMap(), "Options": GoMap(),
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
    from ferry.engine.networks import remove_network
    engine = engine_of(args)
    for name in args.names:
        remove_network(engine, name, force=args.force)
        render.line(name)
    return 0
