"""`ferry ps` (and `ferry container ls`): podman's flags, filters, sort keys,
JSON fields and Go-template fields, checked against podman 4.3.1."""

from __future__ import annotations

import os
import re

from ferry.cli import render
from ferry.cli.parsing import engine_of
from ferry.engine.listing import CREATED, EXITED, PAUSED, RUNNING
from ferry.util.errors import UsageError
from ferry.util.timefmt import go_time, human_duration, since, unix_seconds

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, which costs `ferry ps` 4 ms to import
if TYPE_CHECKING:
    from ferry.engine.listing import ContainerSummary

SHORT_ID = 12
SHORT_COMMAND = 20
SORT_KEYS = ("command", "created", "id", "image", "names", "runningfor", "size", "status")
FILTER_KEYS = ("name", "id", "status", "label", "ancestor", "network", "exited")
STATES = ("created", "exited", "paused", "running", "unknown", "configured", "stopped", "removing", "stopping")
# podman's table headers where they are not the field's name split into words.
HEADERS = {"ID": "CONTAINER ID", "CreatedHuman": "CREATED", "Pod": "POD ID", "PodName": "PODNAME"}
DEFAULT_COLUMNS = ("ID", "Image", "Command", "CreatedHuman", "Status", "Ports", "Names")


def add_flags(p) -> None:
    p.add_argument("-a", "--all", action="store_true", help="show all containers, not only running")
    p.add_argument("-q", "--quiet", action="store_true", help="print IDs only")
    p.add_argument("--format", default="table",
                   help="table, json, or a Go template like '{{.Names}}' or 'table {{.ID}}\\t{{.Status}}'")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="name, id, status, label, ancestor, network or exited; "
                        "the same key given twice matches either value (labels: both)")
    p.add_argument("--no-trunc", action="store_true", help="full IDs and commands")
    p.add_argument("-l", "--latest", action="store_true", help="only the container created last")
    p.add_argument("-n", "--last", type=int, default=-1, metavar="N", help="the N containers created last")
    p.add_argument("--sort", choices=SORT_KEYS, default="created", metavar="KEY",
                   help=f"sort by {', '.join(SORT_KEYS)}")
    p.add_argument("-s", "--size", action="store_true", help="show each container's size")
    p.add_argument("--noheading", action="store_true", help="omit the table header")


def filtered(engine, texts: list[str], names: list[str], chosen=lambda c: True) -> list[str]:
    """The full IDs of the containers that match the --filter `texts` and `chosen`; as podman,
    names beside a filter are refused."""
    if names:
        raise UsageError("--filter takes no arguments")
    filters = parse_filters(texts)
    return [c.id for c in engine.listing.containers(all_states=True) if matches(c, filters, engine) and chosen(c)]


def cmd_ps(args) -> int:
    engine = engine_of(args)
    listing = engine.listing
    filters = parse_filters(args.filter)
    every = args.all or args.latest or args.last > 0 or bool(filters.get("status") or filters.get("exited"))
    containers = [c for c in listing.containers(all_states=every) if matches(c, filters, engine)]
    if args.latest:
        containers = containers[-1:]
    elif args.last > 0:   # podman: 0, as -1, lists them all
        containers = containers[-args.last:]
    stored = listing.with_stored_checkpoints() if any(c.state == EXITED for c in containers) else set()
    sizes = container_sizes(engine, containers) if args.size or args.sort == "size" else {}
    containers = sort(containers, args.sort, stored, sizes)
    if args.quiet:
        for c in containers:
            render.line(c.id if args.no_trunc else c.id[:SHORT_ID])
    elif args.format == "json":
        render.json_out([ps_json(c, stored, sizes) for c in containers])
    else:
        template = args.format
        if template == "table":
            columns = DEFAULT_COLUMNS + (("Size",) if args.size else ())
            template = "table " + "\t".join(f"{{{{.{name}}}}}" for name in columns)
        render.template(template, [ps_view(c, stored, sizes, no_trunc=args.no_trunc) for c in containers],
                        HEADERS, heading=not args.noheading, name="ps")
    return 0


# ---- filters ------------------------------------------------------------------

