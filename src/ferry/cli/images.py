"""Image commands, podman-style: `ferry pull|push|tag|save|load|images|rmi|history`
and the `ferry image ...` group (the same, and import, inspect, prune, build-debian)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections import namedtuple
from datetime import datetime, timezone

from ferry.cli import render
from ferry.cli.parsing import BoolFlag, add_commands, engine_of, inspect_each, needs_subcommand, raise_all, subcommands
from ferry.util.errors import FerryError, UsageError

EXIT_OK = 0
SHORT_ID = 12


# ---- argument helpers ------------------------------------------------------

def _command(text: str) -> list[str]:
    """--cmd as a JSON array (exec form) or a shell-quoted string."""
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
            raise argparse.ArgumentTypeError(f"not a JSON array of strings: {text}")
        return value
    try:
        value = shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split {text!r}: {exc}") from None
    if not value:
        raise argparse.ArgumentTypeError("empty command")
    return value


def _csv(text: str) -> list[str]:
    return [item for item in (part.strip() for part in text.split(",")) if item]


def _progress_line(text: str) -> None:
    # Progress goes to stderr, so stdout carries only the result (an image ID).
    print(text, file=sys.stderr, flush=True)


# ---- rendering helpers -----------------------------------------------------

def human_size(size: int) -> str:
    """3 significant digits and a space, as podman's images shows sizes: "2.07 MB"."""
    return render.go_size(size, 3, gap=" ")


# RFC 3339: Go writes up to 9 fractional digits (podman save, registries), any offset.
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)")


def _parse_time(created: str) -> datetime | None:
    """An image's creation time, or None when it is not RFC 3339."""
    match = _RFC3339.fullmatch(created)
    if match is None:
        return None
    date, clock, fraction, offset = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        return datetime.fromisoformat(f"{date}T{clock}{'+00:00' if offset in 'Zz' else offset}") \
            .replace(microsecond=micros)
    except ValueError:   # a 31st of February
        return None


def human_age(created: str, now: datetime | None = None) -> str:
    """podman's CREATED: go-units' HumanDuration and " ago" ("About a minute ago", "12 months ago")."""
    from ferry.util.timefmt import human_duration
    when = _parse_time(created)
    if when is None:
        return "unknown"
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = ((now or datetime.now(timezone.utc)) - when).total_seconds()
    return f"{human_duration(max(seconds, 0))} ago"


def split_repo_tag(name: str) -> tuple[str, str]:
    repo, _, tag = name.rpartition(":")
    if not repo or "/" in tag:
        return name, "<none>"
    return repo, tag


def full_id(image_id: str) -> str:
    """An image ID as podman's `images --no-trunc` shows it: with its algorithm."""
    return f"sha256:{image_id}"


def image_rows(images, no_trunc: bool = False) -> list[list[str]]:
    rows = []
    for image in images:
        image_id = full_id(image.id) if no_trunc else image.id[:SHORT_ID]
        for name in image.names or ("<none>:<none>",):
            repo, tag = split_repo_tag(name)
            rows.append([repo, tag, image_id, human_age(image.created), human_size(image.size)])
    return rows


def image_json(image, extra: ImageExtra) -> dict:
    """One image as podman's `images --format json` shows it: its keys and types.
    RepoTags holds the names (podman 4.3.1 leaves it null, which no script can use)."""
    when = _parse_time(image.created)
    return {"Id": image.id, "ParentId": "", "RepoTags": list(image.names),
            "RepoDigests": _repo_digests(image), "Size": image.size, "SharedSize": 0,
            "VirtualSize": image.size, "Labels": dict(extra.labels) or None, "Containers": extra.containers,
            "Names": list(image.names), "Digest": image.digest, "History": list(image.names),
            "Created": int(when.timestamp()) if when else 0, "CreatedAt": image.created}


