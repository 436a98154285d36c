"""`ferry container checkpoint` and `ferry container restore`, with podman's flags."""

from __future__ import annotations

import argparse
import contextlib
import sys

from ferry.cli import render
from ferry.cli.parsing import BoolFlag, each_name, engine_of
from ferry.util import signals
from ferry.util.errors import FerryError, Several, UsageError

PHASE_TEXT = {"dump": "freezing and dumping", "hash": "hashing", "write": "writing archive",
              "read": "reading archive"}


def register(container_commands) -> None:
    checkpoint = container_commands.add_parser("checkpoint", help="checkpoint running containers")
    checkpoint.add_argument("containers", nargs="*", metavar="CONTAINER")
    checkpoint.add_argument("-a", "--all", action="store_true", help="checkpoint every running container")
    checkpoint.add_argument("-l", "--latest", action="store_true", help="checkpoint the container created last")
    checkpoint.add_argument("--file-locks", action="store_true",
                            help="checkpoint the file locks its processes hold (a restore takes them again)")
    checkpoint.add_argument("-e", "--export", "--file", dest="export", metavar="PATH",
                            help="write one archive (.tar.gz, .tar.zst or .tar; - or a FIFO streams it)")
    checkpoint.add_argument("-R", "--leave-running", action="store_true",
                            help="keep the container running after the checkpoint")
    checkpoint.add_argument("--tcp-established", action="store_true",
                            help="checkpoint established TCP connections")
    checkpoint.add_argument("-c", "--compress", choices=("zstd", "gzip", "none"),
                            help="compression (default: from the file name)")
    checkpoint.add_argument("--ignore-rootfs", action="store_true",
                            help="leave the root filesystem changes out of the archive")
    checkpoint.add_argument("--ignore-volumes", action="store_true",
                            help="leave named volumes out of the archive")
    checkpoint.add_argument("--keep", action="store_true", help="keep the CRIU images after exporting")
    checkpoint.add_argument("--create-image", metavar="IMAGE",
                            help="also make a checkpoint image of this name (one layer, podman's annotations), "
                                 "to push to a registry")
    checkpoint.add_argument("--sign-key", metavar="FILE",
                            help="sign the archive with this Ed25519 private key (PEM)")
    checkpoint.add_argument("--every", metavar="DURATION", type=_duration,
                            help="then again each DURATION (30s, 5m, 1h), with --leave-running, from the "
                                 "container's monitor while it runs; 0 stops that")
    checkpoint.add_argument("--file-pattern", metavar="PATTERN",
                            help="write each --leave-running checkpoint to an archive at PATTERN, whose {time} "
                                 "(and {name}, {id}) are filled in")
    checkpoint.add_argument("--keep-last", type=int, metavar="N",
                            help="then remove all but the container's newest N checkpoints (local ones and "
                                 "archives ferry wrote)")
    checkpoint.add_argument("--encrypt-to", action="append", default=[], metavar="KEY|FILE",
                            help="encrypt the archive with age to this age1... or ssh- public key, or to each "
                                 "one in FILE")
    checkpoint.add_argument("--encrypt-passphrase-file", metavar="FILE",
                            help="encrypt the archive with age, to the passphrase on FILE's first line")
    checkpoint.add_argument("--print-stats", action="store_true", help="print timings as JSON")
    checkpoint.add_argument("--format", choices=("text", "json"), default="text")
    checkpoint.set_defaults(handler=cmd_checkpoint)

    restore = container_commands.add_parser("restore", help="restore checkpointed containers")
    restore.add_argument("containers", nargs="*", metavar="CONTAINER|IMAGE",
                         help="containers to restore in place, or checkpoint images (pulled when the "
                              "name has a registry)")
    restore.add_argument("-i", "--import", "--file", dest="import_path", metavar="PATH",
                         help="restore from a checkpoint archive: ferry's, or podman's 'container checkpoint "
                              "--export' (- reads it from stdin)")
    restore.add_argument("-n", "--name",
                         help="the restored container's name (with --import, --checkpoint or an image)")
    restore.add_argument("--checkpoint", metavar="ID",
                         help="restore this checkpoint ('ferry checkpoint ls') instead of the container's latest")
    restore.add_argument("-a", "--all", action="store_true", help="restore every stopped container with a checkpoint")
    restore.add_argument("-l", "--latest", action="store_true", help="restore the container created last")
    restore.add_argument("-k", "--keep", action="store_true",
                         help="keep a container's local checkpoint after restoring it, to restore it again")
    # podman needs it to take a checkpoint's file locks again; ferry always does (file_locks_in).
    restore.add_argument("--file-locks", action="store_true",
                         help="accepted for podman: a checkpoint's file locks are always taken again")
    restore.add_argument("--tcp-established", action="store_true",
                         help="restore established TCP connections")
    restore.add_argument("-p", "--publish", action="append", default=None,
                         help="publish these ports instead of the checkpointed ones")
    restore.add_argument("--ignore-static-ip", action="store_true", help="take a new IP address")
    restore.add_argument("--ignore-static-mac", action="store_true", help="take a new MAC address")
    restore.add_argument("--ignore-rootfs", action="store_true", help="do not apply root filesystem changes")
    restore.add_argument("--ignore-volumes", action="store_true", help="do not restore named volumes")
    restore.add_argument("--image-archive", metavar="FILE",
                         help="load the container's image from this archive if it is missing")
    restore.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DEST[:ro]",
                         help="mount SRC where the checkpointed container had a mount at DEST (with --import)")
    restore.add_argument("--allow-bind-mounts", action="store_true",
                         help="mount the host paths the archive names (they are printed); otherwise "
                              "a restore of a container with bind mounts needs -v for each")
    restore.add_argument("--allow-privileges", action="store_true",
                         help="grant what the archive's container was run with beyond ferry's defaults "
                              "(--privileged, --cap-add, --ipc host, --network host); an archive not this "
                              "root's own is otherwise refused")
    restore.add_argument("--verify-key", metavar="FILE",
                         help="refuse the archive unless it is signed by this Ed25519 public key (PEM)")
    _decrypt_flags(restore)
    restore.add_argument("--force", action="store_true",
                         help="restore although this host differs from the checkpoint's (architecture, kernel, "
                              "CPU, CRIU, runc, cgroups); the archive's own checks still apply")
    restore.add_argument("--tls-verify", action=BoolFlag, positional="containers", default=True, metavar="BOOL",
                         help="for pulling a checkpoint image: require https with a trusted certificate")
    restore.add_argument("--creds", metavar="USER:PASS", help="for pulling a checkpoint image: credentials")
    restore.add_argument("--print-stats", action="store_true", help="print timings as JSON")
    restore.add_argument("--format", choices=("text", "json"), default="text")
    restore.set_defaults(handler=cmd_restore)