def parse_filters(texts: list[str]) -> dict[str, list[str]]:
    """--filter KEY=VALUE options, by key."""
    filters: dict[str, list[str]] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if key not in FILTER_KEYS:
            raise UsageError(f"{key} is an invalid filter", hint=f"filter by {', '.join(FILTER_KEYS)}")
        if not sep:
            raise UsageError(f"filter {text!r} has no value", hint=f"use {key}=VALUE")
        if key == "status" and value not in STATES:
            raise UsageError(f"unknown container state: {value}", hint=f"use one of {', '.join(STATES)}")
        if key == "exited" and not re.fullmatch(r"-?\d+", value):
            raise UsageError(f"exited code {value!r} is not a number")
        if key == "name":
            try:
                re.compile(value)
            except re.error as error:
                raise UsageError(f"name filter {value!r} is not a regular expression: {error}") from None
        filters.setdefault(key, []).append(value)
    return filters


def matches(c: ContainerSummary, filters: dict[str, list[str]], engine) -> bool:
    """podman's rule: values of one key are alternatives, but a container must have every label named."""
    return all((all if key == "label" else any)(_matches(c, key, value, engine) for value in values)
               for key, values in filters.items())


def _matches(c: ContainerSummary, key: str, value: str, engine) -> bool:
    if key == "name":
        return re.search(value, c.name) is not None
    if key == "id":
        return c.id.startswith(value)
    if key == "status":
        return _state(c) == value
    if key == "label":
        name, sep, wanted = value.partition("=")
        labels = labels_of(c.config)
        return name in labels and (not sep or labels[name] == wanted)
    if key == "ancestor":
        return value in (c.image, c.image_id) or (len(value) >= 3 and c.image_id.startswith(value)) \
            or _short_name(c.image) in (value, _short_name(value))
    if key == "network":
        return value in networks_of(c.config)
    if key == "exited":
        return c.state == EXITED and c.exit_code == int(value)
    return False


def _short_name(image: str) -> str:
    """busybox for localhost/busybox:latest, as a user types it."""
    name = image.rsplit("/", 1)[-1]
    return name[:-len(":latest")] if name.endswith(":latest") else name


def _state(c: ContainerSummary) -> str:
    return c.state if c.state in (CREATED, RUNNING, EXITED, PAUSED) else "unknown"


# ---- what a container shows ----------------------------------------------------

def labels_of(config: dict) -> dict[str, str]:
    return dict(config.get("extras", {}).get("labels", []))


def networks_of(config: dict) -> list[str]:
    """The networks it joined (podman shows none for host or none)."""
    if config.get("network_mode", "bridge") != "bridge":
        return []
    return ([config["network"]] if config.get("network") else []) + [j["network"] for j in
                                                                      config.get("more_networks", [])]


def mounts_of(config: dict) -> list[str]:
    return [v["destination"] for v in config["volumes"]]


def status(c: ContainerSummary, stored: set[str]) -> str:
    """podman's STATUS; an exited container that `ferry container restore NAME`
    brings back says so: one its checkpoint stopped, or one with -R checkpoints."""
    if c.state == RUNNING and c.started_at:
        return f"Up {human_duration(since(c.started_at))} ago"
    if c.state == PAUSED:
        return "Paused"
    if c.state == EXITED:
        text = f"Exited ({c.exit_code}) {human_duration(since(c.finished_at))} ago" if c.finished_at \
            else f"Exited ({c.exit_code})"
        if c.checkpointed_at:
            text += " (checkpointed)"
        elif c.id in stored:
            text += " (restorable)"
        return text
    return "Created"


def ports_text(c: ContainerSummary) -> str:
    return ", ".join(f"{p['host_ip'] or '0.0.0.0'}:{p['host_port']}->{p['container_port']}/{p['protocol']}"
                     for p in c.ports)


def _command(c: ContainerSummary, no_trunc: bool) -> str:
    text = " ".join(c.args)
    return text if no_trunc or len(text) <= SHORT_COMMAND else text[:SHORT_COMMAND - 3] + "..."