def image_views(image, extra: ImageExtra, no_trunc: bool) -> list[dict]:
    """The fields podman's images templates see: one row for each of the image's names."""
    from ferry.cli.gotemplate import GoMap
    from ferry.util.timefmt import go_time
    when = _parse_time(image.created)
    created = go_time(when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")) if when else ""
    common = {"ID": full_id(image.id) if no_trunc else image.id[:SHORT_ID], "Id": image.id, "Digest": image.digest,
              "Created": human_age(image.created), "CreatedSince": human_age(image.created),
              "CreatedAt": created, "CreatedTime": created, "Size": human_size(image.size),
              "VirtualSize": image.size, "SharedSize": 0, "Labels": GoMap(extra.labels),
              "Names": list(image.names), "History": ", ".join(image.names), "Containers": extra.containers,
              "ReadOnly": False, "IsReadOnly": False, "Dangling": not image.names, "ParentId": "",
              "RepoTags": list(image.names), "RepoDigests": _repo_digests(image)}
    rows = []
    for name in image.names or ("<none>:<none>",):
        repo, tag = split_repo_tag(name)
        rows.append({**common, "Repository": repo, "Tag": tag})
    return rows


# What JSON and templates show of an image beyond its records: its config's
# labels, and how many containers use it.
ImageExtra = namedtuple("ImageExtra", "labels containers")


def image_extras(engine, images) -> dict[str, ImageExtra]:
    from ferry.engine.images import container_counts
    counts = container_counts(engine)
    extras = {}
    for image in images:
        labels = engine.images.get(image.id).config.labels
        extras[image.id] = ImageExtra(labels, counts.get(image.id, 0))
    return extras


def _repo_digests(image) -> list[str]:
    repos = dict.fromkeys(split_repo_tag(name)[0] for name in image.names)
    return [f"{repo}@{image.digest}" for repo in repos]


IMAGE_HEADERS = {"ID": "IMAGE ID", "Id": "IMAGE ID", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT"}


# ---- handlers -----------------------------------------------------------------

def cmd_images(args) -> int:
    from ferry.image.listing import list_images
    wanted = list(args.filter)
    if args.image:
        if wanted:
            raise UsageError("cannot specify an image and a filter(s)")
        wanted = [f"reference={args.image}"]
    if wanted:   # a bad filter is refused before the store is opened
        from ferry.image.filters import parse_filters
        parse_filters(wanted)
    engine = engine_of(args)
    images = list_images(engine.db)
    if wanted:
        from ferry.engine.images import filter_images
        chosen = {image.id for image in filter_images(engine, wanted)}
        images = [image for image in images if image.id in chosen]
    if args.quiet:
        for image in images:
            render.line(full_id(image.id) if args.no_trunc else image.id[:SHORT_ID])
        return EXIT_OK
    if args.format == "table":
        if args.noheading:
            for row in image_rows(images, args.no_trunc):
                render.line("  ".join(row))
        else:
            render.table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], image_rows(images, args.no_trunc))
        return EXIT_OK
    extras = image_extras(engine, images)
    if args.format == "json":
        render.json_out([image_json(image, extras[image.id]) for image in images])
        return EXIT_OK
    render.template(args.format, [view for image in images for view in image_views(image, extras[image.id],
                                                                                     args.no_trunc)],
                    IMAGE_HEADERS, heading=not args.noheading, name="images")
    return EXIT_OK


def cmd_pull(args) -> int:
    reference = args.reference or getattr(args, "reference_after_flag", None)
    if not reference:
        raise UsageError("no image to pull given", hint="use 'ferry pull REF'")
    started: set[str] = set()
    finished: set[str] = set()

    def progress(what: str, done: int, total: int) -> None:
        if args.quiet or what in finished:
            return
        if 0 <= total <= done:
            finished.add(what)
            _progress_line(f"Copying {what} done")
        elif what not in started:
            started.add(what)
            _progress_line(f"Copying {what}")

    if not args.quiet:
        _progress_line(f"Trying to pull {reference}...")
    from ferry.engine.images import pull_image
    image = pull_image(engine_of(args), reference, tls_verify=args.tls_verify, creds=args.creds,
                       progress=progress)
    if not args.quiet:
        _progress_line("Writing manifest to image destination")
    render.line(image.id)
    return EXIT_OK


def cmd_load(args) -> int:
    if not args.input:
        raise UsageError("no archive given", hint="use 'ferry load -i ARCHIVE'")
    from ferry.engine.images import load_images
    for image in load_images(engine_of(args), args.input):
        if image.names:
            for name in image.names:
                render.line(f"Loaded image: {name}")
        else:
            render.line(f"Loaded image: sha256:{image.id}")
    return EXIT_OK


def cmd_import(args) -> int:
    from ferry.engine.images import import_image
    image = import_image(engine_of(args), args.tarball, args.reference)
    render.line(image.id)
    return EXIT_OK


