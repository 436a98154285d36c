"""The verbs that watch or steer a container's processes: port, top, stats,
rename, wait, pause, unpause, and events."""

from __future__ import annotations

import argparse
import sys

from ferry.cli import render
from ferry.cli.parsing import (add_cidfile_reading, add_filter, add_latest, each_name, engine_of, latest_container,
                               parse_bool, selected_names)
from ferry.util.errors import UsageError

STATS_HEADERS = {"CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemUsageBytes": "MEM USAGE / LIMIT",
                 "MemPerc": "MEM %", "NetIO": "NET IO", "BlockIO": "BLOCK IO", "PIDS": "PIDS", "PIDs": "PIDS",
                 "UpTime": "CPU TIME", "AVGCPU": "AVG CPU %", "ContainerID": "CONTAINER ID"}
STATS_DEFAULT = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}" \
                "\t{{.PIDS}}\t{{.UpTime}}\t{{.AVGCPU}}"
STATS_INTERVAL = 5     # seconds between redraws, as podman's
CLEAR_SCREEN = "\033[2J\033[H"


# ---- registration ----------------------------------------------------------------------------------------

def _add_port(sub) -> None:
    p = sub.add_parser("port", help="list a container's published ports")
    p.add_argument("-a", "--all", action="store_true", help="every running container's")
    add_latest(p)
    p.add_argument("words", nargs="*", metavar="CONTAINER [PRIVATE[/PROTO]]")
    p.set_defaults(handler=cmd_port)


def _add_top(sub) -> None:
    p = sub.add_parser("top", help="show a container's processes")
    add_latest(p)
    p.add_argument("container", nargs="?")
    # what follows the container is podman's: descriptors, or ps(1)'s own flags (-ef)
    p.add_argument("descriptors", nargs=argparse.REMAINDER, metavar="DESCRIPTOR")
    p.set_defaults(handler=cmd_top)


def _add_stats(sub) -> None:
    p = sub.add_parser("stats", help="show containers' resource use")
    p.add_argument("-a", "--all", action="store_true", help="every container (podman shows every one anyway)")
    p.add_argument("--no-stream", action="store_true", help="print one report and exit")
    p.add_argument("--no-reset", action="store_true", help="do not clear the screen between reports")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate IDs")
    p.add_argument("--format", help="json, or a Go template ('table ...' for a table)")
    p.add_argument("-i", "--interval", type=int, default=STATS_INTERVAL, help="seconds between reports")
    add_latest(p)
    p.add_argument("containers", nargs="*")
    p.set_defaults(handler=cmd_stats)


def _add_rename(sub) -> None:
    p = sub.add_parser("rename", help="rename a container")
    p.add_argument("names", nargs="*", metavar="CONTAINER NEW_NAME")
    p.set_defaults(handler=cmd_rename)


def _add_wait(sub) -> None:
    p = sub.add_parser("wait", help="wait for containers to stop; print their exit codes")
    p.add_argument("--condition", action="append", default=[], help="a state to wait for (default: stopped)")
    p.add_argument("-i", "--interval", default="250ms", help="time between looks, a Go duration (default 250ms)")
    add_latest(p)
    p.add_argument("containers", nargs="*")
    p.set_defaults(handler=cmd_wait)


def _add_pause(sub) -> None:
    _add_freezer(sub, "pause", "pause containers' processes (the cgroup freezer)", cmd_pause)


def _add_unpause(sub) -> None:
    _add_freezer(sub, "unpause", "resume paused containers", cmd_unpause)


def _add_freezer(sub, verb: str, text: str, handler) -> None:
    p = sub.add_parser(verb, help=text)
    p.add_argument("-a", "--all", action="store_true", help=f"{verb} every container that can be")
    add_latest(p)
    add_cidfile_reading(p)
    add_filter(p)
    p.add_argument("containers", nargs="*")
    p.set_defaults(handler=handler)


def _add_events(sub) -> None:
    p = sub.add_parser("events", help="show ferry's events (as they happen, or past ones)")
    p.add_argument("--stream", type=parse_bool, nargs="?", const=True, default=True, metavar="BOOL",
                   help="keep printing new events (default true); false: print past ones and exit")
    p.add_argument("--since", help="events since this time (RFC 3339, Unix seconds, or a duration ago)")
    p.add_argument("--until", help="events until this time")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="container=, event=, image=, label=, type=")
    p.add_argument("--format", help="json, or a Go template")
    p.add_argument("--no-trunc", action="store_true", default=True, help="do not truncate (always)")
    p.set_defaults(handler=cmd_events)


# verb -> builder(subparsers), taken at the top level and under `ferry container`
VERBS: dict = {"port": _add_port, "top": _add_top, "stats": _add_stats, "rename": _add_rename,
               "wait": _add_wait, "pause": _add_pause, "unpause": _add_unpause}
# verbs taken at the top level only
TOP_ONLY: dict = {"events": _add_events}


