"""`ferry volume create|ls|inspect|rm|prune`: podman's volume verbs over engine.volumes."""

from __future__ import annotations


from ferry.cli import render
from ferry.cli.parsing import engine_of, needs_subcommand, subcommands

VOLUME_HEADERS = {"Name": "VOLUME NAME"}
PRUNE_WARNING = ("WARNING! This will remove all volumes not used by at least one container. "
                 "The following volumes will be removed:")


def volume_group(commands) -> None:
    volume = commands.add_parser("volume", help="manage named volumes")
    sub = subcommands(volume, "volume commands")
    volume.set_defaults(handler=needs_subcommand(volume))
    create = sub.add_parser("create", help="create a volume")
    create.add_argument("--driver", default="local", help="only podman's local driver")
    create.add_argument("-l", "--label", action="append", default=[], metavar="KEY[=VALUE]",
                        help="set metadata on the volume")
    create.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="type=tmpfs, device=tmpfs, o=OPTIONS (size=, mode=, uid=, gid=...)")
    create.add_argument("name")
    create.set_defaults(handler=cmd_volume_create)
    ls = sub.add_parser("ls", aliases=["list"], help="list volumes")
    ls.add_argument("-q", "--quiet", action="store_true")
    ls.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                    help="name=REGEX, label=KEY[=VALUE], driver=, dangling=true|false, opt=KEY=VALUE")
    ls.add_argument("--format", default="table", help="table, json, or a Go template like '{{.Name}}'")
    ls.add_argument("--noheading", action="store_true", help="omit the table header")
    ls.set_defaults(handler=cmd_volume_ls)
    rm = sub.add_parser("rm", aliases=["remove"], help="remove volumes")
    rm.add_argument("-f", "--force", action="store_true")
    rm.add_argument("names", nargs="+")
    rm.set_defaults(handler=cmd_volume_rm)
    inspect = sub.add_parser("inspect", help="show volumes")
    inspect.add_argument("-f", "--format", default="json", help="json, or a Go template like '{{.Mountpoint}}'")
    inspect.add_argument("names", nargs="+")
    inspect.set_defaults(handler=cmd_volume_inspect)
    prune = sub.add_parser("prune", help="remove the volumes no container uses")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    prune.add_argument("--filter", action="append", default=[], metavar="label=KEY[=VALUE]",
                       help="only volumes with this label")
    prune.set_defaults(handler=cmd_volume_prune)


def cmd_volume_create(args) -> int:
    from ferry.engine.volumes import LOCAL_DRIVER, parse_labels, parse_options
    from ferry.util.errors import NotFound
    if args.driver != LOCAL_DRIVER:
        raise NotFound(f"volume plugin {args.driver!r} is not available: ferry has the local driver only",
                       hint="drop --driver, or use --driver local")
    labels, options = parse_labels(args.label), parse_options(args.opt)   # before anything is made
    render.line(engine_of(args).volumes.create(args.name, labels=labels, options=options)["Name"])
    return 0


def cmd_volume_ls(args) -> int:
    from ferry.engine.volumes import VOLUME_FILTERS, parse_filters
    filters = parse_filters(args.filter, VOLUME_FILTERS, "volume")
    volumes = engine_of(args).volumes.filtered(filters)
    if args.quiet:
        for v in volumes:
            render.line(v["Name"])
    elif args.format == "json":
        render.json_out(volumes)
    elif volumes:   # podman prints not even the header for none
        fmt = "table {{.Driver}}\t{{.Name}}" if args.format == "table" else args.format
        render.template(fmt, [volume_view(v) for v in volumes], VOLUME_HEADERS, heading=not args.noheading,
                        name="ls")
    return 0


def volume_view(volume: dict) -> dict:
    """The fields podman's volume templates see: its JSON keys, times as Go prints them."""
    from ferry.util.timefmt import go_time
    from ferry.cli.gotemplate import GoMap
    return {**volume, "CreatedAt": go_time(volume["CreatedAt"]), "Labels": GoMap(volume["Labels"]),
            "Options": GoMap(volume["Options"])}


def cmd_volume_rm(args) -> int:
    from ferry.cli.parsing import each_name
    from ferry.util.errors import InUse
    engine = engine_of(args)
    return each_name(args, args.names, lambda name: engine.volumes.remove(
        name, engine.containers.users_of_volume(name), force=args.force), first=InUse)


def cmd_volume_inspect(args) -> int:
    volumes = engine_of(args).volumes
    found = [volumes.inspect(n) for n in args.names]
    if args.format == "json":
        render.json_out(found)
    else:
        render.template(args.format, [volume_view(v) for v in found], heading=False, name="inspect")
    return 0


def cmd_volume_prune(args) -> int:
    """podman's: the unused volumes listed and a question first, unless -f;
    each removed volume's name printed."""
    from ferry.engine.volumes import PRUNE_FILTERS, parse_filters
    filters = parse_filters(args.filter, PRUNE_FILTERS, "volume")
    volumes = engine_of(args).volumes
    doomed = volumes.prunable(filters)
    if not args.force:
        render.line(PRUNE_WARNING)
        for name in doomed:
            render.line(name)
        if not doomed:   # podman's words when there is nothing to ask about
            render.line("No dangling volumes found")
            return 0
        if not render.confirmed():
            return 0
    for name in volumes.prune(doomed):
        render.line(name)
    return 0

