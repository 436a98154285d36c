"""Container and volume commands, with podman's verbs and flags."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from ferry.cli import checkpoints, render
from ferry.cli.logs import add_logs
from ferry.cli.parsing import (BoolFlag, add_cidfile_reading, add_commands, add_filter, add_latest, each_name,
                               engine_of, inspect_each, latest_container, needs_subcommand, subcommands,
                               selected_names)
from ferry.engine.listing import DEFAULT_STOP_TIMEOUT, RUNNING
from ferry.util import signals
from ferry.util.errors import Conflict, DamagedRecord, FerryError, NotFound, UsageError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, which costs `ferry ps` 4 ms to import
if TYPE_CHECKING:
    from ferry.engine.core import Engine
    from ferry.engine.listing import ContainerRecord


def register(commands, only: str | None = None) -> bool:
    """Add the container and volume commands to ferry's top-level subparsers, or with
    `only`, just that one if it is ours. True when it added `only`."""
    from ferry.cli import container_procs
    return add_commands(commands, {"run": _run_parser, "create": _create_parser, "container": _container_group,
                                   "checkpoint": checkpoints.checkpoint_group, **_lifecycle(),
                                   **container_procs.TOP_ONLY, "volume": _volume_group}, only)


def _container_group(commands) -> None:
    group = commands.add_parser("container", help="manage containers")
    sub = subcommands(group, "container commands")
    group.set_defaults(handler=needs_subcommand(group))
    _run_parser(sub)
    _create_parser(sub)
    cleanup = sub.add_parser("cleanup", help="release a stopped container's resources (run by its monitor)")
    cleanup.add_argument("container")
    cleanup.set_defaults(handler=cmd_cleanup)
    checkpoints.register(sub)
    from ferry.cli import ps
    listing = sub.add_parser("ls", help="list containers")
    ps.add_flags(listing)
    listing.set_defaults(handler=ps.cmd_ps)
    for build in _lifecycle().values():
        build(sub)


def _run_parser(sub) -> None:
    # podman's run takes -h for --hostname, so help is --help only.
    p = sub.add_parser("run", help="run a command in a new container", add_help=False)
    p.add_argument("--help", action="help", help="show this help and exit")
    _run_flags(p)
    # On by default: --sig-proxy=false becomes the hidden --no-sig-proxy (Parser._explicit_booleans).
    p.add_argument("--sig-proxy", action="store_true", default=True,
                   help="pass the signals ferry gets on to the attached container (default true)")
    p.add_argument("--no-sig-proxy", dest="sig_proxy", action="store_false", help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_run)


def _create_parser(sub) -> None:
    p = sub.add_parser("create", help="create a container without starting it", add_help=False)
    p.add_argument("--help", action="help", help="show this help and exit")
    _run_flags(p)
    p.set_defaults(handler=cmd_create)


def _run_flags(p) -> None:
    p.add_argument("-d", "--detach", action="store_true", help="run in the background, print the ID")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="give the container a terminal")
    _detach_keys_flag(p)
    p.add_argument("--name", help="the container's name")
    p.add_argument("--cidfile", metavar="FILE", help="write the container's ID to FILE (which must not exist)")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:][HOST:]CTR[/PROTO]")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DEST[:ro]")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("--ip", help="a static IPv4 address on the network")
    p.add_argument("--mac-address", dest="mac", help="a static MAC address")
    p.add_argument("--network", "--net", dest="network", action="append",
                   help="a network to join (default: ferry); repeat it or give NAME,NAME for several "
                        "(eth0, eth1...); 'host' shares the host's network, 'none' gives lo only")
    p.add_argument("-w", "--workdir", help="the working directory inside the container")
    p.add_argument("--entrypoint", help="override the image's entrypoint (a string or a JSON array)")
    p.add_argument("-h", "--hostname", help="the container's host name")
    p.add_argument("-u", "--user", help="USER[:GROUP], names from the image's /etc/passwd and "
                   "/etc/group, or UID[:GID]")
    p.add_argument("-l", "--label", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set metadata on the container")
    # (host config flags go here)
    p.add_argument("-m", "--memory", metavar="LIMIT", help="memory limit: bytes, or with a unit (512m, 1g, 1024k)")
    p.add_argument("--cpus", metavar="N", help="CPUs the container may use (CFS quota over a 100 ms period)")
    p.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]",
                   help="a resource limit (at most this host's hard limit)")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP", help="add a capability (or ALL)")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP", help="drop a capability (or ALL)")
    p.add_argument("--privileged", action="store_true",
                   help="every capability, no seccomp filter, /sys writable, every device allowed")
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    p.add_argument("--read-only-tmpfs", type=_bool_value, nargs="?", const=True, default=True, metavar="BOOL",
                   help="with --read-only, tmpfs at /run, /tmp and /var/tmp (default true)")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:OPTIONS]", help="mount a tmpfs")
    p.add_argument("--mount", action="append", default=[], metavar="type=bind|volume|tmpfs,...",
                   help="attach a bind mount, volume or tmpfs (podman's syntax)")
    p.add_argument("--ipc", metavar="host|private", help="the IPC namespace: host, or private (default)")
    # (extras flags go here)
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read KEY=VALUE lines from FILE (before -e)")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="add a line to the container's /etc/hosts")
    p.add_argument("--dns", action="append", default=[], metavar="IP",
                   help="a nameserver for the container's /etc/resolv.conf ('none': no resolv.conf)")
    p.add_argument("--dns-search", action="append", default=[], metavar="DOMAIN",
                   help="a search domain for the container's /etc/resolv.conf ('.': none)")
    p.add_argument("--dns-option", action="append", default=[], metavar="OPTION",
                   help="an option for the container's /etc/resolv.conf")
    p.add_argument("--replace", action="store_true",
                   help="remove the container of --name first, if there is one")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish every port the image exposes on a port the host chooses")
    p.add_argument("--restart", metavar="POLICY",
                   help="no, on-failure[:N], always or unless-stopped: start again when it exits")
    p.add_argument("--init", action="store_true", help="run an init as PID 1 that forwards signals and reaps zombies")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)


def _add_ps(sub) -> None:
    from ferry.cli import ps as listing
    parser = sub.add_parser("ps", help="list containers")
    listing.add_flags(parser)
    parser.set_defaults(handler=listing.cmd_ps)


def _add_stop(sub) -> None:
    _add_stopping(sub, "stop", "stop running containers", cmd_stop)


def _add_restart(sub) -> None:
    _add_stopping(sub, "restart", "restart containers", cmd_restart)


def _add_stopping(sub, verb: str, text: str, handler) -> None:
    p = sub.add_parser(verb, help=text)
    p.add_argument("-t", "--time", type=_non_negative, default=DEFAULT_STOP_TIMEOUT,
                   help="seconds to wait before killing")
    if verb == "stop":
        p.add_argument("-a", "--all", action="store_true", help="stop every container")
        p.add_argument("-i", "--ignore", action="store_true", help="a container that does not exist is no error")
    else:
        p.add_argument("-a", "--all", action="store_true", help="restart every container")
        p.add_argument("--running", action="store_true", help="with --all, only the running ones")
    add_latest(p)
    add_cidfile_reading(p)
    add_filter(p)
    p.add_argument("containers", nargs="*")
    p.set_defaults(handler=handler)


def _add_start(sub) -> None:
    start = sub.add_parser("start", help="start stopped containers")
    start.add_argument("containers", nargs="*")
    start.add_argument("--all", action="store_true", help="start every container that is not running")
    add_filter(start)
    add_latest(start)
    start.add_argument("-a", "--attach", action="store_true", help="attach the container's output (and stdin with -i)")
    start.add_argument("-i", "--interactive", action="store_true", help="with --attach, attach stdin too")
    _detach_keys_flag(start)
    start.add_argument("--sig-proxy", action=BoolFlag, positional="containers", default=None, metavar="BOOL",
                       help="pass the signals ferry gets on to the container (default: with --attach)")
    start.add_argument("--ignore-checkpoint", action="store_true",
                       help="start a checkpointed container afresh, dropping its checkpoint")
    start.set_defaults(handler=cmd_start)


def _add_attach(sub) -> None:
    attach = sub.add_parser("attach", help="attach to a running container's terminal or output")
    _detach_keys_flag(attach)
    attach.add_argument("--no-stdin", action="store_true", help="do not pass this terminal's input on")
    attach.add_argument("--sig-proxy", action=BoolFlag, positional="containers", default=True, metavar="BOOL",
                        help="pass the signals ferry gets on to the container (default true)")
    add_latest(attach)
    attach.add_argument("containers", nargs="*", metavar="CONTAINER")
    attach.set_defaults(handler=cmd_attach)


def _detach_keys_flag(parser) -> None:
    parser.add_argument("--detach-keys", metavar="KEYS", default=None,
                        help="the keys that detach from the container: 'ctrl-p,ctrl-q' (the default), "
                             "a single character, ctrl-<a-z@[\\]^_> keys separated by commas, or '' for none")


def _add_kill(sub) -> None:
    kill = sub.add_parser("kill", help="send a signal to running containers")
    kill.add_argument("-s", "--signal", default="KILL")
    kill.add_argument("-a", "--all", action="store_true", help="signal every running container")
    add_latest(kill)
    add_cidfile_reading(kill)
    kill.add_argument("containers", nargs="*")
    kill.set_defaults(handler=cmd_kill)


def _add_rm(sub) -> None:
    rm = sub.add_parser("rm", help="remove containers")
    rm.add_argument("-a", "--all", action="store_true", help="remove every container")
    add_latest(rm)
    add_cidfile_reading(rm)
    add_filter(rm, short=False)   # -f is --force
    rm.add_argument("-f", "--force", action="store_true", help="stop running containers first")
    rm.add_argument("-i", "--ignore", action="store_true", help="a container that does not exist is no error")
    rm.add_argument("-t", "--time", type=_non_negative, default=None,
                    help="with --force, seconds a running container has to stop before it is killed (default 0)")
    rm.add_argument("-v", "--volumes", action="store_true", help="remove the containers' anonymous volumes too")
    rm.add_argument("containers", nargs="*")
    rm.set_defaults(handler=cmd_rm)


def _add_exec(sub) -> None:
    exe = sub.add_parser("exec", help="run a command in a running container")
    exe.add_argument("-d", "--detach", action="store_true", help="run it in the background, print its session ID")
    exe.add_argument("-i", "--interactive", action="store_true")
    exe.add_argument("-t", "--tty", action="store_true")
    _detach_keys_flag(exe)
    exe.add_argument("--privileged", action="store_true", help="give the command every capability")
    exe.add_argument("-e", "--env", action="append", default=[])
    exe.add_argument("-w", "--workdir")
    exe.add_argument("-u", "--user")
    add_latest(exe)   # then the first word is the command's
    exe.add_argument("container")
    exe.add_argument("command", nargs=argparse.REMAINDER)
    exe.set_defaults(handler=cmd_exec)


def _add_inspect(sub) -> None:
    inspect = sub.add_parser("inspect", help="show containers' configuration and state")
    inspect.add_argument("-f", "--format", default="json", help="json, or a template like '{{.State.Status}}'")
    add_latest(inspect)
    inspect.add_argument("containers", nargs="*")
    inspect.set_defaults(handler=cmd_inspect)


# The verbs ferry takes both at the top level and under `ferry container`, in help order.
_LIFECYCLE = {"ps": _add_ps, "logs": add_logs, "stop": _add_stop, "restart": _add_restart,
              "start": _add_start, "attach": _add_attach, "kill": _add_kill, "rm": _add_rm, "exec": _add_exec,
              "inspect": _add_inspect}


def _lifecycle() -> dict:
    """Every verb taken both at the top level and under `ferry container`."""
    from ferry.cli import container_files, container_procs
    return {**_LIFECYCLE, **container_files.VERBS, **container_procs.VERBS}


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _volume_group(commands) -> None:
    from ferry.cli import volumes   # its own module (cli/volumes.py), loaded only for `volume`
    volumes.volume_group(commands)


# ---- handlers ------------------------------------------------------------

def _bool_value(text: str) -> bool:
    """A flag's true or false, as podman's (Go's strconv.ParseBool)."""
    if text.lower() in ("1", "t", "true"):
        return True
    if text.lower() in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid syntax: {text!r} is not true or false")


def run_options(args):
    """`run`'s and `create`'s flags, as the engine takes them."""
    from ferry.engine.containers import RunOptions
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    options = RunOptions(
        image=args.image, command=tuple(command), name=args.name, detach=args.detach,
        ports=tuple(args.publish), env=tuple(args.env), volumes=tuple(args.volume), rm=args.rm,
        ip=args.ip, mac=args.mac, workdir=args.workdir, entrypoint=args.entrypoint,
        network=tuple(args.network) if args.network else None, tty=args.tty, interactive=args.interactive, hostname=args.hostname,
        user=args.user, labels=tuple(args.label),
        env_files=tuple(args.env_file), add_hosts=tuple(args.add_host), dns=tuple(args.dns),
        dns_search=tuple(args.dns_search), dns_options=tuple(args.dns_option), replace=args.replace,
        publish_all=args.publish_all, restart=args.restart, init=args.init,
        memory=args.memory, cpus=args.cpus, ulimits=tuple(args.ulimit), cap_add=tuple(args.cap_add),
        cap_drop=tuple(args.cap_drop), privileged=args.privileged, read_only=args.read_only,
        read_only_tmpfs=args.read_only_tmpfs, tmpfs=tuple(args.tmpfs), mounts=tuple(args.mount), ipc=args.ipc)
    return options


def cmd_create(args) -> int:
    """podman's create: the container made as `run` makes it, not started; its ID printed."""
    engine = engine_of(args)
    replaced = args.replace and args.name and _exists(engine, args.name)
    with _cidfile(args.cidfile) as record_id:
        container = engine.containers.create(run_options(args))
        record_id(container.id)
    if replaced:
        render.line(args.name)
    render.line(container.id)
    return 0


def cmd_run(args) -> int:
    engine = engine_of(args)
    options = run_options(args)
    detach_keys = _detach_keys(args)   # a bad one is refused before anything is made
    if args.tty and not args.detach and not sys.stdin.isatty():
        raise UsageError("-t needs a terminal on stdin", hint="drop -t, or run ferry from a terminal")
    replaced = args.replace and args.name and _exists(engine, args.name)
    with _cidfile(args.cidfile) as record_id:
        container = engine.containers.run(options)
        record_id(container.id)
    if replaced:   # podman names the container it replaced, before the new one's ID
        render.line(args.name)
    if args.detach:
        render.line(container.id)
        return 0
    from ferry.cli.attach import attach_and_wait   # sockets and terminals: not for run -d
    code = attach_and_wait(engine, container, stdin=args.interactive, tty=args.tty, detach_keys=detach_keys,
                           sig_proxy=args.sig_proxy)
    return 0 if code is None else code   # detached: podman's run exits 0, the container runs on


def _detach_keys(args) -> bytes:
    """The --detach-keys given (podman's syntax) as bytes; ctrl-p,ctrl-q when none is."""
    from ferry.cli.attach import DEFAULT_DETACH_KEYS, parse_detach_keys
    return parse_detach_keys(DEFAULT_DETACH_KEYS if args.detach_keys is None else args.detach_keys)


def _targets(engine: Engine, args, names: list[str], verb: str, chosen=lambda c: True) -> list[str]:
    """The names a command acts on: those given, or with --all (--latest) the full ID of
    every container that `chosen` takes (the one created last), as podman prints them."""
    if args.latest or args.cidfile:
        return selected_names(engine, args, names)
    if getattr(args, "filter", None):   # within --all too: the same containers
        from ferry.cli import ps   # its filters, only when --filter is given
        return ps.filtered(engine, args.filter, names, chosen)
    if args.all:
        if names:
            raise UsageError("no arguments are needed with --all", hint=f"see 'ferry {verb} --help'")
        return [c.id for c in engine.containers.list(all_states=True) if chosen(c)]
    if not names:
        raise UsageError("you must provide at least one name or id", hint=f"see 'ferry {verb} --help'")
    return names


@contextlib.contextmanager
def _cidfile(path: str | None):
    """run/create --cidfile: the file claimed before the container is made (one
    that exists is refused, and nothing is made), given the ID once it is, and
    gone again if the container could not be made."""
    if path is None:
        yield lambda _id: None
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise Conflict(f"container id file {path} exists", hint="make sure no other container uses it, "
                       "or delete it") from None
    except OSError as error:
        raise FerryError(f"cannot create the container id file {path}: {error.strerror}") from None
    written = False
    try:
        def record_id(container_id: str) -> None:
            nonlocal written
            os.write(fd, container_id.encode())
            written = True
        yield record_id
    except BaseException:
        if not written:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    finally:
        os.close(fd)


def _exists(engine: Engine, name: str) -> bool:
    try:
        engine.containers.get(name, refresh=False)
    except NotFound:
        return False
    except DamagedRecord:   # --replace removes it all the same
        pass
    return True


def cmd_cleanup(args) -> int:
    from ferry.util.locks import Busy
    try:
        # Run by the monitor at an exit: a command that holds the container
        # (a stop waiting for this very exit) does the cleanup itself.
        engine_of(args).containers.cleanup(args.container, wait=0)
    except Busy:
        pass
    return 0


def cmd_stop(args) -> int:
    signals.install()
    engine = engine_of(args)
    containers = engine.containers
    # podman's stop -a names every container, stopped ones too (a stop of those does nothing)
    names = _targets(engine, args, args.containers, "stop")
    return each_name(args, names, lambda n: containers.stop(n, timeout=args.time), missing_ok=args.ignore)


def cmd_restart(args) -> int:
    signals.install()
    engine = engine_of(args)
    containers = engine.containers
    if args.running and not args.all:
        raise UsageError("you must provide at least one name or id", hint="--running goes with --all")
    names = _targets(engine, args, args.containers, "restart", lambda c: not args.running or c.state == RUNNING)
    def restart(name):
        containers.stop(name, timeout=args.time)
        containers.start(name)
    return each_name(args, names, restart)


def cmd_start(args) -> int:
    signals.install()
    engine = engine_of(args)
    containers = engine.containers
    names = BoolFlag.positionals(args, "containers")
    if args.all or args.filter:   # podman's start --all passes over the running ones
        if args.all and names:
            raise UsageError("no arguments are needed with --all", hint="see 'ferry start --help'")
        from ferry.cli import ps   # its filters, only when --filter is given
        names = ps.filtered(engine, args.filter, names, lambda c: c.state != RUNNING)
    names = selected_names(engine, args, names)
    if not names and not (args.all or args.filter):
        raise UsageError("you must provide at least one name or id", hint="see 'ferry start --help'")
    detach_keys = _detach_keys(args)
    if not args.attach:
        return each_name(args, names, lambda name: containers.start(name, ignore_checkpoint=args.ignore_checkpoint))
    if len(names) > 1:
        raise UsageError("you cannot start and attach multiple containers at once",
                         hint="start them without --attach, then attach to one with 'ferry attach'")
    container = containers.get(names[0])
    if container.state != RUNNING:   # podman's start -a of a running one attaches to it
        # its monitor runs the command once this client is there: no output is lost
        container = containers.start(container.id, wait_attach=True, ignore_checkpoint=args.ignore_checkpoint)
    from ferry.cli.attach import attach_and_wait
    config = container.config
    code = attach_and_wait(engine, container, stdin=args.interactive and (config.interactive or config.tty),
                           tty=config.tty, detach_keys=detach_keys,
                           sig_proxy=True if args.sig_proxy is None else args.sig_proxy)
    return 0 if code is None else code


def cmd_attach(args) -> int:
    engine = engine_of(args)
    names = selected_names(engine, args, BoolFlag.positionals(args, "containers"))
    if len(names) != 1:
        raise UsageError(f"attach takes one container, not {len(names)}", hint="ferry attach CONTAINER")
    detach_keys = _detach_keys(args)
    container = engine.containers.get(names[0])
    if container.state != RUNNING:
        raise Conflict("you can only attach to running containers",
                       hint=f"container {container.name!r} is {container.state}; start it with "
                            f"'ferry start -a {container.name}'")
    from ferry.cli.attach import attach_and_wait
    code = attach_and_wait(engine, container, stdin=not args.no_stdin, tty=container.config.tty,
                           detach_keys=detach_keys, sig_proxy=args.sig_proxy)
    if code is not None:
        render.line("")   # podman's attach ends the output with a newline, and exits 0 whatever the exit code
    return 0


def cmd_kill(args) -> int:
    engine = engine_of(args)
    containers = engine.containers
    names = _targets(engine, args, args.containers, "kill", lambda c: c.state == RUNNING)
    return each_name(args, names, lambda n: containers.kill(n, args.signal))


def cmd_rm(args) -> int:
    signals.install()
    if args.time is not None and not args.force:
        raise UsageError("--force option must be specified to use the --time option",
                         hint="ferry rm -f -t SECONDS CONTAINER")
    engine = engine_of(args)
    containers = engine.containers
    names = _targets(engine, args, args.containers, "rm")
    # podman's rm -f exits 0 for a missing name: cleanup scripts run under `set -e`.
    return each_name(args, names, lambda n: containers.remove(n, force=args.force, volumes=args.volumes,
                                                              timeout=args.time or 0),
                     missing_ok=args.force or args.ignore)


def cmd_exec(args) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if args.detach_keys is not None:   # checked as podman's; ferry's exec runs on this terminal itself
        _detach_keys(args)
    engine = engine_of(args)
    containers = engine.containers
    if args.latest:   # the word taken for the container is the command's first
        command, args.container = [args.container, *command], latest_container(engine)
    if args.detach:
        containers.exec_detached(args.container, command, env=args.env, workdir=args.workdir, user=args.user,
                                 privileged=args.privileged)
        from ferry.store import ids
        render.line(ids.new_id())   # podman prints its exec session's ID
        return 0
    return containers.exec(args.container, command, tty=args.tty, interactive=args.interactive,
                           env=args.env, workdir=args.workdir, user=args.user, privileged=args.privileged)


def cmd_inspect(args) -> int:
    engine = engine_of(args)
    # From the records, as `ps` lists: the full Containers service (runc, the OCI
    # spec, the network, the typed config) loads only to catch up with a container
    # that exited unobserved, and runs its cleanup then.
    listing = engine.listing
    names = selected_names(engine, args, args.containers, words="arguments")
    if not names:
        raise UsageError("no names or ids specified", hint="ferry inspect CONTAINER..., or --latest")
    # As podman: the containers found are shown (`[]` when none is), then each missing name's line.
    inspect_each(names, lambda name: inspect_container(engine, listing.record(name)), args.format, template_view)
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
    files = engine.layout.container_files(c.id)
    checkpoint = files.checkpoint_images
    entrypoint = config["args"][:len(config["args"]) - len(config["command"])]
    extras = config.get("extras", {})
    # podman's Path and Args are the process's, its init first (--init)
    process = (["/run/podman-init", "--"] if extras.get("init") else []) + list(config["args"])
    return {
        "Id": c.id, "Created": c.created_at, "Path": process[0],
        "Args": process[1:] or process,   # podman's, for a command of one word
        "State": {"OciVersion": OCI_VERSION, "Status": c.state, "Running": running, "Paused": c.state == "paused",
                  "Restarting": False, "OOMKilled": False, "Dead": False, "Pid": c.pid or 0,
                  "ExitCode": c.exit_code or 0, "StartedAt": c.started_at or NEVER,
                  "FinishedAt": c.finished_at or NEVER,
                  # podman's names: whether `ferry container restore NAME` brings it back
                  "Checkpointed": bool(c.checkpointed_at), "CheckpointedAt": c.checkpointed_at or NEVER,
                  "CheckpointPath": checkpoint if c.checkpointed_at else "",
                  "CheckpointInMemory": bool(c.checkpointed_at) and _in_memory(checkpoint),
                  "Restored": bool(c.restored_at), "RestoredAt": c.restored_at or NEVER,
                  **_criu_logs(engine, c)},
        "Image": c.image_id, "ImageName": config["image"], "ImageDigest": config["image_digest"],
        "Rootfs": "", "Pod": "", "ResolvConfPath": files.at("resolv.conf"), "HostnamePath": files.at("hostname"),
        "HostsPath": files.at("hosts"), "StaticDir": files.dir, "OCIConfigPath": files.spec,
        "OCIRuntime": "runc", "PidFile": files.container_pid, "Name": c.name, "Driver": "overlay",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "", "ExecIDs": [],
        "GraphDriver": {"Name": "overlay", "Data": {"UpperDir": files.upper, "WorkDir": files.overlay_work,
                                                     "MergedDir": files.rootfs}},
        "RestartCount": c.restart_count,
        "Mounts": mounts, "Dependencies": [], "Namespace": "", "IsInfra": False, "IsService": False,
        "Config": {"Hostname": config["hostname"], "Domainname": "", "Image": config["image"],
                   "Entrypoint": " ".join(entrypoint), "StopTimeout": DEFAULT_STOP_TIMEOUT, "Umask": "0022", "Env": list(config["env"]), "Cmd": list(config["command"]),
                   "WorkingDir": config["workdir"], "User": config["user"], "Tty": config["tty"],
                   "OpenStdin": config["interactive"], "Labels": dict(config.get("extras", {}).get("labels", [])),
                   "StopSignal": signals.number_of(config["stop_signal"]) or config["stop_signal"]},
        "NetworkSettings": _network_settings(config, ports),
        "HostConfig": {"NetworkMode": config.get("network_mode", "bridge"), "PortBindings": ports,
                       "AutoRemove": config["rm"],
                       "Binds": [f"{m['Name'] or m['Source']}:{m['Destination']}" + ("" if m["RW"] else ":ro")
                                 for m in mounts],
                       "ExtraHosts": [f"{name}:{ip}" for name, ip in extras.get("add_hosts", [])],
                       "Dns": list(extras.get("dns", [])),   # [] for --dns none too, as podman shows it
                       "DnsSearch": list(extras.get("dns_search", [])),
                       "DnsOptions": list(extras.get("dns_options", [])),
                       "RestartPolicy": {"Name": extras.get("restart", ""),
                                         "MaximumRetryCount": extras.get("restart_retries", 0)},
                       "Init": bool(extras.get("init")), **_host_inspect(config.get("host", {})),
                       # what ferry gives every container (runtime/spec.py, the monitor's log)
                       "LogConfig": {"Type": "k8s-file", "Config": None, "Path": files.log, "Tag": "",
                                     "Size": "0B"},
                       "CgroupManager": "cgroupfs", "PidMode": "private", "UTSMode": "private",
                       "UsernsMode": "", "Runtime": "oci", "ShmSize": _shm_size(), "SecurityOpt": [],
                       "GroupAdd": [], "Devices": [], "Links": None, "VolumesFrom": None},
        **_capability_sets(config.get("host", {})),
    }


def _shm_size() -> int:
    from ferry.util.hostspec import SHM_SIZE
    return SHM_SIZE


def _capability_sets(host: dict) -> dict:
    """podman's top-level EffectiveCaps and BoundingCaps: the same set in ferry's spec."""
    from ferry.util import hostspec
    caps = sorted(hostspec.capabilities(host.get("privileged", False), host.get("cap_add", []),
                                        host.get("cap_drop", []), hostspec.bounding_set()))
    return {"EffectiveCaps": caps, "BoundingCaps": caps}


# podman's inspect states capabilities against this set (the older default, with
# AUDIT_WRITE, MKNOD and NET_RAW): CapDrop lists those of it a container lacks.
INSPECT_DEFAULT_CAPS = ("CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
                        "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID",
                        "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT")


def _host_inspect(host: dict) -> dict:
    """podman's HostConfig keys for what `run` asked of the host (the record's
    "host", engine/hostconfig.py, already checked), from the plain dict: inspect
    loads no typed record."""
    from ferry.util import hostspec
    privileged, memory, nano_cpus = host.get("privileged", False), host.get("memory", 0), host.get("nano_cpus", 0)
    caps = set(hostspec.capabilities(privileged, host.get("cap_add", []), host.get("cap_drop", []),
                                     hostspec.bounding_set()))
    if privileged:
        added, dropped = [], sorted(set(hostspec.CAPABILITIES) - caps)
    else:
        added, dropped = sorted(caps - set(INSPECT_DEFAULT_CAPS)), sorted(set(INSPECT_DEFAULT_CAPS) - caps)
    tmpfs = {t["destination"]: ",".join(hostspec.tmpfs_options(t["options"])) for t in host.get("tmpfs", [])}
    if host.get("read_only") and host.get("read_only_tmpfs", True):
        for path in hostspec.READ_ONLY_TMPFS:
            tmpfs.setdefault(path, ",".join(hostspec.tmpfs_options(())))
    asked = [(f"RLIMIT_{name.upper()}", soft, hard) for name, soft, hard in host.get("ulimits", [])]
    return {"Memory": memory, "MemorySwap": 2 * memory, "NanoCpus": nano_cpus,
            "CpuQuota": nano_cpus * hostspec.CPU_PERIOD // 10**9,
            "CpuPeriod": hostspec.CPU_PERIOD if nano_cpus else 0, "CapAdd": added, "CapDrop": dropped,
            "Privileged": privileged, "ReadonlyRootfs": host.get("read_only", False), "Tmpfs": tmpfs,
            "Ulimits": [{"Name": limit["type"], "Soft": limit["soft"], "Hard": limit["hard"]}
                        for limit in hostspec.clamped_rlimits(hostspec.WANTED_RLIMITS, asked)],
            "IpcMode": "host" if host.get("ipc") == "host" else "shareable"}


def _network_settings(config: dict, ports: dict) -> dict:
    """As podman shows them: each network joined under Networks; the address
    at the top only for a container on one network; host and none show no network."""
    if config.get("network_mode", "bridge") != "bridge":
        return {"IPAddress": "", "MacAddress": "", "Ports": ports}
    joined = [{"network": config["network"], "ip": config["ip"], "mac": config["mac"]},
              *config.get("more_networks", [])]
    one = len(joined) == 1
    return {"IPAddress": config["ip"] if one else "", "MacAddress": config["mac"] if one else "", "Ports": ports,
            "Networks": {j["network"]: {"IPAddress": j["ip"], "MacAddress": j["mac"]} for j in joined}}


NEVER = "0001-01-01T00:00:00Z"   # podman's zero time
# inspect's times, which podman's templates see as Go's time.Time.
TEMPLATE_TIMES = {("Created",), ("State", "StartedAt"), ("State", "FinishedAt"), ("State", "CheckpointedAt"),
                  ("State", "RestoredAt")}


def template_view(data: dict) -> dict:
    """An inspect record as podman's templates see it: times printed as Go prints them."""
    from ferry.util.timefmt import go_time
    from ferry.cli.gotemplate import GoMap
    view = {**data, "State": dict(data["State"]),
            "Config": {**data["Config"], "Labels": GoMap(data["Config"].get("Labels") or {})}}
    for path in TEMPLATE_TIMES:
        holder = view if len(path) == 1 else view[path[0]]
        if holder.get(path[-1]):
            holder[path[-1]] = go_time(holder[path[-1]])
    return view
OCI_VERSION = "1.0.2"   # the runtime spec version ferry writes (runtime/spec.py)


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