def ps_json(c: ContainerSummary, stored: set[str], sizes: dict[str, tuple[int, int]]) -> dict:
    """One container as podman's `ps --format json` shows it: its keys, in its order, with its types."""
    labels = labels_of(c.config)
    size = sizes.get(c.id)
    return {
        "AutoRemove": bool(c.config.get("rm")), "Command": list(c.args),
        "CreatedAt": f"{human_duration(since(c.created_at))} ago",
        "Exited": c.state == EXITED, "ExitedAt": unix_seconds(c.finished_at if c.state == EXITED else None),
        "ExitCode": c.exit_code or 0, "Id": c.id, "Image": c.image, "ImageID": c.image_id, "IsInfra": False,
        "Labels": labels or None, "Mounts": mounts_of(c.config), "Names": [c.name], "Namespaces": {},
        "Networks": networks_of(c.config), "Pid": c.pid or 0, "Pod": "", "PodName": "",
        "Ports": [{"host_ip": p["host_ip"], "container_port": p["container_port"], "host_port": p["host_port"],
                   "range": 1, "protocol": p["protocol"]} for p in c.ports] or None,
        "Size": {"rootFsSize": size[0], "rwSize": size[1]} if size else None,
        "StartedAt": unix_seconds(c.started_at), "State": _state(c), "Status": status(c, stored), "Created": unix_seconds(c.created_at),
    }


def ps_view(c: ContainerSummary, stored: set[str], sizes: dict[str, tuple[int, int]], *,
            no_trunc: bool = False) -> dict:
    """The fields podman's ps templates see (its psReporter): ID and Names as
    text, times as Go prints them, sizes only with --size."""
    from ferry.cli.gotemplate import GoMap
    created = go_time(c.created_at)
    text = status(c, stored)
    size = sizes.get(c.id)
    return {
        "ID": c.id if no_trunc else c.id[:SHORT_ID], "Image": c.image,
        "ImageID": c.image_id if no_trunc else c.image_id[:SHORT_ID], "Command": _command(c, no_trunc),
        "CreatedAt": created, "Created": created, "CreatedHuman": f"{human_duration(since(c.created_at))} ago",
        "RunningFor": f"{human_duration(since(c.created_at))} ago",
        "Status": text, "State": text,   # podman 4.3.1's .State is the status text too
        "Ports": ports_text(c), "Names": c.name, "Labels": GoMap(labels_of(c.config)),
        "Mounts": mounts_of(c.config), "Networks": ",".join(networks_of(c.config)),
        "Size": f"{_size(size[1])} (virtual {_size(size[0])})" if size else "",
        "Pid": c.pid or 0, "ExitCode": c.exit_code or 0, "Exited": c.state == EXITED,
        "ExitedAt": unix_seconds(c.finished_at if c.state == EXITED else None),
        "StartedAt": unix_seconds(c.started_at), "AutoRemove": bool(c.config.get("rm")), "IsInfra": False, "Pod": "", "PodName": "", "Namespaces": {},
    }


def _size(size: int) -> str:
    """go-units' HumanSizeWithPrecision(size, 3), as podman's ps --size: 12B, 1.98MB."""
    return render.go_size(size, 3)


def container_sizes(engine, containers: list[ContainerSummary]) -> dict[str, tuple[int, int]]:
    """(root filesystem, writable layer) bytes of each container: its image's
    size and what it wrote on top of it."""
    from ferry.image.listing import list_images
    image_sizes = {image.id: image.size for image in list_images(engine.db)}
    sizes = {}
    for c in containers:
        written = tree_size(engine.layout.container_files(c.id).upper)
        sizes[c.id] = (image_sizes.get(c.image_id, 0) + written, written)
    return sizes


def tree_size(top: str) -> int:
    """Apparent size of the regular files and links under `top`, not following links."""
    total = 0
    stack = [top]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def sort(containers: list[ContainerSummary], key: str, stored: set[str],
         sizes: dict[str, tuple[int, int]]) -> list[ContainerSummary]:
    """podman's --sort: creation order (the listing's) for created and runningfor."""
    if key in ("created", "runningfor"):
        return containers
    keys = {"command": lambda c: " ".join(c.args), "id": lambda c: c.id, "image": lambda c: c.image,
            "names": lambda c: c.name, "status": lambda c: status(c, stored),
            "size": lambda c: sizes.get(c.id, (0, 0))[0]}
    return sorted(containers, key=keys[key])