def checkpoint_group(commands) -> None:
    """`ferry checkpoint ...`: what is in an archive, without restoring it."""
    from ferry.cli.parsing import needs_subcommand, subcommands
    group = commands.add_parser("checkpoint", help="list, remove and look into checkpoints and archives")
    verbs = subcommands(group, "checkpoint commands")
    group.set_defaults(handler=needs_subcommand(group))
    verify = verbs.add_parser("verify", help="check an archive as a restore would, restoring nothing",
                              description="Read the whole archive: its layout, format, every member's "
                              "digest and its signature. Exits 125 naming the first bad member.")
    verify.add_argument("archive", metavar="FILE")
    verify.add_argument("--verify-key", metavar="FILE",
                        help="also require a signature by this Ed25519 public key (PEM)")
    _decrypt_flags(verify)
    verify.add_argument("--format", choices=("text", "json"), default="text")
    verify.set_defaults(handler=cmd_verify)
    inspect = verbs.add_parser("inspect", help="what a checkpoint holds: processes, memory, files, sockets, mounts, "
                               "file locks",
                               description="Decode a checkpoint archive (ferry's, podman's or CRI-O's) or "
                               "checkpoint image with pycriu. The archive is checked whole first, as a "
                               "restore would.")
    inspect.add_argument("target", metavar="FILE|IMAGE")
    inspect.add_argument("--ps-tree", action="store_true", help="the process tree with command lines")
    inspect.add_argument("--ps-tree-env", action="store_true", help="the process tree with environments")
    inspect.add_argument("--files", action="store_true", help="each process's open files")
    inspect.add_argument("--sockets", action="store_true", help="sockets, with TCP 4-tuples and states")
    inspect.add_argument("--mounts", action="store_true", help="the container's mounts")
    inspect.add_argument("--stats", action="store_true", help="CRIU's dump statistics")
    inspect.add_argument("--all", action="store_true", help="all of the above")
    inspect.add_argument("--verify-key", metavar="FILE", help="require a signature by this key (archives)")
    _decrypt_flags(inspect)
    inspect.add_argument("--format", choices=("tree", "json"), default="tree")
    inspect.set_defaults(handler=cmd_inspect)
    show = verbs.add_parser("show", help="one line per archive: container, image, engine, size, signature")
    show.add_argument("archives", metavar="FILE", nargs="+")
    _decrypt_flags(show)
    show.add_argument("--format", choices=("table", "json"), default="table")
    show.set_defaults(handler=cmd_show)
    listing = verbs.add_parser("ls", aliases=["list"], help="the checkpoints kept here and the archives ferry wrote",
                               description="Local checkpoints (a stopped container's own, and those taken "
                               "with --leave-running) and the archives that --export wrote and that still "
                               "exist, newest first.")
    listing.add_argument("containers", nargs="*", metavar="CONTAINER", help="only these containers' checkpoints")
    listing.add_argument("-q", "--quiet", action="store_true", help="only the IDs")
    listing.add_argument("--no-trunc", action="store_true", help="full IDs")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(handler=cmd_ls)
    remove = verbs.add_parser("rm", help="remove checkpoints: local ones, or the archive files",
                              description="Remove checkpoints by ID ('ferry checkpoint ls'). An archive's file "
                              "is deleted; a stopped container's own checkpoint leaves it stopped, "
                              "with nothing to restore.")
    remove.add_argument("checkpoints", nargs="*", metavar="ID")
    remove.add_argument("-a", "--all", action="store_true", help="every checkpoint listed")
    remove.set_defaults(handler=cmd_rm)
    prune = verbs.add_parser("prune", help="keep only each container's newest checkpoints",
                             description="Remove all but each container's newest N checkpoints, local ones "
                             "and archives alike.")
    prune.add_argument("containers", nargs="*", metavar="CONTAINER", help="only these containers' checkpoints")
    prune.add_argument("--keep-last", type=int, metavar="N", required=True)
    prune.set_defaults(handler=cmd_prune)


