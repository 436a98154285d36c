"""ferry's command line: parsing, dispatch, and the one place errors become exit codes."""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence

import ferry
from ferry.cli import render
from ferry.cli.parsing import Parser, add_global_options, subcommands
from ferry.store.layout import Layout
from ferry.util import log
from ferry.util.errors import (BadArchive, CommandNotExecutable, CommandNotFound, Conflict, ContainerRunning,
                               DiskFull, ExecImpossible, FerryError, InUse, Incompatible, NotFound, PermissionDenied,
                               RuntimeRefused, Several, ToolError, UsageError)

# Podman's codes (checked against podman 4.3.1): 125 means ferry itself failed,
# a bad command line included; 126 and 127 that exec's command cannot be run or
# found; other codes are a container's own exit status.
EXIT_OK = 0
EXIT_NOT_READY = 1
EXIT_ERROR = 125
EXIT_USAGE = EXIT_ERROR
EXIT_CANNOT_INVOKE = 126
EXIT_EXEC_IMPOSSIBLE = 255   # podman exec's for a container that is not running
EXIT_COMMAND_NOT_FOUND = 127
# podman rm's own codes (podman-rm(1)): 1 no such container, 2 it is running.
EXIT_RM_NO_SUCH = 1
EXIT_RM_RUNNING = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM and SIGHUP give 128 + theirs, as a shell would
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer its reader left

EXIT_CODES: dict[type[FerryError], int] = {
    UsageError: EXIT_USAGE,
    PermissionDenied: EXIT_ERROR,
    NotFound: EXIT_ERROR,
    Conflict: EXIT_ERROR,
    Incompatible: EXIT_ERROR,
    BadArchive: EXIT_ERROR,
    DiskFull: EXIT_ERROR,
    ToolError: EXIT_ERROR,
    CommandNotFound: EXIT_COMMAND_NOT_FOUND,
    CommandNotExecutable: EXIT_CANNOT_INVOKE,
    RuntimeRefused: EXIT_CANNOT_INVOKE,
    ExecImpossible: EXIT_EXEC_IMPOSSIBLE,
}
# Codes that only one command gives (its words, as `ferry container rm` ends).
COMMAND_EXIT_CODES: dict[str, dict[type[FerryError], int]] = {
    "rm": {NotFound: EXIT_RM_NO_SUCH, ContainerRunning: EXIT_RM_RUNNING},
    # podman rmi's, volume rm's and network rm's (their man pages): 1 no such one, 2 one is in use.
    **{verb: {NotFound: EXIT_RM_NO_SUCH, InUse: EXIT_RM_RUNNING} for verb in ("rmi", "volume rm", "network rm")},
}
# Failures of what the user asked for, which a full disk does not explain.
REQUEST_ERRORS = (UsageError, NotFound, Conflict, PermissionDenied)
# How tools (and ferry's own messages quoting them) say a write found no room.
NO_SPACE_TEXT = re.compile(r"no space left on device|disk quota exceeded|database or disk is full", re.I)
PATH_IN_TEXT = re.compile(r"(?<![\w.~])/[^\s:;,'\"()]*")


def exit_code_for(error: FerryError, command: str | None = None) -> int:
    """The exit code of `error` raised by `command` ("rm"); for several, the first one's."""
    if isinstance(error, Several) and error.errors:
        return exit_code_for(error.errors[0], command)
    codes = {**EXIT_CODES, **COMMAND_EXIT_CODES.get(command or "", {})}
    for cls in type(error).__mro__:
        if cls in codes:
            return codes[cls]
    return EXIT_ERROR