def cmd_rmi(args) -> int:
    from ferry.engine.images import remove_all_images, remove_image
    from ferry.util.errors import InUse
    if args.all and args.images:
        raise UsageError("when using the --all switch, you may not pass any images names or IDs")
    if not args.all and not args.images:
        raise UsageError("image name or ID must be specified", hint="or remove them all with -a")
    engine = engine_of(args)
    failures: list[FerryError] = []
    if args.all:
        lines, failures = remove_all_images(engine, force=args.force)
        for text in lines:
            render.line(text)
    for ref in args.images:
        try:
            for text in remove_image(engine, ref, force=args.force):
                render.line(text)
        except FerryError as error:   # podman removes what it can and reports each failure
            failures.append(error)
    raise_all(failures, first=InUse)
    return EXIT_OK


def cmd_image_prune(args) -> int:
    from ferry.engine.images import prune_images
    from ferry.image.filters import PRUNE_FILTERS, parse_filters
    parse_filters(args.filter, PRUNE_FILTERS)   # refused before anything is asked or opened
    if not args.force and not render.confirmed(
            "WARNING! This command removes all images without at least one container associated with them."
            if args.all else "WARNING! This command removes all dangling images."):
        return EXIT_OK
    for image_id, _ in prune_images(engine_of(args), every_unused=args.all, filters=args.filter):
        render.line(image_id)
    return EXIT_OK


HISTORY_HEADERS = {"ID": "ID", "Created": "CREATED", "CreatedBy": "CREATED BY", "Size": "SIZE",
                   "Comment": "COMMENT", "CreatedAt": "CREATED AT", "CreatedSince": "CREATED", "Tags": "TAGS"}


def history_views(entries, *, human: bool, no_trunc: bool) -> list[dict]:
    """The fields podman's history templates see, one dict per entry."""
    from ferry.image.history import created_by_column
    from ferry.util.timefmt import go_time
    views = []
    for entry in entries:
        when = _parse_time(entry.created)
        stamp = when.astimezone(timezone.utc) if when else None
        views.append({
            "ID": entry.id if no_trunc or entry.id.startswith("<") else entry.id[:SHORT_ID],
            "Created": (human_age(entry.created) if human else stamp.strftime("%Y-%m-%dT%H:%M:%SZ"))
            if stamp else "",
            "CreatedSince": human_age(entry.created) if stamp else "",
            "CreatedAt": go_time(stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) if stamp else "",
            "CreatedBy": created_by_column(entry.created_by, no_trunc),
            "Size": human_size(entry.size), "Comment": entry.comment, "Tags": []})
    return views