def _decrypt_flags(parser) -> None:
    parser.add_argument("--decrypt-key", action="append", default=[], metavar="FILE",
                        help="an encrypted archive's age identity file (AGE-SECRET-KEY-1...) or SSH private key")
    parser.add_argument("--decrypt-passphrase-file", metavar="FILE",
                        help="an encrypted archive's passphrase, on FILE's first line")


def _keys(args):
    from ferry.checkpoint.encryption import opening
    return opening(tuple(args.decrypt_key), args.decrypt_passphrase_file)


def _store(args):
    from ferry.engine.checkpoint_store import CheckpointStore
    engine = engine_of(args)
    return CheckpointStore(engine.layout, engine.db)


def cmd_ls(args) -> int:
    store = _store(args)
    entries = store.entries()
    if args.containers:
        missing = [ref for ref in args.containers if not any(store.of_container(e, ref) for e in entries)]
        entries = [e for e in entries if any(store.of_container(e, ref) for ref in args.containers)]
        if missing:
            from ferry.util.errors import NotFound
            raise NotFound(f"no checkpoints of container {missing[0]!r}", hint="see 'ferry checkpoint ls'")
    if args.format == "json":
        render.json_out([e.to_json() for e in entries])
        return 0
    width = None if args.no_trunc else 12
    if args.quiet:
        for entry in entries:
            render.line(entry.id[:width])
        return 0
    from ferry.cli.images import human_size
    from ferry.util.timefmt import ago
    render.table(["CHECKPOINT ID", "CONTAINER", "IMAGE", "CREATED", "SIZE", "KIND", "SIGNED", "ENCRYPTED", "PATH"],
                 [[e.id[:width], e.container_name, e.image, ago(e.created_at), human_size(e.size),
                   e.kind + (" (stopped it)" if e.in_place else ""), _yes(e.signed), _yes(e.encrypted), e.path]
                  for e in entries])
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def cmd_rm(args) -> int:
    if args.all == bool(args.checkpoints):
        raise UsageError("give checkpoint IDs, or --all", hint="see 'ferry checkpoint ls'")
    checkpoints = engine_of(args).checkpoints
    refs = [e.id for e in _store(args).entries()] if args.all else args.checkpoints
    return each_name(args, refs, checkpoints.remove_checkpoint)


