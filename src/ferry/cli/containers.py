"""Container and volume commands, with podman's verbs and flags."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

from ferry.cli import checkpoints, render
from ferry.cli.parsing import add_commands, each_name, engine_of, needs_subcommand, subcommands
from ferry.engine.listing import DEFAULT_STOP_TIMEOUT, EXITED, RUNNING
from ferry.util import signals
from ferry.util.errors import NotFound, Several, UsageError
from ferry.util.timefmt import ago, duration, parse as parse_time

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, which costs `ferry ps` 4 ms to import
if TYPE_CHECKING:
    from ferry.engine.core import Engine
    from ferry.engine.listing import ContainerRecord, ContainerSummary

LOG_FOLLOW_POLL = 0.1


def register(commands, only: str | None = None) -> bool:
    """Add the container and volume commands to ferry's top-level subparsers, or with
    `only`, just that one if it is ours. True when it added `only`."""
    return add_commands(commands, {"run": _run_parser, "container": _container_group,
                                   "checkpoint": checkpoints.checkpoint_group, **_LIFECYCLE,
                                   "volume": _volume_group}, only)


def _container_group(commands) -> None:
    group = commands.add_parser("container", help="manage containers")
    sub = subcommands(group, "container commands")
    group.set_defaults(handler=needs_subcommand(group))
    _run_parser(sub)
    cleanup = sub.add_parser("cleanup", help="release a stopped container's resources (run by its monitor)")
    cleanup.add_argument("container")
    cleanup.set_defaults(handler=cmd_cleanup)
    checkpoints.register(sub)
    listing = sub.add_parser("ls", help="list containers")
    _ps_flags(listing)
    listing.set_defaults(handler=cmd_ps)
    for build in _LIFECYCLE.values():
        build(sub)


def _run_parser(sub) -> None:
    # podman's run takes -h for --hostname, so help is --help only.
    p = sub.add_parser("run", help="run a command in a new container", add_help=False)
    p.add_argument("--help", action="help", help="show this help and exit")
    _run_flags(p)
    p.set_defaults(handler=cmd_run)


def _run_flags(p) -> None:
    p.add_argument("-d", "--detach", action="store_true", help="run in the background, print the ID")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="give the container a terminal")
    p.add_argument("--name", help="the container's name")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:][HOST:]CTR[/PROTO]")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DEST[:ro]")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("--ip", help="a static IPv4 address on the network")
    p.add_argument("--mac-address", dest="mac", help="a static MAC address")
    p.add_argument("--network", "--net", dest="network", action="append",
                   help="the network to join (default: ferry)")
    p.add_argument("-w", "--workdir", help="the working directory inside the container")
    p.add_argument("--entrypoint", help="override the image's entrypoint (a string or a JSON array)")
    p.add_argument("-h", "--hostname", help="the container's host name")
    p.add_argument("-u", "--user", help="USER[:GROUP], names from the image's /etc/passwd and "
                   "/etc/group, or UID[:GID]")
    p.add_argument("-l", "--label", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set metadata on the container")
    # (host config flags go here)
    # (extras flags go here)
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)


def _ps_flags(p) -> None:
    p.add_argument("-a", "--all", action="store_true", help="show all containers, not only running")
    p.add_argument("-q", "--quiet", action="store_true", help="print IDs only")
    p.add_argument("--format", choices=("table", "json"), default="table")


def _add_ps(sub) -> None:
    ps = sub.add_parser("ps", help="list containers")
    _ps_flags(ps)
    ps.set_defaults(handler=cmd_ps)


def _add_logs(sub) -> None:
    logs = sub.add_parser("logs", help="show a container's output")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--tail", type=_line_count, default=None, metavar="N",
                      help="only the last N lines (all when negative)")
    logs.add_argument("container")
    logs.set_defaults(handler=cmd_logs)


def _add_stop(sub) -> None:
    _add_stopping(sub, "stop", "stop running containers", cmd_stop)


def _add_restart(sub) -> None:
    _add_stopping(sub, "restart", "restart containers", cmd_restart)


def _add_stopping(sub, verb: str, text: str, handler) -> None:
    p = sub.add_parser(verb, help=text)
    p.add_argument("-t", "--time", type=_non_negative, default=DEFAULT_STOP_TIMEOUT,
                   help="seconds to wait before killing")
    p.add_argument("containers", nargs="+")
    p.set_defaults(handler=handler)


def _add_start(sub) -> None:
    start = sub.add_parser("start", help="start stopped containers")
    start.add_argument("containers", nargs="+")
    start.add_argument("--ignore-checkpoint", action="store_true",
                       help="start a checkpointed container afresh, dropping its checkpoint")
    start.set_defaults(handler=cmd_start)


def _add_kill(sub) -> None:
    kill = sub.add_parser("kill", help="send a signal to running containers")
    kill.add_argument("-s", "--signal", default="KILL")
    kill.add_argument("containers", nargs="+")
    kill.set_defaults(handler=cmd_kill)


def _add_rm(sub) -> None:
    rm = sub.add_parser("rm", help="remove containers")
    rm.add_argument("-f", "--force", action="store_true", help="stop running containers first")
    rm.add_argument("containers", nargs="+")
    rm.set_defaults(handler=cmd_rm)


def _add_exec(sub) -> None:
    exe = sub.add_parser("exec", help="run a command in a running container")
    exe.add_argument("-i", "--interactive", action="store_true")
    exe.add_argument("-t", "--tty", action="store_true")
    exe.add_argument("-e", "--env", action="append", default=[])
    exe.add_argument("-w", "--workdir")
    exe.add_argument("-u", "--user")
    exe.add_argument("container")
    exe.add_argument("command", nargs=argparse.REMAINDER)
    exe.set_defaults(handler=cmd_exec)


def _add_inspect(sub) -> None:
    inspect = sub.add_parser("inspect", help="show containers' configuration and state")
    inspect.add_argument("-f", "--format", default="json", help="json, or a template like '{{.State.Status}}'")
    inspect.add_argument("containers", nargs="+")
    inspect.set_defaults(handler=cmd_inspect)


# The verbs ferry takes both at the top level and under `ferry container`, in help order.
_LIFECYCLE = {"ps": _add_ps, "logs": _add_logs, "stop": _add_stop, "restart": _add_restart,
              "start": _add_start, "kill": _add_kill, "rm": _add_rm, "exec": _add_exec,
              "inspect": _add_inspect}


def _line_count(text: str) -> int | None:
    """--tail's N; None (all lines) when negative, as podman's -1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    return None if value < 0 else value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _volume_group(commands) -> None:
    volume = commands.add_parser("volume", help="manage named volumes")
    sub = subcommands(volume, "volume commands")
    volume.set_defaults(handler=needs_subcommand(volume))
    create = sub.add_parser("create", help="create a volume")
    create.add_argument("name")
    create.set_defaults(handler=cmd_volume_create)
    ls = sub.add_parser("ls", help="list volumes")
    ls.add_argument("-q", "--quiet", action="store_true")
    ls.add_argument("--format", choices=("table", "json"), default="table")
    ls.set_defaults(handler=cmd_volume_ls)
    rm = sub.add_parser("rm", help="remove volumes")
    rm.add_argument("-f", "--force", action="store_true")
    rm.add_argument("names", nargs="+")
    rm.set_defaults(handler=cmd_volume_rm)
    inspect = sub.add_parser("inspect", help="show volumes")
    inspect.add_argument("names", nargs="+")
    inspect.set_defaults(handler=cmd_volume_inspect)