def history_json(entry) -> dict:
    """One entry as podman's `history --format json` shows it (its keys, its
    omitted empty comment)."""
    when = _parse_time(entry.created)
    stamp = when.astimezone(timezone.utc) if when else None
    data = {"id": entry.id, "created": entry.created, "CreatedBy": entry.created_by, "size": entry.size}
    if entry.comment:
        data["comment"] = entry.comment
    data["Created"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ") if stamp else ""
    return data


def cmd_history(args) -> int:
    from ferry.engine.images import image_history
    image = args.image or getattr(args, "image_after_flag", None)   # `-H IMAGE`: the flag took it
    if not image:
        raise UsageError("history takes exactly one image", hint="use 'ferry image history IMAGE'")
    entries = image_history(engine_of(args), image)
    views = history_views(entries, human=args.human, no_trunc=args.no_trunc)
    if args.quiet:
        for view in views:
            render.line(view["ID"])
    elif args.format == "json":
        # podman prints this one on a single line, escaped as Go's encoder does
        text = json.dumps([history_json(entry) for entry in entries], separators=(",", ":"))
        render.line(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    elif args.format is None:   # podman's own default, so its table to the byte
        render.template("table {{.ID}}\t{{.Created}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}", views,
                        HISTORY_HEADERS, name="history")
    else:
        render.template(args.format, views, HISTORY_HEADERS, name="history")
    return EXIT_OK


def cmd_inspect(args) -> int:
    """As podman's: the images found are shown, then each missing name gets its line."""
    inspect_each(args.images, engine_of(args).images.inspect, args.format, _image_view)
    return EXIT_OK


def _image_view(data: dict) -> dict:
    """An image's inspect record as podman's templates see it: Created as Go prints a time."""
    from ferry.util.timefmt import go_time
    return {**data, "Created": go_time(data["Created"])} if data.get("Created") else data


def cmd_push(args) -> int:
    image, dest = args.image, args.destination
    after = getattr(args, "image_after_flag", None)
    if after:   # `--tls-verify IMAGE [DEST]`: the flag took the image for its value
        image, dest = after, image
    if not image:
        raise UsageError("no image to push given", hint="use 'ferry push IMAGE [REGISTRY/NAME[:TAG]]'")
    from ferry.engine.images import push_image
    if not args.quiet:
        _progress_line("Getting image source signatures")
    digest = push_image(engine_of(args), image, dest, tls_verify=args.tls_verify, creds=args.creds,
                        compression=args.compression_format,
                        report=(lambda line: None) if args.quiet else _progress_line)
    if args.digestfile:
        from ferry.util.fs import atomic_write
        atomic_write(args.digestfile, digest, mode=0o644)
    return EXIT_OK


def cmd_tag(args) -> int:
    from ferry.engine.images import tag_image
    tag_image(engine_of(args), args.image, args.targets)
    return EXIT_OK


def cmd_untag(args) -> int:
    from ferry.engine.images import untag_image
    untag_image(engine_of(args), args.image, args.names)
    return EXIT_OK


def cmd_save(args) -> int:
    if len(args.images) > 1 and not args.multi_image_archive:
        raise UsageError("save takes one image, or several with -m (--multi-image-archive)")
    from ferry.engine.images import save_images
    save_images(engine_of(args), args.images, args.output, args.format)
    return EXIT_OK


def cmd_build_debian(args) -> int:
    from ferry.engine.images import build_debian_image
    include = [pkg for group in args.include for pkg in group]
    image = build_debian_image(engine_of(args), args.reference, include, suite=args.suite, cmd=args.cmd,
                               expose=args.expose, env=args.env, progress=None if args.quiet else _progress_line)
    render.line(image.id)
    return EXIT_OK


# ---- registration -----------------------------------------------------------------

def _add_images(commands, name: str, aliases=()) -> None:
    parser = commands.add_parser(name, aliases=list(aliases), help="list images")
    parser.add_argument("-q", "--quiet", action="store_true", help="show only image IDs")
    parser.add_argument("--format", default="table",
                        help="table, json, or a Go template like '{{.Repository}}:{{.Tag}}'")
    parser.add_argument("--no-trunc", action="store_true", help="show full image IDs")
    parser.add_argument("-n", "--noheading", action="store_true", help="omit the table header")
    parser.add_argument("-a", "--all", action="store_true",
                        help="all images (ferry keeps no intermediate images, so the same list)")
    parser.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="dangling, label, reference, before, since, until, id, digest, containers, "
                             "readonly (a key twice: either; keys: all)")
    parser.add_argument("image", metavar="IMAGE", nargs="?", help="only images this reference matches")
    parser.set_defaults(handler=cmd_images)


def _add_pull(commands) -> None:
    parser = commands.add_parser("pull", help="pull an image from a registry",
                                 description="Pull linux/<host arch> of REF from an OCI "
                                 "distribution registry (https; plain http with --tls-verify=false).")
    parser.add_argument("reference", metavar="REF", nargs="?")
    parser.add_argument("--tls-verify", action=BoolFlag, positional="reference", default=True,
                        metavar="BOOL", help="require https with a trusted certificate (default true)")
    parser.add_argument("--creds", metavar="USER:PASS", help="registry credentials")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    parser.set_defaults(handler=cmd_pull)


def _add_load(commands) -> None:
    parser = commands.add_parser("load", help="load images from a docker-archive or oci-archive")
    parser.add_argument("-i", "--input", metavar="ARCHIVE", required=True)
    parser.set_defaults(handler=cmd_load)


def _add_rmi(commands, name: str, aliases=()) -> None:
    parser = commands.add_parser(name, aliases=list(aliases), help="remove images")
    parser.add_argument("images", metavar="IMAGE", nargs="*")
    parser.add_argument("-a", "--all", action="store_true", help="remove every image")
    parser.add_argument("-f", "--force", action="store_true",
                        help="also remove containers using the image, and images named several times")
    parser.set_defaults(handler=cmd_rmi)


def _add_history(commands) -> None:
    parser = commands.add_parser("history", help="show an image's history")
    parser.add_argument("image", metavar="IMAGE", nargs="?")
    parser.add_argument("-H", "--human", action=BoolFlag, positional="image", default=True, metavar="BOOL",
                        help="times as ages (default true); false: RFC 3339")
    parser.add_argument("--no-trunc", action="store_true", help="full IDs and CREATED BY")
    parser.add_argument("-q", "--quiet", action="store_true", help="only the IDs")
    parser.add_argument("--format", default=None, help="json, or a Go template like '{{.ID}} {{.Size}}'")
    parser.set_defaults(handler=cmd_history)


def _add_prune(commands) -> None:
    parser = commands.add_parser("prune", help="remove dangling images (every unused one with -a)")
    parser.add_argument("-a", "--all", action="store_true", help="every image no container uses")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="label=KEY[=VALUE], label!=..., until=TIME")
    parser.set_defaults(handler=cmd_image_prune)