def build_parser(command: str | None = None) -> Parser:
    """The whole command line, or with `command`, only that command's parser: building
    all ~50 parsers (~150 arguments, a gettext lookup each) would cost `ferry ps` a
    third of its time."""
    parser = Parser(prog="ferry", description="ferry moves running containers: run, "
                    "checkpoint to one archive, restore anywhere, live-migrate.")
    parser.add_argument("--version", action="version", version=f"ferry version {ferry.__version__}")
    add_global_options(parser)
    commands = subcommands(parser, "commands")
    # An unknown word is claimed by no module: then build everything, for the error.
    if command is None or not any(register(commands, command) for register in _registrars()):
        for register in _registrars():
            register(commands, None)
    return parser


def _registrars():
    """Each command module's register(commands, only), in help order; a module is
    imported only when reached, so `ferry ps` never loads the image commands."""
    from ferry.cli import system
    yield system.register
    from ferry.cli import containers
    yield containers.register
    from ferry.cli import images
    yield images.register
    from ferry.cli import networks
    yield networks.register
    from ferry.cli import migrations
    yield migrations.register


def command_word(argv: Sequence[str]) -> str | None:
    """The first word that is not a global option (or its value)."""
    words = iter(argv)
    for word in words:
        if word in ("-h", "--help"):
            return None
        if word == "--root":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


GROUPS = ("container",)   # groups whose verbs are also top-level commands


def command_verb(argv: Sequence[str]) -> str | None:
    """The verb a command line runs: "rm" for `ferry rm` and `ferry container rm`."""
    word = command_word(argv)
    if word in GROUPS:
        rest = list(argv)[list(argv).index(word) + 1:]
        return command_word(rest)
    if word in ("image", "volume", "network"):   # `image rm` is rmi, with rmi's exit codes
        rest = list(argv)[list(argv).index(word) + 1:]
        if command_word(rest) in ("rm", "remove"):
            return "rmi" if word == "image" else f"{word} rm"
    return word


