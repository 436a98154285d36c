"""`ferry serve` (the agent other hosts migrate to) and `ferry migrate`."""

from __future__ import annotations

import contextlib
import os
import sys

from ferry.cli import render
from ferry.cli.parsing import add_commands, engine_of
from ferry.util import signals
from ferry.util.errors import FerryError, UsageError

TOKEN_FILE_ENV = "FERRY_AGENT_TOKEN_FILE"


def register(commands, only: str | None = None) -> bool:
    return add_commands(commands, {"serve": _add_serve, "migrate": _add_migrate}, only)


def _add_serve(commands) -> None:
    serve = commands.add_parser(
        "serve", help="run the agent that other hosts migrate containers to",
        description="A REST API under /v1/ (see /v1/openapi.json) over this state root, for "
                    "'ferry migrate' on other hosts. Every request needs the bearer token; without "
                    "--token-file one is made on first start (mode 0600) under the root, and its path printed.")
    serve.add_argument("--listen", metavar="ADDR:PORT", required=True, help="e.g. 0.0.0.0:7070")
    serve.add_argument("--token-file", metavar="FILE", help="the bearer token (made if missing)")
    serve.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="... and this key (PEM)")
    serve.add_argument("--allow-bind-mounts", action="store_true",
                       help="let migrated containers mount the host paths they mounted on their source")
    serve.add_argument("--allow-privileges", action="store_true",
                       help="let migrated containers keep what they were run with beyond ferry's defaults "
                            "(--privileged, --cap-add, --ipc host, --network host)")
    serve.add_argument("--decrypt-key", action="append", default=[], metavar="FILE",
                       help="open migrations encrypted to this age identity (AGE-SECRET-KEY-1...) or SSH "
                            "private key ('ferry migrate --encrypt-to' its public key)")
    serve.add_argument("--decrypt-passphrase-file", metavar="FILE",
                       help="open migrations encrypted with the passphrase on FILE's first line")
    serve.set_defaults(handler=cmd_serve)


def _add_migrate(commands) -> None:
    migrate = commands.add_parser(
        "migrate", help="move a running container to another host",
        description="Stop-and-copy: the destination's agent checks the offer, the container is frozen "
                    "and cut off here, its memory goes straight to a CRIU page server on the destination "
                    "(over CRIU's TLS when the agent's URL is https), and the rest of its checkpoint "
                    "streams through the agent into the destination's restore. The source copy is "
                    "removed only once the destination runs the container (the point of no return); "
                    "any failure before that resumes it here, the same processes. The page server listens "
                    "on a free port of the destination: where only the agent's port is open, "
                    "--through-agent sends the memory in the checkpoint instead (compressed, slower). "
                    "Connections through a port published on "
                    "this host cannot move; clients of the container's own address keep theirs with "
                    "--tcp-established. With --lazy (post-copy) the container resumes on the destination "
                    "before its memory has moved, which then follows page by page from here, encrypted "
                    "(CRIU's TLS, with keys made for this migration): the point of no return is the "
                    "destination's resume. Before it, any failure resumes the container here; after it, "
                    "this host must serve pages until the last one has arrived (reported), and if it dies "
                    "meanwhile the destination's copy is lost.")
    migrate.add_argument("container", metavar="CONTAINER", nargs="?")
    migrate.add_argument("-a", "--all", action="store_true",
                         help="drain this host: migrate every running container, smallest first, each by a "
                              "migrate of its own; stop at the first failure unless --keep-going; a signal "
                              "starts no new one and lets those under way end")
    migrate.add_argument("--dry-run", action="store_true", help="with --all: list what would move, change nothing")
    migrate.add_argument("--parallel", type=int, default=1, metavar="N", help="with --all: N migrations at a time")
    migrate.add_argument("--keep-going", action="store_true", help="with --all: go on after a failure")
    migrate.add_argument("--to", required=True, metavar="URL", help="the destination agent, e.g. http://host-b:7070")
    migrate.add_argument("--token-file", metavar="FILE",
                         help=f"the destination agent's token (default: ${TOKEN_FILE_ENV})")
    migrate.add_argument("--tcp-established", action="store_true", help="move established TCP connections")
    migrate.add_argument("--file-locks", action="store_true",
                         help="move the file locks its processes hold (CRIU refuses them otherwise)")
    migrate.add_argument("--lazy", action="store_true",
                         help="post-copy: resume on the destination first, then move the memory (needs "
                              "userfaultfd there); this host must stay up until the last page has arrived")
    migrate.add_argument("--pre-copy", action="store_true",
                         help="copy memory while the container runs, then stop for what changed (needs "
                              "soft-dirty tracking: see 'ferry system check')")
    migrate.add_argument("--through-agent", action="store_true",
                         help="stop-and-copy with the memory in the checkpoint over the agent's connection, "
                              "not to a page server on the destination: for links where only the agent's "
                              "port is open (slower)")
    migrate.add_argument("--encrypt-to", action="append", default=[], metavar="KEY|FILE",
                         help="encrypt the checkpoint with age to this age1... or ssh- public key (or each one "
                              "in FILE), whose identity the destination's agent holds (ferry serve "
                              "--decrypt-key); the memory travels inside it, as with --through-agent")
    migrate.add_argument("--encrypt-passphrase-file", metavar="FILE",
                         help="the same, to the passphrase on FILE's first line (ferry serve "
                              "--decrypt-passphrase-file; about a second of scrypt each way, the destination's "
                              "inside the downtime)")
    migrate.add_argument("--name", help="the container's name on the destination")
    migrate.add_argument("-p", "--publish", action="append", metavar="[IP:]HOST:CONTAINER[/PROTO]",
                         help="publish these ports on the destination instead of the container's own")
    migrate.add_argument("--keep-source", action="store_true",
                         help="keep the stopped container here (its checkpoint is dropped)")
    migrate.add_argument("--tls-verify", default="true", choices=("true", "false"),
                         help="verify the agent's TLS certificate (default true)")
    migrate.add_argument("--tls-ca", metavar="FILE", help="verify the agent's certificate with this CA")
    migrate.add_argument("--print-stats", action="store_true", help="print the phases as JSON")
    migrate.add_argument("--format", choices=("text", "json"), default="text")
    migrate.set_defaults(handler=cmd_migrate)