# ---- handlers ------------------------------------------------------------

def cmd_run(args) -> int:
    from ferry.engine.containers import RunOptions
    engine = engine_of(args)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    options = RunOptions(
        image=args.image, command=tuple(command), name=args.name, detach=args.detach,
        ports=tuple(args.publish), env=tuple(args.env), volumes=tuple(args.volume), rm=args.rm,
        ip=args.ip, mac=args.mac, workdir=args.workdir, entrypoint=args.entrypoint,
        network=tuple(args.network) if args.network else None, tty=args.tty, interactive=args.interactive, hostname=args.hostname,
        user=args.user, labels=tuple(args.label))
    if args.tty and not args.detach and not sys.stdin.isatty():
        raise UsageError("-t needs a terminal on stdin", hint="drop -t, or run ferry from a terminal")
    container = engine.containers.run(options)
    if args.detach:
        render.line(container.id)
        return 0
    from ferry.cli.attach import attach_and_wait   # sockets and terminals: not for run -d
    return attach_and_wait(engine, container, stdin=args.interactive, tty=args.tty)


def cmd_cleanup(args) -> int:
    from ferry.util.locks import Busy
    try:
        # Run by the monitor at an exit: a command that holds the container
        # (a stop waiting for this very exit) does the cleanup itself.
        engine_of(args).containers.cleanup(args.container, wait=0)
    except Busy:
        pass
    return 0