# ---- handlers ----------------------------------------------------------------------------------------------

def cmd_port(args) -> int:
    from ferry.engine import container_procs as procs
    engine = engine_of(args)
    words = list(args.words)
    if args.all:
        if words:
            raise UsageError("no arguments are needed with --all")
        for container in engine.containers.list():
            for port in procs.ports(engine, container):
                render.line(f"{container.id[:12]}\t{port.private} -> {port.public}")
        return 0
    if args.latest:
        words.insert(0, latest_container(engine))
    if not words:
        raise UsageError("you must supply a running container name or id")
    if len(words) > 2:
        raise UsageError(f"accepts between 1 and 2 arg(s), received {len(words)}")
    container = engine.containers.get(words[0])
    found = procs.ports(engine, container)
    if len(words) == 1:
        for port in found:
            render.line(f"{port.private} -> {port.public}")
        return 0
    number, protocol = procs.parse_private(words[1])
    chosen = [p for p in found if p.container_port == number and (protocol is None or p.protocol == protocol)]
    if not chosen:
        raise UsageError(f'failed to find published port "{words[1]}"')
    for port in chosen:
        render.line(port.public)
    return 0


def cmd_top(args) -> int:
    from ferry.engine import container_procs as procs
    engine = engine_of(args)
    words = ([args.container] if args.container else []) + list(args.descriptors)
    if args.latest:
        words.insert(0, latest_container(engine))
    if not words:
        raise UsageError("you must provide the name or id of a running container")
    result = procs.top(engine, words[0], words[1:])
    if isinstance(result, str):
        sys.stdout.write(result)
        return 0
    headers, rows = result
    from ferry.cli.gotemplate import tabwrite
    text = "\n".join("\t".join(row) for row in [headers, *rows])
    render.line(tabwrite(text))
    return 0


def cmd_rename(args) -> int:
    if len(args.names) != 2:
        raise UsageError(f"accepts 2 arg(s), received {len(args.names)}")
    from ferry.engine import container_procs as procs
    procs.rename(engine_of(args), *args.names)
    return 0


def cmd_wait(args) -> int:
    from ferry.engine import container_procs as procs
    from ferry.util import signals
    from ferry.util.timefmt import go_duration_ns
    signals.install()
    engine = engine_of(args)
    names = list(args.containers)
    if args.latest:
        names.insert(0, latest_container(engine))
    if not names:
        raise UsageError('"ferry wait" requires a name, id, or the "--latest" flag')
    try:
        text = args.interval
        interval = go_duration_ns(text + "ms" if text.isdigit() else text) / 1e9
    except ValueError:
        raise UsageError(f'time: invalid duration "{args.interval}"') from None
    if interval <= 0:
        raise UsageError("interval must be greater then 0")   # podman's words
    conditions = procs.check_conditions([c for text in args.condition for c in text.split(",") if c])
    failures = []
    from ferry.cli.parsing import raise_all
    from ferry.util.errors import FerryError
    for name in names:
        try:
            render.line(str(procs.wait(engine, name, conditions, interval)))
        except FerryError as error:
            failures.append(error)
    raise_all(failures)
    return 0


def cmd_pause(args) -> int:
    return _freezer(args, "pause")


def cmd_unpause(args) -> int:
    return _freezer(args, "unpause")


def _freezer(args, verb: str) -> int:
    from ferry.engine import container_procs as procs
    engine = engine_of(args)
    names = selected_names(engine, args, list(args.containers))
    wanted = procs.PAUSED if verb == "unpause" else procs.RUNNING
    if args.filter:
        from ferry.cli import ps   # its filters, only when --filter is given
        names = ps.filtered(engine, args.filter, names, lambda c: c.state == wanted)
    elif args.all:
        if names:
            raise UsageError("--all and containers cannot be used together")
        names = [c.name for c in engine.containers.list() if procs.shown_state(engine, c) == wanted]
    elif not names:
        raise UsageError("you must provide at least one name or id")
    action = procs.pause if verb == "pause" else procs.unpause
    return each_name(args, names, lambda name: action(engine, name))


# ---- stats ---------------------------------------------------------------------------------------------------

def cmd_stats(args) -> int:
    from ferry.engine import container_procs as procs
    from ferry.util import signals
    signals.install()
    engine = engine_of(args)
    names = list(args.containers)
    if args.latest:
        names.insert(0, latest_container(engine))
    if args.interval < 1:
        raise UsageError("stats interval cannot be less than 1")
    targets = procs.stats_targets(engine, names, every=args.all)
    previous: dict = {}
    try:
        while True:
            samples = [procs.sample(engine, c) for c in targets]
            rows = [stats_row(s, previous.get(s.id), no_trunc=args.no_trunc) for s in samples]
            if not args.no_stream and not args.no_reset and sys.stdout.isatty():
                sys.stdout.write(CLEAR_SCREEN)
            _print_stats(rows, args.format)
            sys.stdout.flush()
            if args.no_stream:
                return 0
            previous = {s.id: s for s in samples}
            import time
            time.sleep(args.interval)
            # Containers come and go while it streams: named ones stay, the rest are looked up again.
            targets = [engine.containers.get(c.id) for c in targets] if names \
                else procs.stats_targets(engine, [], every=args.all)
    except KeyboardInterrupt:
        return 0