def cmd_serve(args) -> int:
    from ferry.api.server import ServeOptions, parse_listen, serve
    from ferry.checkpoint.encryption import opening
    host, port = parse_listen(args.listen)
    return serve(ServeOptions(root=engine_of(args).layout.root, host=host, port=port, token_file=args.token_file,
                              tls_cert=args.tls_cert, tls_key=args.tls_key,
                              allow_bind_mounts=args.allow_bind_mounts, allow_privileges=args.allow_privileges,
                              keys=opening(tuple(args.decrypt_key), args.decrypt_passphrase_file)))


def _verify(args) -> bool | str:
    """TLS verification of the agent: with --tls-ca's CA, or on or off."""
    return args.tls_ca or (args.tls_verify == "true")


def _token_file(args) -> str:
    token_file = args.token_file or os.environ.get(TOKEN_FILE_ENV)
    if not token_file:
        raise UsageError("migrate needs the destination agent's token",
                         hint=f"pass --token-file FILE (or set ${TOKEN_FILE_ENV})")
    return token_file


def _drain(args) -> int:
    from ferry.migration import drain
    from ferry.migration.client import AgentClient, read_token
    if not args.all:
        raise UsageError("--dry-run, --parallel and --keep-going go with --all")
    if args.container:
        raise UsageError("--all migrates every running container: name none")
    for flag, given in (("--name", args.name), ("-p", args.publish)):
        if given:
            raise UsageError(f"{flag} names one container's new name or ports, and cannot go with --all")
    if not 1 <= args.parallel <= 16:
        raise UsageError("--parallel must be between 1 and 16")
    token_file = _token_file(args)
    from ferry.checkpoint.encryption import sealing, sealing_argv
    sealing(tuple(args.encrypt_to), args.encrypt_passphrase_file)   # its keys, checked before anything moves
    engine = engine_of(args)
    moving = drain.plan(engine.containers.list(all_states=False), engine.containers.runc)
    with AgentClient(args.to, read_token(token_file), verify=_verify(args)) as agent:
        agent.version()   # a wrong URL or token fails here, before anything moves
    if args.dry_run:
        render.table(["CONTAINER ID", "NAME", "IMAGE", "MEMORY"],
                     [[c.id[:12], c.name, c.config.image, f"{memory / 2**20:.1f}MiB"] for c, memory in moving])
        print(f"would migrate {len(moving)} container(s) to {args.to}", file=sys.stderr)
        return 0
    forwarded = ["--to", args.to, "--token-file", token_file, "--tls-verify", args.tls_verify]
    forwarded += ["--tls-ca", args.tls_ca] if args.tls_ca else []
    forwarded += [flag for flag, on in (("--tcp-established", args.tcp_established),
                                         ("--file-locks", args.file_locks), ("--lazy", args.lazy),
                                         ("--keep-source", args.keep_source),
                                         ("--through-agent", args.through_agent)) if on]
    forwarded += sealing_argv(tuple(args.encrypt_to), args.encrypt_passphrase_file)

    def report(outcome) -> None:
        print(f"{outcome.name}: {outcome.detail}" if outcome.ok else f"{outcome.name}: failed: {outcome.detail}",
              file=sys.stderr if not outcome.ok else sys.stdout, flush=True)
    try:
        outcomes = drain.drain([c.name for c, _memory in moving],
                               lambda name: drain.migrate_argv(engine.layout.root, name, forwarded),
                               parallel=args.parallel, keep_going=args.keep_going, report=report)
    except KeyboardInterrupt:
        print("ferry: the migrations under way have ended and no other began; 'ferry ps' shows what runs here",
              file=sys.stderr)
        raise
    failed = [o for o in outcomes if not o.ok]
    left = len(moving) - len(outcomes)
    summary = f"migrated {len(outcomes) - len(failed)} of {len(moving)} container(s) to {args.to}"
    if failed or left:
        raise FerryError(f"{summary}; {len(failed)} failed" + (f", {left} not tried" if left else ""),
                         hint="the failed ones run here still; see the errors above")
    print(summary, file=sys.stderr)
    return 0