def cmd_prune(args) -> int:
    for entry in engine_of(args).checkpoints.prune(args.keep_last, args.containers or None):
        render.line(entry.id)
    return 0


def _summaries(paths: list[str], keys, verify_key: str | None = None):
    from ferry.checkpoint.signing import load_public_key
    from ferry.engine.archives import summarize
    key = load_public_key(verify_key) if verify_key else None
    return [summarize(path, key, keys) for path in paths]


def cmd_verify(args) -> int:
    [summary] = _summaries([args.archive], _keys(args), args.verify_key)
    if args.format == "json":
        render.json_out(summary.to_json())
        return 0
    if summary.engine != "ferry":
        trust = f"{summary.engine}'s archive: no digests or signature to check, only its layout"
    elif summary.verified:
        trust = f"signed by {summary.signer}, the key given"
    elif summary.signed:
        trust = f"signed by {summary.signer} (give --verify-key to require that key)"
    else:
        trust = "not signed: its digests say it is whole, not who wrote it"
    render.line(f"{summary.path}: OK, format {summary.format_version or '-'}, {summary.members} members, "
                f"{summary.member_bytes} bytes; {trust}")
    return 0


INSPECT_SECTIONS = ("ps_tree", "files", "sockets", "mounts", "stats")


def cmd_inspect(args) -> int:
    from ferry.checkpoint.signing import load_public_key
    from ferry.engine.archives import inspect
    wanted = {name for name in INSPECT_SECTIONS if args.all or getattr(args, name)}
    if args.ps_tree_env or "files" in wanted:
        wanted.add("ps_tree")
    key = load_public_key(args.verify_key) if args.verify_key else None
    found = inspect(engine_of(args), args.target, env=args.ps_tree_env or args.all, verify_key=key, keys=_keys(args))
    if "files" not in wanted:
        for process in found["processes"]:
            process.pop("files")
    for section, key_name in (("ps_tree", "processes"), ("sockets", "sockets"), ("mounts", "mounts"),
                              ("stats", "stats")):
        if section not in wanted:
            found.pop(key_name)
    if args.format == "json":
        render.json_out(found)
    else:
        for text in _tree(found):
            render.line(text)
    return 0