def cmd_ps(args) -> int:
    listing = engine_of(args).listing
    containers = listing.containers(all_states=args.all)
    stored = listing.with_stored_checkpoints() if any(c.state == EXITED for c in containers) else set()
    if args.quiet:
        for c in containers:
            render.line(c.id[:12])
    elif args.format == "json":
        render.json_out([_ps_json(c, stored) for c in containers])
    else:
        render.table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
                     [[c.id[:12], c.image, _short_command(c), ago(c.created_at), _status(c, stored),
                       _ports_text(c), c.name] for c in containers])
    return 0


def _short_command(c: ContainerSummary) -> str:
    text = " ".join(c.args)
    return text if len(text) <= 20 else text[:17] + "..."


def _status(c: ContainerSummary, stored: set[str]) -> str:
    """podman's STATUS; an exited container that `ferry container restore NAME`
    brings back says so: one its checkpoint stopped, or one with -R checkpoints."""
    if c.state == RUNNING and c.started_at:
        seconds = int(time.time() - parse_time(c.started_at).timestamp())
        return f"Up {duration(seconds)}"
    if c.state == EXITED:
        text = f"Exited ({c.exit_code}) {ago(c.finished_at)}" if c.finished_at else f"Exited ({c.exit_code})"
        if c.checkpointed_at:
            text += " (checkpointed)"
        elif c.id in stored:
            text += " (restorable)"
        return text
    return "Created"


def _ports_text(c: ContainerSummary) -> str:
    return ", ".join(f"{p['host_ip'] or '0.0.0.0'}:{p['host_port']}->{p['container_port']}/{p['protocol']}"
                     for p in c.ports)


def _ps_json(c: ContainerSummary, stored: set[str]) -> dict:
    return {"Id": c.id, "Names": [c.name], "Image": c.image, "ImageID": c.image_id,
            "Command": list(c.args), "Created": c.created_at, "State": c.state,
            "Status": _status(c, stored), "ExitCode": c.exit_code, "Pid": c.pid or 0,
            "Ports": [_port_json(p) for p in c.ports]}


def _port_json(p: dict) -> dict:
    return {"host_ip": p["host_ip"], "host_port": p["host_port"], "container_port": p["container_port"],
            "protocol": p["protocol"]}


def cmd_logs(args) -> int:
    engine = engine_of(args)
    # The record alone names the log: the full Containers service loads only to follow it.
    container_id, path = engine.listing.log_path(args.container)
    position = 0 if args.tail is None else _tail_start(path, args.tail)
    while True:
        position = _print_log(path, position)
        if not args.follow:
            return 0
        if engine.containers.get(container_id).state != RUNNING:
            _print_log(path, position)
            return 0
        time.sleep(LOG_FOLLOW_POLL)


LOG_LINE = re.compile(rb"^(\S+) (stdout|stderr) ([FP]) ?(.*)$", re.DOTALL)


