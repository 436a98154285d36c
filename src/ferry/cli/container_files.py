"""The verbs that reach a container's files: cp, diff, export, commit."""

from __future__ import annotations

import sys

from ferry.cli import render
from ferry.cli.parsing import BoolFlag, engine_of
from ferry.util.errors import UsageError


def _files(args):
    from ferry.engine.container_files import ContainerFiles
    return ContainerFiles(engine_of(args))


class _ArchiveFlag(BoolFlag):
    """--archive[=BOOL]; also -a=BOOL, whose value argparse hands over with its '='."""

    def __call__(self, parser, namespace, value, option_string=None):
        super().__call__(parser, namespace, value[1:] if value and value.startswith("=") else value, option_string)


def cmd_cp(args) -> int:
    paths = BoolFlag.positionals(args, "paths")
    if len(paths) != 2:
        raise UsageError(f"cp takes a source and a destination, not {len(paths)} paths",
                         hint="ferry cp [CONTAINER:]SRC_PATH [CONTAINER:]DEST_PATH")
    sys.stdout.flush()
    _files(args).copy(paths[0], paths[1], archive=args.archive, overwrite=args.overwrite,
                      stdin=sys.stdin.buffer, stdout=sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


def cmd_diff(args) -> int:
    if args.format not in (None, "json"):
        raise UsageError(f"unknown --format {args.format!r}", hint="only json is supported")
    if args.latest == bool(args.name):
        raise UsageError("give a container or image, or --latest" if not args.name
                         else "--latest and a container or image cannot be used together",
                         hint="see 'ferry diff --help'")
    files = _files(args)
    changes = files.diff(args.name or files.latest())
    if args.format == "json":
        import json
        data = {key: value for key, value in changes._asdict().items() if value}
        print(json.dumps(data, indent=5))
    else:
        for text in changes.lines():
            render.line(text)
    return 0


def cmd_export(args) -> int:
    files = _files(args)
    files.container(args.name)   # before a file is made for it
    if args.output:
        from ferry.util.fs import remove_file
        path = args.output
        try:
            with open(path, "wb") as out:
                files.export(args.name, out)
        except BaseException:
            remove_file(path)
            raise
        return 0
    if sys.stdout.isatty():
        raise UsageError("refusing to export to terminal. Use -o flag or redirect")
    files.export(args.name, sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


def cmd_commit(args) -> int:
    from ferry.engine.container_files import CommitOptions
    if args.pause:
        pass   # ferry copies the upper dir as it is; pausing is not needed to read it
    options = CommitOptions(changes=tuple(args.change), message=args.message or "", author=args.author or "",
                            fmt=args.format)
    image = _files(args).commit(args.name, args.image, options)
    if not args.quiet:
        print("Getting image source signatures", file=sys.stderr)
        for diff_id in image.layers:
            print(f"Copying blob {diff_id}", file=sys.stderr)
        print(f"Copying config sha256:{image.id}", file=sys.stderr)
        print("Writing manifest to image destination", file=sys.stderr)
        print("Storing signatures", file=sys.stderr)
    if args.iidfile:
        from ferry.util.fs import atomic_write
        atomic_write(args.iidfile, f"sha256:{image.id}", mode=0o644)
    render.line(image.id)
    return 0


def _add_cp(sub) -> None:
    cp = sub.add_parser("cp", help="copy files between a container and the host",
                        description="[CONTAINER:]SRC_PATH [CONTAINER:]DEST_PATH; '-' is a tar stream")
    cp.add_argument("-a", "--archive", action=_ArchiveFlag, positional="paths", default=True,
                    help="chown copied files to the container's user (default true)")
    cp.add_argument("--overwrite", action="store_true",
                    help="replace directories with non-directories and the other way round")
    cp.add_argument("paths", nargs="*", metavar="PATH", help="[CONTAINER:]SRC_PATH [CONTAINER:]DEST_PATH")
    cp.set_defaults(handler=cmd_cp)


def _add_diff(sub) -> None:
    diff = sub.add_parser("diff", help="show the changes to a container's (or image's) files")
    diff.add_argument("--format", help="json")
    diff.add_argument("-l", "--latest", action="store_true", help="the container created last")
    diff.add_argument("name", metavar="CONTAINER|IMAGE", nargs="?")
    diff.set_defaults(handler=cmd_diff)


def _add_export(sub) -> None:
    export = sub.add_parser("export", help="write a container's filesystem as a tar")
    export.add_argument("-o", "--output", help="the file to write (default: stdout, which must be redirected)")
    export.add_argument("name", metavar="CONTAINER")
    export.set_defaults(handler=cmd_export)


def _add_commit(sub) -> None:
    commit = sub.add_parser("commit", help="make an image of a container's changes")
    commit.add_argument("-a", "--author")
    commit.add_argument("-c", "--change", action="append", default=[],
                        help="CMD | ENTRYPOINT | ENV | EXPOSE | LABEL | ONBUILD | STOPSIGNAL | USER | VOLUME | WORKDIR")
    commit.add_argument("-f", "--format", default="oci", choices=("oci", "docker"))
    commit.add_argument("--iidfile", help="write the image ID to this file")
    commit.add_argument("-m", "--message")
    commit.add_argument("-p", "--pause", action="store_true", help="accepted; ferry does not need to pause")
    commit.add_argument("-q", "--quiet", action="store_true")
    commit.add_argument("name", metavar="CONTAINER")
    commit.add_argument("image", nargs="?")
    commit.set_defaults(handler=cmd_commit)


# verb -> builder(subparsers), taken at the top level and under `ferry container`
VERBS: dict = {"cp": _add_cp, "diff": _add_diff, "export": _add_export, "commit": _add_commit}