def _tree(found: dict) -> list[str]:
    """checkpointctl's shape: the container, then one branch per section."""
    from ferry.cli.images import human_size
    container = found["container"]
    trust = ("signed by " + found["signer"] if found.get("signer") else
             "not signed" if found.get("signed") is False else "")
    host = found.get("host")
    branches = [
        (f"Image: {container.get('image') or '-'}" + (f" ({container['image_id'][:12]})"
                                                      if container.get("image_id") else ""), []),
        (f"ID: {container.get('id') or '-'}", []),
        (f"Engine: {found['engine']}" + (f", {trust}" if trust else ""), []),
    ]
    if found.get("created"):
        branches.append((f"Created: {found['created']}", []))
    if host:
        branches.append((f"Host: {host['arch']}, kernel {host['kernel']}, CRIU {host['criu_version']}, "
                         f"runc {host['runc_version']}, cgroups {host['cgroup_mode']}, {host['hostname']}", []))
    if found.get("size"):
        branches.append((f"Size: {human_size(found['size'])}", []))
    branches.append((f"Memory: {found['memory']['pages']} pages ({human_size(found['memory']['bytes'])})", []))
    branches.append((f"Root FS diff: {human_size(found['rootfs_diff'])}", []))
    if found["volumes"]:
        branches.append(("Volumes", [(f"{name}: {human_size(size)}", []) for name, size in found["volumes"].items()]))
    branches.append((f"TCP connections kept: {'yes' if found['tcp_established'] else 'no'}", []))
    if found["file_locks"]:
        branches.append(("File locks", [(_file_lock(lock), []) for lock in found["file_locks"]]))
    else:
        branches.append(("File locks: none", []))
    if "processes" in found:
        branches.append(("Process tree", _processes(found["processes"])))
    if "sockets" in found:
        branches.append(("Sockets", [(f"[{s['protocol']}{' ' + s['state'] if s['state'] else ''}] "
                                      f"{s['source']} -> {s['destination']}", []) for s in found["sockets"]]))
    if "mounts" in found:
        branches.append(("Mounts", [(f"{m['mountpoint']} ({m['fstype']}, {m['source']})", [])
                                    for m in found["mounts"]]))
    if found.get("stats"):
        branches.append(("CRIU dump statistics", [(f"{k}: {v}", []) for k, v in found["stats"].items()]))
    lines = [f"{container.get('name') or '?'} ({found['archive']})"]
    _draw(branches, "", lines)
    return lines


def _file_lock(lock: dict) -> str:
    text = f"[{lock['kind']} {lock['type']}] pid {lock['pid']}, fd {lock['fd']}"
    if lock["kind"] in ("flock", "lease"):   # these lock the whole file: no range to show
        return text
    return text + f", from byte {lock['start']}" + (" to the end" if lock["len"] == 0 else f", {lock['len']} bytes")


def _processes(processes: list[dict]) -> list:
    children: dict[int, list[dict]] = {}
    pids = {p["pid"] for p in processes}
    for process in processes:
        children.setdefault(process["ppid"] if process["ppid"] in pids else 0, []).append(process)

    def node(process: dict):
        label = (f"[{process['pid']}] {' '.join(process['cmdline']) or process['comm']}"
                 f" ({process['threads']} thread{'s' if process['threads'] != 1 else ''}, "
                 f"{process['memory_pages']} pages)")
        below = []
        if "environment" in process:
            below.append(("Environment", [(v, []) for v in process["environment"]]))
        if "files" in process:
            below.append(("Open files", [(f"[{f['type']} {f['fd']}] {f['description']}", [])
                                         for f in process["files"]]))
        return label, below + [node(child) for child in children.get(process["pid"], [])]
    return [node(process) for process in children.get(0, [])]


def _draw(branches: list, prefix: str, lines: list[str]) -> None:
    for index, (label, below) in enumerate(branches):
        last = index == len(branches) - 1
        lines.append(f"{prefix}{'└── ' if last else '├── '}{label}")
        _draw(below, prefix + ("    " if last else "│   "), lines)


def cmd_show(args) -> int:
    summaries = _summaries(args.archives, _keys(args))
    if args.format == "json":
        render.json_out([s.to_json() for s in summaries])
        return 0
    from ferry.cli.images import human_size
    render.table(["ARCHIVE", "CONTAINER", "IMAGE", "ENGINE", "CREATED", "SIZE", "COMPRESSION", "CRIU",
                  "TCP", "SIGNED"],
                 [[s.path, s.container, s.image, s.engine, s.created or "-", human_size(s.size), s.compression,
                   s.criu_version or "-", "yes" if s.tcp_established else "no",
                   (s.signer or "yes") if s.signed else ("n/a" if s.engine != "ferry" else "no")]
                  for s in summaries])
    return 0