def _tail_start(path: str, lines: int) -> int:
    """Where the last `lines` lines of the log begin: a line is its partial (P)
    entries and the full (F) entry that ends it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    data = data[:data.rfind(b"\n") + 1]
    starts, position, line_open = [], 0, False
    # Entries end at \n only: a lone \r (a progress bar, a terminal's \r\n) is text.
    for raw in data.split(b"\n")[:-1]:
        match = LOG_LINE.match(raw)
        if match:
            if not line_open:
                starts.append(position)
            line_open = match.group(3) == b"P"
        position += len(raw) + 1
    if lines == 0:
        return len(data)
    return starts[-lines] if len(starts) >= lines else 0


def _print_log(path: str, position: int) -> int:
    """Print whole log entries from `position`; returns where reading stopped."""
    try:
        with open(path, "rb") as f:
            f.seek(position)
            data = f.read()
    except FileNotFoundError:
        return position
    end = data.rfind(b"\n") + 1
    for raw in data[:end].split(b"\n")[:-1]:   # a lone \r is text, as podman prints it
        match = LOG_LINE.match(raw)
        if not match:
            continue
        stream = sys.stdout if match.group(2) == b"stdout" else sys.stderr
        text = match.group(4) + (b"\n" if match.group(3) == b"F" else b"")
        stream.buffer.write(text)
        stream.flush()
    return position + end


def cmd_stop(args) -> int:
    signals.install()
    containers = engine_of(args).containers
    return each_name(args, args.containers, lambda n: containers.stop(n, timeout=args.time))


def cmd_restart(args) -> int:
    signals.install()
    containers = engine_of(args).containers
    def restart(name):
        containers.stop(name, timeout=args.time)
        containers.start(name)
    return each_name(args, args.containers, restart)


def cmd_start(args) -> int:
    signals.install()
    containers = engine_of(args).containers
    return each_name(args, args.containers,
                 lambda name: containers.start(name, ignore_checkpoint=args.ignore_checkpoint))


def cmd_kill(args) -> int:
    containers = engine_of(args).containers
    return each_name(args, args.containers, lambda n: containers.kill(n, args.signal))


def cmd_rm(args) -> int:
    signals.install()
    containers = engine_of(args).containers
    # podman's rm -f exits 0 for a missing name: cleanup scripts run under `set -e`.
    return each_name(args, args.containers, lambda n: containers.remove(n, force=args.force),
                 missing_ok=args.force)


def cmd_exec(args) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    return engine_of(args).containers.exec(args.container, command, tty=args.tty, interactive=args.interactive,
                                           env=args.env, workdir=args.workdir, user=args.user)


def cmd_inspect(args) -> int:
    engine = engine_of(args)
    # From the records, as `ps` lists: the full Containers service (runc, the OCI
    # spec, the network, the typed config) loads only to catch up with a container
    # that exited unobserved, and runs its cleanup then.
    listing = engine.listing
    # As podman: the containers found are shown (`[]` when none is), and then
    # each missing name gets its line, with the failure's exit code.
    data, missing = [], []
    for name in args.containers:
        try:
            data.append(inspect_container(engine, listing.record(name)))
        except NotFound as error:
            missing.append(error)
    if args.format == "json":
        render.json_out(data)
    else:
        for item in data:
            render.line(render_template(args.format, item))
    if len(missing) > 1:
        raise Several(missing)
    if missing:
        raise missing[0]
    return 0


def inspect_container(engine: Engine, c: ContainerRecord) -> dict:
    """podman's inspect of a container, from its record (its config a checked dict)."""
    config = c.config
    ports: dict[str, list] = {}
    for p in config["ports"]:
        ports.setdefault(f"{p['container_port']}/{p['protocol']}", []).append(
            {"HostIp": p["host_ip"], "HostPort": str(p["host_port"])})
    mounts = []
    for v in config["volumes"]:
        named = v["kind"] == "volume"
        # A named volume's data: Volumes.data_dir, without loading the volumes service.
        source = os.path.join(engine.layout.volumes, v["source"], "_data") if named else v["source"]
        mounts.append({"Type": v["kind"], "Name": v["source"] if named else "",
                       "Source": source, "Destination": v["destination"], "RW": not v["readonly"]})
    running = c.state == RUNNING
    checkpoint = engine.layout.container_files(c.id).checkpoint_images
    return {
        "Id": c.id, "Created": c.created_at, "Path": config["args"][0], "Args": list(config["args"][1:]),
        "State": {"Status": c.state, "Running": running, "Pid": c.pid or 0,
                  "ExitCode": c.exit_code or 0, "StartedAt": c.started_at or "",
                  "FinishedAt": c.finished_at or "",
                  # podman's names: whether `ferry container restore NAME` brings it back
                  "Checkpointed": bool(c.checkpointed_at), "CheckpointedAt": c.checkpointed_at or NEVER,
                  "CheckpointPath": checkpoint if c.checkpointed_at else "",
                  "CheckpointInMemory": bool(c.checkpointed_at) and _in_memory(checkpoint),
                  "Restored": bool(c.restored_at), "RestoredAt": c.restored_at or NEVER,
                  **_criu_logs(engine, c)},
        "Image": c.image_id, "ImageName": config["image"], "ImageDigest": config["image_digest"],
        "Name": c.name, "OCIRuntime": "runc", "Mounts": mounts,
        "Config": {"Hostname": config["hostname"], "Env": list(config["env"]), "Cmd": list(config["command"]),
                   "WorkingDir": config["workdir"], "User": config["user"], "Tty": config["tty"],
                   "OpenStdin": config["interactive"], "Labels": dict(config.get("extras", {}).get("labels", [])),
                   "StopSignal": signals.number_of(config["stop_signal"]) or config["stop_signal"]},
        "NetworkSettings": {"IPAddress": config["ip"], "MacAddress": config["mac"], "Ports": ports,
                            "Networks": {config["network"]: {"IPAddress": config["ip"],
                                                             "MacAddress": config["mac"]}}},
        "HostConfig": {"PortBindings": ports, "AutoRemove": config["rm"],
                       "Binds": [f"{m['Name'] or m['Source']}:{m['Destination']}" + ("" if m["RW"] else ":ro")
                                 for m in mounts]},
    }