def _print_stats(rows: list[dict], fmt: str | None) -> None:
    if fmt in ("json", "{{json .}}"):
        import json
        keys = ("id", "name", "cpu_time", "cpu_percent", "avg_cpu", "mem_usage", "mem_percent", "net_io",
                "block_io", "pids")
        print(json.dumps([{k: row[k] for k in keys} for row in rows], indent=1))
        return
    render.template(fmt or STATS_DEFAULT, rows, STATS_HEADERS, name="stats")


def stats_row(s, before=None, *, no_trunc: bool = False) -> dict:
    """One container's report, with the fields podman's templates name (and
    the keys of its JSON); CPU % over the time since `before`, else since its start."""
    from ferry.engine.container_procs import go_duration
    average = s.cpu_ns / s.up_ns * 100 if s.up_ns > 0 else 0.0
    if before is not None and before.running and s.at_ns > before.at_ns:
        current = max(s.cpu_ns - before.cpu_ns, 0) / (s.at_ns - before.at_ns) * 100
    else:
        current = average
    mem_percent = s.mem_usage / s.mem_limit * 100 if s.mem_limit else 0.0
    short_id = s.id if no_trunc else s.id[:12]
    row = {"ID": short_id, "Name": s.name, "CPUPerc": f"{current:.2f}%", "CPU": current,
           "MemUsage": f"{human_size(s.mem_usage)} / {human_size(s.mem_limit)}",
           "MemUsageBytes": f"{bytes_size(s.mem_usage)} / {bytes_size(s.mem_limit)}",
           "MemPerc": f"{mem_percent:.2f}%", "NetIO": f"{human_size(s.net_rx)} / {human_size(s.net_tx)}",
           "BlockIO": f"{human_size(s.block_read)} / {human_size(s.block_write)}", "PIDS": str(s.pids),
           "PIDs": str(s.pids), "UpTime": go_duration(s.cpu_ns), "AVGCPU": f"{average:.2f}%",
           "ContainerID": s.id, "Duration": s.cpu_ns}
    row.update({"id": short_id, "name": s.name, "cpu_time": row["UpTime"], "cpu_percent": row["CPUPerc"],
                "avg_cpu": row["AVGCPU"], "mem_usage": row["MemUsage"], "mem_percent": row["MemPerc"],
                "net_io": row["NetIO"], "block_io": row["BlockIO"], "pids": row["PIDS"]})
    return row


def human_size(size: float) -> str:
    """go-units' HumanSize: "532.5kB", "25.28GB", "0B"."""
    return render.go_size(size)


def bytes_size(size: float) -> str:
    """go-units' BytesSize: "228KiB", "23.54GiB"."""
    return render.go_size(size, binary=True)


# ---- events --------------------------------------------------------------------------------------------------

def cmd_events(args) -> int:
    from ferry.engine import events
    from ferry.util import signals
    from ferry.util.timefmt import podman_time_ns
    signals.install()
    filters = events.Filters.parse(args.filter)
    try:
        since = podman_time_ns(args.since, since=True) if args.since else None
        until = podman_time_ns(args.until, since=False) if args.until else None
    except ValueError as error:
        raise UsageError(f"invalid time: {error}") from None
    engine = engine_of(args)
    show = _event_printer(args.format)
    # The stream's start comes before the past is read: an event recorded in
    # between is in both, and shown once.
    following = events.follow(engine.layout, stop_ns=until) \
        if args.stream and (until is None or until > _now_ns()) else None
    shown: set = set()
    try:
        if since is not None or until is not None or not args.stream:
            for event in events.read(engine.layout):
                if (since is None or event.time_ns >= since) and (until is None or event.time_ns <= until) \
                        and filters.match(event):
                    show(event)
                    shown.add((event.time_ns, event.status, event.id))
        if following is not None:
            sys.stdout.flush()
            for event in following:
                if filters.match(event) and (event.time_ns, event.status, event.id) not in shown:
                    show(event)
                    sys.stdout.flush()
    except KeyboardInterrupt:   # SIGINT or SIGTERM ends a stream: its normal end
        return 0
    return 0


def _now_ns() -> int:
    import time
    return time.time_ns()


def _event_printer(fmt: str | None):
    from ferry.engine import events
    if not fmt:
        return lambda event: render.line(events.line(event))
    if fmt == "json":
        import json
        return lambda event: render.line(json.dumps(events.as_json(event), separators=(",", ":")))

    def show(event) -> None:
        view = events.fields(event)
        view["Time"] = events.go_time(event.time_ns)   # a time.Time in podman's template: its String()
        render.template(fmt, [view], heading=False, name="events")
    return show