def _duration(text: str) -> float:
    from ferry.util.timefmt import parse_duration
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _chosen(args, checkpoints, *, restore: bool) -> list[str]:
    """The containers named, or the IDs of those --all or --latest choose;
    refusals in podman's words."""
    if args.all and args.latest:
        raise UsageError("--all and --latest cannot be used together")
    if args.all and args.containers:
        raise UsageError("no arguments are needed with --all")
    if args.latest and args.containers:
        raise UsageError("--all or --latest and containers cannot be used together" if restore
                         else "--latest and containers cannot be used together")
    if args.all:
        return [c.id for c in (checkpoints.restorable() if restore else checkpoints.checkpointable())]
    if args.latest:
        return [checkpoints.latest().id]
    return args.containers


def _each(names: list[str], action) -> tuple[list, list]:
    """(name, action(name)) for each name it succeeded on, and the failures:
    one container's failure does not stop the others (podman's way)."""
    done, failures = [], []
    for name in names:
        try:
            done.append((name, action(name)))
        except FerryError as failure:
            failures.append(failure)
    return done, failures


def _fail(failures: list) -> None:
    if len(failures) > 1:
        raise Several(failures)
    if failures:
        raise failures[0]


def cmd_checkpoint(args) -> int:
    from ferry.engine.checkpoints import CheckpointOptions
    signals.install()   # SIGTERM and SIGHUP end a checkpoint as Ctrl-C does: cleanly
    if not (args.containers or args.all or args.latest):
        raise UsageError("you must provide at least one name or id", hint="or --all, or --latest")
    checkpoints = engine_of(args).checkpoints
    args.containers = _chosen(args, checkpoints, restore=False)
    if args.every == 0:
        if args.file_pattern or args.export or args.create_image or args.keep_last is not None:
            raise UsageError("--every 0 stops a schedule and takes no other checkpoint option")
        checkpoints = engine_of(args).checkpoints
        for name in args.containers:
            if not checkpoints.unschedule(name):
                render.warning(f"container {name} had no checkpoint schedule")
            render.line(name)
        return 0
    if (args.export or args.create_image) and len(args.containers) > 1:
        # podman 4.3.1 writes them all to the one file, each over the last.
        raise UsageError(f"{'--export' if args.export else '--create-image'} takes one container, "
                         f"not {len(args.containers)}", hint="checkpoint the others separately")
    checkpoints.check_names(args.containers)   # a missing one stops them all, before any is checkpointed
    options = CheckpointOptions(export=args.export, create_image=args.create_image, leave_running=args.leave_running,
                                tcp_established=args.tcp_established, file_locks=args.file_locks,
                                compress=args.compress,
                                ignore_rootfs=args.ignore_rootfs, ignore_volumes=args.ignore_volumes,
                                keep=args.keep, sign_key=args.sign_key, keep_last=args.keep_last,
                                every=args.every, file_pattern=args.file_pattern,
                                encrypt_to=tuple(args.encrypt_to),
                                encrypt_passphrase_file=args.encrypt_passphrase_file)

    def checkpoint(name: str):
        with progress_bar() as progress:
            return checkpoints.checkpoint(name, options, progress)
    results, failures = _each(args.containers, checkpoint)
    for _, result in results:
        if result.kept_locally and not args.keep:
            render.warning(f"the checkpoint of {result.name} is kept here too, as only the archive's reader "
                           "knows whether it restored",
                           hint=f"'ferry container restore {result.name}' brings it back here; "
                                f"'ferry rm {result.name}' drops it")
    # An archive on stdout leaves it no room for anything else.
    from ferry.checkpoint.archive.endpoints import is_stdout
    with contextlib.redirect_stdout(sys.stderr) if is_stdout(args.export) else contextlib.nullcontext():
        _print_results(args, results, "podman_checkpoint_duration")
    _fail(failures)
    return 0