NEVER = "0001-01-01T00:00:00Z"   # podman's zero time


def _in_memory(checkpoint: str) -> bool:
    """A local checkpoint on a tmpfs (the disk had no room for it), which a
    reboot would take."""
    from ferry.util.fs import mounts_under
    return bool(mounts_under(checkpoint))


def _criu_logs(engine: Engine, c: ContainerRecord) -> dict:
    """CRIU's log of the checkpoint a container waits in, or of the restore
    that brought it back, as podman names them; a later start clears both."""
    work = engine.layout.container_files(c.id).checkpoint_work
    logs = {}
    if c.checkpointed_at and os.path.exists(os.path.join(work, "dump.log")):
        logs["CheckpointLog"] = os.path.join(work, "dump.log")
    if c.restored_at and c.state == RUNNING and os.path.exists(os.path.join(work, "restore.log")):
        logs["RestoreLog"] = os.path.join(work, "restore.log")
    return logs


TEMPLATE_FIELD = re.compile(r"\{\{\s*((?:\.[A-Za-z0-9_]+)+)\s*\}\}")


def render_template(template: str, data: dict) -> str:
    """podman's --format '{{.A.B}}' for plain field paths."""
    def value(match):
        current = data
        for key in match.group(1).strip(".").split("."):
            if not isinstance(current, dict) or key not in current:
                raise UsageError(f"template field {match.group(1)} does not exist")
            current = current[key]
        if isinstance(current, bool):
            return "true" if current else "false"
        return json.dumps(current) if isinstance(current, (dict, list)) else str(current)
    rendered = TEMPLATE_FIELD.sub(value, template)
    if "{{" in rendered:
        raise UsageError(f"unsupported template {template!r}", hint="use json or plain fields like {{.State.Status}}")
    return rendered


def cmd_volume_create(args) -> int:
    render.line(engine_of(args).volumes.create(args.name)["Name"])
    return 0


def cmd_volume_ls(args) -> int:
    volumes = engine_of(args).volumes.list()
    if args.quiet:
        for v in volumes:
            render.line(v["Name"])
    elif args.format == "json":
        render.json_out(volumes)
    else:
        render.table(["DRIVER", "VOLUME NAME"], [[v["Driver"], v["Name"]] for v in volumes])
    return 0


def cmd_volume_rm(args) -> int:
    engine = engine_of(args)
    for name in args.names:
        engine.volumes.remove(name, engine.containers.users_of_volume(name), force=args.force)
        render.line(name)
    return 0


def cmd_volume_inspect(args) -> int:
    volumes = engine_of(args).volumes
    render.json_out([volumes.inspect(n) for n in args.names])
    return 0