# ---- entry point --------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line; whatever it raises becomes one line on stderr and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    # --debug stamps each line: where the time of a command goes shows in its log.
    log.configure(level="DEBUG" if debug else "WARNING",
                  format="ferry: %(asctime)s.%(msecs)03d %(name)s: %(message)s" if debug else "ferry: %(name)s: %(message)s",
                  datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        args = build_parser(command_word(argv)).parse_args(argv)
        if not hasattr(args, "handler"):
            raise UsageError("no command given", hint="see 'ferry --help'")
        code = args.handler(args)
        sys.stdout.flush()   # a reader gone shows here, not as Python's complaint at exit
        return code
    except SystemExit:   # --help and --version
        raise
    except BaseException as failure:
        try:
            report(failure, argv, debug)
        except BaseException:   # a second signal, or no stderr left: the code still tells
            pass
        return exit_code_of(failure, command_verb(argv))


def run() -> None:
    """The `ferry` command: main(), then an exit without Python's teardown.
    Freeing every module's objects at exit cost a checkpoint or restore about
    20 ms and does nothing a command needs. atexit handlers (logging's flush,
    tempfile's finalizers) still run, and while another thread lives the exit
    is Python's own, which waits for it."""
    code = main()
    if threading.active_count() == 1:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            atexit._run_exitfuncs()
        except BaseException:   # a reader gone, a second signal: Python's own exit reports it
            raise SystemExit(code) from None
        os._exit(code)
    raise SystemExit(code)


def exit_code_of(failure: BaseException, command: str | None = None) -> int:
    if isinstance(failure, FerryError):
        return exit_code_for(failure, command)
    if isinstance(failure, KeyboardInterrupt):
        return 128 + _signal_of(failure)
    if isinstance(failure, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    return EXIT_ERROR


def _signal_of(interrupt: KeyboardInterrupt) -> signal.Signals:
    """The signal behind it: ferry.util.signals names SIGTERM or SIGHUP (or SIGINT)
    in the KeyboardInterrupt it raises; Python's own, for Ctrl-C, names none."""
    name = interrupt.args[0] if interrupt.args and isinstance(interrupt.args[0], str) else ""
    return signal.Signals.__members__.get(name, signal.SIGINT)


def report(failure: BaseException, argv: Sequence[str], debug: bool) -> None:
    """One line on stderr saying what failed (nothing for a reader gone); the
    traceback only under --debug."""
    if isinstance(failure, FerryError):
        if debug:
            log.get_logger("ferry").error("failed", exc_info=failure)
        for each in failure.errors if isinstance(failure, Several) else [failure]:
            error = explain_space(each, argv)
            render.error(error.message, hint=error.hint)
    elif isinstance(failure, KeyboardInterrupt):
        number = _signal_of(failure)
        render.error("interrupted" if number == signal.SIGINT else f"interrupted by {number.name}")
    elif isinstance(failure, BrokenPipeError):
        # The reader went away (`ferry ps | head -1`): nothing to say, nowhere to
        # say it, and Python's exit would fail again flushing stdout.
        _silence_stdout()
    else:   # a bug, or a host condition no FerryError names yet
        if debug:
            log.get_logger("ferry").error("unexpected failure", exc_info=failure)
        from ferry.util import space
        if space.is_no_space(failure):
            full = _no_space_error(failure, argv)
            render.error(full.message, hint=full.hint)
            return
        hint = None if debug else "rerun with --debug for the traceback"
        root = _root(argv)
        if root is not None and space.is_full(root):
            hint = _full_root_hint(root) + (f"; {hint}" if hint else "")
        render.error(f"unexpected failure: {describe_unexpected(failure)}", hint=hint)


def explain_space(error: FerryError, argv: Sequence[str]) -> FerryError:
    """Tell the user when a failure came from a full disk, and which disk: a
    message that quotes ENOSPC gets a hint naming the full filesystem, and so
    does an opaque failure (runc's "unable to store init state") while the
    state root's filesystem is full."""
    if isinstance(error, (DiskFull, *REQUEST_ERRORS)):
        return error
    from ferry.util import space
    if NO_SPACE_TEXT.search(error.message):
        paths = [p.rstrip(".") for p in PATH_IN_TEXT.findall(error.message)]
        full = [p for p in paths if space.is_full(p)]
        place = (full or paths or [_root(argv)])[0]
        if place is None:
            return error
        hint = space.space_hint(place if os.path.isdir(place) else os.path.dirname(place))
    else:
        root = _root(argv)
        if root is None or not space.is_full(root):
            return error
        hint = _full_root_hint(root)
    return DiskFull(error.message, hint=hint + (f"; {error.hint}" if error.hint else ""))


def _no_space_error(error: OSError, argv: Sequence[str]) -> DiskFull:
    """An ENOSPC (or EDQUOT) that no layer translated, naming its file."""
    from ferry.util import space
    root = _root(argv)
    name = os.fsdecode(error.filename) if error.filename is not None else None
    if name and root and (name + "/").startswith(root.rstrip("/") + "/"):
        place = root
    else:
        place = os.path.dirname(name) if name else root or "/"
    return space.no_space(f"cannot write {name}" if name else "a write failed", place, error.errno)


def _full_root_hint(root: str) -> str:
    from ferry.util import space
    mount = space.mount_point(root)
    where = root if mount == os.path.realpath(root) else f"{root} (mounted at {mount})"
    return f"the filesystem of {where} is full: free space on it"


def _root(argv: Sequence[str]) -> str | None:
    """The state root this command line works on, as --root or its defaults give it;
    --root may follow the command too, as with podman (not past a `--`)."""
    value = None
    words = iter(argv)
    for word in words:
        if word == "--root":
            value = next(words, None)
        elif word.startswith("--root="):
            value = word.split("=", 1)[1]
        elif word == "--":
            break
    try:
        return Layout.at(value).root
    except FerryError:
        return None


def describe_unexpected(error: BaseException) -> str:
    """One line for an exception no FerryError translated."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror + (f": {error.filename}" if error.filename else "")
    elif type(error).__module__ == "sqlite3":
        text = f"state database: {error}"
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