def cmd_restore(args) -> int:
    from ferry.engine.checkpoints import RestoreOptions
    signals.install()
    args.containers = BoolFlag.positionals(args, "containers")
    if args.import_path and (args.all or args.latest):
        raise UsageError("cannot use --import with --all or --latest")
    if args.checkpoint and (args.all or args.latest):
        raise UsageError("cannot use --checkpoint with --all or --latest")
    if args.import_path and args.containers:
        raise UsageError("give either --import FILE or container names, not both")
    if not args.import_path and not args.containers and not args.checkpoint and not args.all and not args.latest:
        raise UsageError("restore needs container names, --all, --latest, --checkpoint ID, or --import FILE")
    if args.checkpoint and len(args.containers) > 1:
        raise UsageError("--checkpoint takes at most one container")
    checkpoints = engine_of(args).checkpoints
    args.containers = _chosen(args, checkpoints, restore=True)
    if args.name and len(args.containers) > 1:
        raise UsageError("--name takes one container or archive", hint="restore the others separately")
    if len(args.containers) > 1:
        checkpoints.check_restore_names(args.containers)   # a missing one stops them all, as in podman
    options = RestoreOptions(import_path=args.import_path, name=args.name,
                             tcp_established=args.tcp_established, keep=args.keep,
                             ports=tuple(args.publish) if args.publish is not None else None,
                             ignore_static_ip=args.ignore_static_ip, ignore_static_mac=args.ignore_static_mac,
                             ignore_rootfs=args.ignore_rootfs, ignore_volumes=args.ignore_volumes,
                             image_archive=args.image_archive, volumes=tuple(args.volume),
                             allow_bind_mounts=args.allow_bind_mounts, allow_privileges=args.allow_privileges,
                             verify_key=args.verify_key,
                             tls_verify=args.tls_verify, creds=args.creds, force=args.force,
                             checkpoint=args.checkpoint, decrypt_keys=tuple(args.decrypt_key),
                             decrypt_passphrase_file=args.decrypt_passphrase_file)

    def restore(name: str | None):
        with progress_bar() as progress:
            result = checkpoints.restore(name, options, progress)
        _report_trust(result, args.import_path or (f"checkpoint {args.checkpoint}" if args.checkpoint
                                                   else f"checkpoint image {name}"))
        return result
    # --all may choose none: nothing to restore is no failure (podman's way).
    done, failures = _each(args.containers if args.containers or args.all else [None], restore)
    # Each as podman prints it: a container as the user named it (or by ID, for
    # --all and --latest); what an archive or image made, by its new ID.
    results = [(name if name and result.in_place else result.id, result) for name, result in done]
    _print_results(args, results, "podman_restore_duration")
    _fail(failures)
    return 0


def _report_trust(result, path: str | None) -> None:
    """On stderr, so that stdout stays the container's ID."""
    from ferry.engine.checkpoints import Authenticity
    for difference in result.host_differences:
        render.warning(f"restored with --force although {difference}")
    for volume in result.granted_binds:
        render.warning(f"mounted host path {volume.source} at {volume.destination}, as the archive asked "
                       "(--allow-bind-mounts)")
    if result.authenticity == Authenticity.FOREIGN:
        render.warning(f"restored from {'stdin' if path == '-' else path}, another engine's checkpoint: such "
                       "checkpoints carry no digests or signature, so their origin and integrity are not verified")
    if result.authenticity == Authenticity.UNVERIFIED:
        render.warning(f"restored from {'stdin' if path == '-' else path}, whose origin is not verified",
                       hint="sign archives with --sign-key and restore them with --verify-key")


def _print_results(args, results, duration_key: str) -> None:
    """results: (what the user named, result) pairs. --print-stats prints one
    document for them all, as podman does; --format json one per container."""
    if args.print_stats:
        stats = [result.stats(raw) for raw, result in results]
        render.json_out({duration_key: sum(s[duration_key] for s in stats),   # podman's null for none
                         "container_statistics": [e for s in stats for e in s["container_statistics"]] or None})
    elif args.format == "json":
        render.json_out([result.stats(raw) for raw, result in results])
    else:
        for raw, _ in results:
            render.line(raw)


@contextlib.contextmanager
def progress_bar():
    """A progress bar on a terminal (on stderr, so stdout stays parseable)."""
    if not sys.stderr.isatty():
        yield lambda *_: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description:<22}"), BarColumn(), DownloadColumn(),
                  TimeElapsedColumn(), console=Console(file=sys.stderr), transient=True) as bar:
        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(PHASE_TEXT.get(phase, phase), total=total or None)
            bar.update(tasks[phase], completed=done, total=total or None)
        yield update
