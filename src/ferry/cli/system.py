"""System commands, podman-style: `ferry version`, `ferry info` and the
`ferry system ...` group (check, compat, df, prune)."""

from __future__ import annotations

import json
import math
import sys

from ferry.cli import render
from ferry.cli.parsing import add_commands, engine_of, needs_subcommand, subcommands

EXIT_OK = 0
EXIT_NOT_READY = 1
SHORT_ID = 12


# ---- version -------------------------------------------------------------------

VERSION_LINES = (("Version", "Version"), ("API Version", "APIVersion"), ("Go Version", "GoVersion"),
                 ("Built", "BuiltTime"), ("OS/Arch", "OsArch"))


def cmd_version(args) -> int:
    from ferry.engine.system import version_info
    client = version_info()
    if args.format is None:
        rows = [("Client:", "ferry")] + [(f"{label}:", client[key]) for label, key in VERSION_LINES]
        for label, value in rows:
            render.line(f"{label:<13} {value}")
    else:
        from ferry.cli.gotemplate import is_json
        if is_json(args.format):   # podman prints this one on a single line
            render.line(json.dumps({"Client": client}, separators=(",", ":")))
        else:
            _version_template(args.format, client)
    return EXIT_OK


def _version_template(fmt: str, client: dict) -> None:
    """podman's way: the template runs on {Client, Server} (Server is nil: no
    remote); when that fails, what it printed stays and the template runs
    again on the client's version itself, with .Server. cut out."""
    from ferry.cli import gotemplate
    try:
        if ".Server." in fmt:   # a field of Go's nil pointer: an error, whatever the field
            raise gotemplate.TemplateError("no server")
        sys.stdout.write(gotemplate.render_rows(fmt, [{"Client": client, "Server": None}], {}, name="version"))
    except gotemplate.TemplateError as first:
        sys.stdout.write(first.output)
        render.template(fmt.replace(".Server.", "."), [client], name="version")


# ---- info ------------------------------------------------------------------------

# Where podman's Go field names differ from its JSON keys, for templates ({{.Host.OCIRuntime.Name}}).
GO_NAMES = {"cpus": "CPUs", "cgroupVersion": "CgroupsVersion", "ociRuntime": "OCIRuntime", "os": "OS",
            "memFree": "MemFree", "memTotal": "MemTotal"}
# JSON objects that are Go maps (their keys stay as they are).
MAP_KEYS = ("registries", "graphStatus", "graphOptions")


def go_view(data: dict, key: str = "") -> dict:
    """podman's info as its Go structs show it to a template: capitalised field names."""
    from ferry.cli.gotemplate import GoMap
    if key in MAP_KEYS:
        return GoMap(data)
    view = {}
    for name, value in data.items():
        field = GO_NAMES.get(name, name[:1].upper() + name[1:])
        view[field] = go_view(value, name) if isinstance(value, dict) else value
    return view


def yaml_text(data, indent: int = 0) -> list[str]:
    """podman's YAML for `info`: keys sorted, lists at their key's indent."""
    pad = " " * indent
    lines = []
    for key in sorted(data):
        value = data[key]
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{_yaml_key(key)}:")
            lines += yaml_text(value, indent + 2)
        elif isinstance(value, list) and value:
            lines.append(f"{pad}{_yaml_key(key)}:")
            lines += [f"{pad}- {_yaml_scalar(item)}" for item in value]
        elif isinstance(value, str) and "\n" in value:
            lines.append(f"{pad}{_yaml_key(key)}: |-")
            lines += [f"{pad}  {part}" for part in value.split("\n")]
        else:
            lines.append(f"{pad}{_yaml_key(key)}: {_yaml_scalar(value)}")
    return lines


def _yaml_key(key: str) -> str:
    return key if key and _plain(key) else json.dumps(key)


def _yaml_scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    text = str(value)
    if text == "" or text.lower() in ("true", "false", "yes", "no", "on", "off", "null", "~") \
            or _number_like(text):
        return json.dumps(text)
    if not _plain(text):
        return "'" + text.replace("'", "''") + "'"
    return text


def _plain(text: str) -> bool:
    """Whether YAML reads the text back as this string without quotes."""
    return not (text[0] in "-?:,[]{}#&*!|>'\"%@` " or text[-1] == " " or ": " in text or " #" in text
                or text.endswith(":"))