def cmd_migrate(args) -> int:
    from ferry.migration.client import read_token
    signals.install()
    if args.pre_copy:
        from ferry.migration.precopy import check_pre_copy_possible
        if args.lazy:
            raise UsageError("--pre-copy and --lazy exclude each other: pre-copy moves memory before the "
                             "freeze, post-copy after the resume")
        check_pre_copy_possible()
        raise UsageError("--pre-copy is not built on hosts that can track dirty pages yet",
                         hint="migrate without --pre-copy, or with --lazy")
    if args.lazy and args.through_agent:
        raise UsageError("--lazy and --through-agent exclude each other: a lazy migration's memory always "
                         "comes from a page server here")
    from ferry.engine.migrations import MigrateOptions, refuse_lazy_sealing
    refuse_lazy_sealing(args.lazy, bool(args.encrypt_to or args.encrypt_passphrase_file))
    if args.all or args.dry_run or args.keep_going or args.parallel != 1:
        return _drain(args)
    if not args.container:
        raise UsageError("migrate needs a container, or --all", hint="see 'ferry migrate --help'")
    token_file = _token_file(args)
    from ferry.checkpoint.encryption import sealing
    options = MigrateOptions(to=args.to, token=read_token(token_file), verify=_verify(args), name=args.name,
                             ports=tuple(args.publish) if args.publish else None,
                             tcp_established=args.tcp_established, file_locks=args.file_locks,
                             keep_source=args.keep_source, lazy=args.lazy,
                             through_agent=args.through_agent,
                             sealing=sealing(tuple(args.encrypt_to), args.encrypt_passphrase_file))
    with _sent_bar() as sent:
        result = engine_of(args).migrations.migrate(args.container, options, sent)
    if args.print_stats or args.format == "json":
        render.json_out(result.stats())
        return 0
    render.line(result.name)
    phases = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.phases.items())
    if result.lazy:
        print(f"the last page arrived at {result.destination} {result.phases.get('pages', 0):.2f} s after the "
              f"container resumed there", file=sys.stderr)
    downtime = f"downtime {result.downtime:.2f} s" if result.downtime is not None else "downtime unknown"
    pushed = f" and {result.pages_pushed / 2**20:.1f} MiB of memory to its page server" if result.pages_pushed else ""
    print(f"migrated to {result.destination}: {downtime} ({phases}), {result.bytes_sent / 2**20:.1f} MiB sent{pushed}",
          file=sys.stderr)
    return 0


@contextlib.contextmanager
def _sent_bar():
    """Bytes sent, on a terminal (stderr)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
    with Progress(TextColumn("sending checkpoint"), DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn(),
                  console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task("send", total=None)
        yield lambda total: bar.update(task, completed=total)