def _add_push(commands) -> None:
    parser = commands.add_parser("push", help="push an image to a registry",
                                 description="Push IMAGE to DESTINATION, or to the registry its name "
                                 "names (https; plain http with --tls-verify=false).")
    parser.add_argument("image", metavar="IMAGE", nargs="?")
    parser.add_argument("destination", metavar="DESTINATION", nargs="?")
    parser.add_argument("--tls-verify", action=BoolFlag, positional="image", default=True,
                        metavar="BOOL", help="require https with a trusted certificate (default true)")
    parser.add_argument("--creds", metavar="USER:PASS", help="registry credentials")
    parser.add_argument("--compression-format", choices=("gzip", "zstd"), default="gzip",
                        help="how layers are compressed (default gzip)")
    parser.add_argument("--digestfile", metavar="FILE", help="write the pushed manifest's digest here")
    parser.add_argument("-q", "--quiet", action="store_true", help="print no progress")
    parser.set_defaults(handler=cmd_push)


def _add_tag(commands) -> None:
    parser = commands.add_parser("tag", help="add names to an image")
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("targets", metavar="TARGET", nargs="+")
    parser.set_defaults(handler=cmd_tag)


def _add_untag(commands) -> None:
    parser = commands.add_parser("untag", help="remove names from an image (all of them without NAME)")
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("names", metavar="NAME", nargs="*")
    parser.set_defaults(handler=cmd_untag)


def _add_save(commands) -> None:
    parser = commands.add_parser("save", help="save images to a docker-archive or oci-archive")
    parser.add_argument("images", metavar="IMAGE", nargs="+")
    parser.add_argument("-o", "--output", metavar="FILE", help="the archive (default: stdout, redirected)")
    parser.add_argument("--format", default="docker-archive", metavar="FORMAT",
                        help="docker-archive (default) or oci-archive")
    parser.add_argument("-m", "--multi-image-archive", action="store_true",
                        help="save several images in one docker-archive")
    parser.add_argument("-q", "--quiet", action="store_true", help="print no progress")
    parser.set_defaults(handler=cmd_save)


def register(commands, only: str | None = None) -> bool:
    """Add the image commands to ferry's top-level subparsers, or with `only`, just
    that one if it is ours. True when it added `only`."""
    return add_commands(commands, {"images": lambda c: _add_images(c, "images"), "pull": _add_pull,
                                   "push": _add_push, "tag": _add_tag, "untag": _add_untag, "save": _add_save,
                                   "load": _add_load, "rmi": lambda c: _add_rmi(c, "rmi"),
                                   "history": _add_history, "image": _add_image_group}, only)


def _add_image_group(commands) -> None:
    image = commands.add_parser("image", help="manage images")
    group = subcommands(image, "image commands")
    image.set_defaults(handler=needs_subcommand(image))

    imported = group.add_parser("import", help="create an image from a root filesystem tar")
    imported.add_argument("tarball", metavar="ROOTFS.tar")
    imported.add_argument("reference", metavar="NAME[:TAG]")
    imported.set_defaults(handler=cmd_import)

    _add_load(group)
    _add_pull(group)
    _add_push(group)
    _add_tag(group)
    _add_untag(group)
    _add_save(group)
    _add_images(group, "ls", aliases=("list",))
    _add_rmi(group, "rm", aliases=("remove",))
    _add_history(group)
    _add_prune(group)

    inspect = group.add_parser("inspect", help="show images' details as JSON")
    inspect.add_argument("-f", "--format", default="json", help="json, or a Go template like '{{.RepoTags}}'")
    inspect.add_argument("images", metavar="IMAGE", nargs="+")
    inspect.set_defaults(handler=cmd_inspect)

    build = group.add_parser("build-debian", help="build a minimal Debian image with debootstrap",
                             description="Build NAME[:TAG] from Debian packages (debootstrap "
                             "minbase); the root filesystem is cached under /var/cache/ferry/debian.")
    build.add_argument("reference", metavar="NAME[:TAG]")
    build.add_argument("--include", type=_csv, action="append", default=[], metavar="PKG,PKG",
                       help="extra Debian packages")
    build.add_argument("--suite", default="bookworm")
    build.add_argument("--cmd", type=_command, default=None, metavar="CMD",
                       help="default command, as a JSON array or a shell-quoted string "
                       "(default: the package's service, or bash)")
    build.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]")
    build.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    build.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    build.set_defaults(handler=cmd_build_debian)