def _number_like(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def cmd_info(args) -> int:
    from ferry.engine.core import Engine
    from ferry.engine.system import host_info
    data = host_info(Engine(args.root))
    if args.format is None:
        for text in yaml_text(data):
            render.line(text)
    elif args.format == "json":
        render.json_out(data)
    else:
        render.template(args.format, [go_view(data)], name="info")
    return EXIT_OK


# ---- system check, compat ------------------------------------------------------------

def cmd_system_check(args) -> int:
    from ferry.engine.system import system_check
    report = system_check()
    if args.format == "json":
        render.json_out(report.to_dict())
    else:
        render.checks_table(report.checks)
    if report.ready:
        missing = [c.key for c in report.checks if c.status != "ok"]
        if args.format == "table":
            render.line("\ncheckpoint/restore: ready" + (
                f" (optional features not available: {', '.join(missing)})" if missing else ""))
        return EXIT_OK
    first = report.blocking[0]
    others = f" (and {len(report.blocking) - 1} more)" if len(report.blocking) > 1 else ""
    render.error(f"checkpoint/restore cannot work here: {first.key}: {first.detail}{others}",
                 hint=f"without it, {first.impact}")
    return EXIT_NOT_READY


def cmd_system_compat(args) -> int:
    from ferry.engine.archives import compat
    found = compat(engine_of(args), args.target, token_file=args.token_file)
    if args.format == "json":
        render.json_out(found)
    else:
        render.table(["CHECK", "CHECKPOINT", "THIS HOST" if not args.target.startswith("http") else "THAT HOST",
                      "VERDICT"], [[r["check"], r["checkpoint"], r["host"], r["verdict"]] for r in found["checks"]])
        for row in found["checks"]:
            if row["verdict"] in ("refused", "missing"):
                render.line(f"{row['check']}: {row['detail']}")
    return EXIT_OK if found["compatible"] else EXIT_NOT_READY


# ---- system df -------------------------------------------------------------------------

def docker_size(size: float) -> str:
    """Sizes as podman's `system df` shows them: "2.081MB", "12B"."""
    return render.go_size(size)


def reclaimable(part: int, whole: int) -> str:
    percent = math.floor(part / whole * 100 + 0.5) if whole > 0 else 0
    return f"{docker_size(part)} ({percent}%)"


DF_HEADERS = {"Type": "TYPE", "Total": "TOTAL", "Active": "ACTIVE", "Size": "SIZE", "Reclaimable": "RECLAIMABLE"}


def df_summary(usage) -> list[dict]:
    """The three rows of `system df`, with the fields its templates see."""
    from ferry.engine.listing import RUNNING
    images_size = sum(i.size for i in usage.images)
    unused_images = sum(i.size for i in usage.images if not i.containers)
    containers_size = sum(c.size for c in usage.containers)
    stopped = sum(c.size for c in usage.containers if c.state != RUNNING)
    volumes_size = sum(v.size for v in usage.volumes)
    unused_volumes = sum(v.size for v in usage.volumes if not v.links)
    rows = [("Images", len(usage.images), sum(1 for i in usage.images if i.containers), images_size, unused_images),
            ("Containers", len(usage.containers), sum(1 for c in usage.containers if c.state == RUNNING),
             containers_size, stopped),
            ("Local Volumes", len(usage.volumes), sum(1 for v in usage.volumes if v.links), volumes_size,
             unused_volumes)]
    return [{"Type": kind, "Total": total, "Active": active, "Size": docker_size(size),
             "Reclaimable": reclaimable(free, size), "RawSize": size, "RawReclaimable": free}
            for kind, total, active, size, free in rows]


def cmd_system_df(args) -> int:
    from ferry.engine.system import disk_usage
    usage = disk_usage(engine_of(args))
    if args.verbose:   # podman's -v ignores --format
        _df_verbose(usage)
        return EXIT_OK
    rows = df_summary(usage)
    if args.format is None:   # podman's own default, so its table to the byte
        render.template("table {{.Type}}\t{{.Total}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}", rows,
                        DF_HEADERS, name="df")
    elif args.format == "json":
        render.json_out(rows)
    else:
        render.template(args.format, rows, DF_HEADERS, name="df")
    return EXIT_OK


def _df_verbose(usage) -> None:
    from ferry.cli.images import split_repo_tag
    from ferry.util.timefmt import human_duration, since
    image_rows = []
    for image in usage.images:
        for name in image.names or ("<none>:<none>",):
            repo, tag = split_repo_tag(name)
            image_rows.append([repo, tag, image.id[:SHORT_ID], _age(image.created, human_duration, since),
                               docker_size(image.size), docker_size(image.shared),
                               docker_size(image.size - image.shared), str(image.containers)])
    _tab_table("Images space usage:", ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE",
                                       "UNIQUE SIZE", "CONTAINERS"], image_rows)
    render.line("")
    _tab_table("Containers space usage:",
               ["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"],
               [[c.id[:SHORT_ID], c.image_id[:SHORT_ID], c.command, str(c.volumes), docker_size(c.size),
                 _age(c.created, human_duration, since), c.state, c.name] for c in usage.containers])
    render.line("")
    _tab_table("Local Volumes space usage:", ["VOLUME NAME", "LINKS", "SIZE"],
               [[v.name, str(v.links), docker_size(v.size)] for v in usage.volumes])


def _tab_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """One of `df -v`'s tables, laid out by Go's tabwriter as podman's are."""
    from ferry.cli.gotemplate import tabwrite
    render.line(f"{title}\n")
    sys.stdout.write(tabwrite("".join("\t".join(cells) + "\n" for cells in [headers, *rows])))


def _age(created: str, human_duration, since) -> str:
    try:
        return human_duration(since(created))
    except ValueError:
        return "unknown"


# ---- system prune ------------------------------------------------------------------------

def _prune_warning(args) -> str:
    items = ["all stopped containers (a checkpointed one is kept)", "all networks not used by at least one container"]
    if args.volumes:
        items.append("all volumes not used by at least one container")
    items.append("all images without at least one container associated with them" if args.all
                 else "all dangling images")
    items.append("what interrupted commands and crashes left behind")
    return "WARNING! This command removes:\n" + "".join(f"\t- {item}\n" for item in items)


def cmd_system_prune(args) -> int:
    from ferry.engine.system import check_prune_filters, system_prune
    check_prune_filters(args.filter)
    if not args.force:
        if not render.confirmed(_prune_warning(args)):
            return EXIT_OK
    report = system_prune(engine_of(args), all_images=args.all, volumes=args.volumes, filters=args.filter)
    for title, removed in (("Deleted Containers", report.containers), ("Deleted Networks", report.networks),
                           ("Deleted Volumes", report.volumes), ("Deleted Images", report.images),
                           ("Deleted Leftovers", report.leftovers)):
        if removed:
            render.line(title)
            for item in removed:
                render.line(item)
    render.line(f"Total reclaimed space: {docker_size(report.reclaimed)}")
    return EXIT_OK


# ---- registration ----------------------------------------------------------------------

def register(commands, only: str | None = None) -> bool:
    """Add version, info and the system group to ferry's top-level subparsers, or
    with `only`, just that one if it is ours. True when it added `only`."""
    return add_commands(commands, {"version": _add_version, "info": _add_info, "system": _add_system}, only)


def _add_version(commands) -> None:
    version = commands.add_parser("version", help="show ferry's version (podman's Client block)")
    version.add_argument("-f", "--format", default=None, help="json, or a Go template like '{{.Client.Version}}'")
    version.set_defaults(handler=cmd_version)


def _add_info(commands) -> None:
    info = commands.add_parser("info", help="show the host, the store and ferry's own paths")
    info.add_argument("-f", "--format", default=None, help="json, or a Go template like '{{.Host.Arch}}'")
    info.set_defaults(handler=cmd_info)


def _add_system(commands) -> None:
    system = commands.add_parser("system", help="host-level commands")
    system_commands = subcommands(system, "system commands")
    check = system_commands.add_parser(
        "check", help="preflight: list every host feature ferry relies on",
        description="Exit 0 when checkpoint/restore can work on this host.")
    check.add_argument("--format", choices=("table", "json"), default="table")
    check.set_defaults(handler=cmd_system_check)
    system.set_defaults(handler=needs_subcommand(system))
    compat = system_commands.add_parser(
        "compat", help="would a checkpoint restore here (FILE), or this host's on another (URL)?",
        description="Compare the checkpoint's host (FILE) with this one, or this host with the agent at URL: "
                    "architecture, kernel, cgroups, CRIU, runc, CRIU's CPU check, and the image. "
                    "Exits 0 when nothing would refuse the restore, 1 otherwise.")
    compat.add_argument("target", metavar="FILE|URL")
    compat.add_argument("--token-file", metavar="FILE", help="the agent's token (with a URL)")
    compat.add_argument("--format", choices=("table", "json"), default="table")
    compat.set_defaults(handler=cmd_system_compat)
    df = system_commands.add_parser("df", help="show the disk space images, containers and volumes use")
    df.add_argument("-v", "--verbose", action="store_true", help="each image, container and volume")
    df.add_argument("--format", default=None, help="json, or a Go template like '{{.Type}} {{.Size}}'")
    df.set_defaults(handler=cmd_system_df)
    prune = system_commands.add_parser(
        "prune", help="remove stopped containers, unused networks, dangling images, and crash leftovers",
        description="Checkpointed containers are kept: their checkpoint is a service waiting to be restored.")
    prune.add_argument("-a", "--all", action="store_true", help="every unused image, not only dangling ones")
    prune.add_argument("--volumes", action="store_true", help="also volumes no container uses")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    prune.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                       help="label=KEY[=VALUE], label!=..., until=TIME")
    prune.set_defaults(handler=cmd_system_prune)
