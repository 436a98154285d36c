"""What every command module shares: the parser, the registration of commands,
and the engine a command line names. It imports no command module: they import
it, and main imports them."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from ferry.util.errors import FerryError, NotFound, Several, UsageError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, which costs `ferry ps` 4 ms to import
if TYPE_CHECKING:
    from typing import NoReturn

    from ferry.engine.core import Engine


# pflag's words for a boolean flag's value (`--rm=true`, `-d=false`), as podman takes them.
TRUE_WORDS = ("1", "t", "T", "true", "TRUE", "True")
FALSE_WORDS = ("0", "f", "F", "false", "FALSE", "False")


def parse_bool(text: str) -> bool:
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


class BoolFlag(argparse.Action):
    """A podman-style boolean flag: `--flag`, `--flag=true` or `--flag=false`.
    argparse's optional value would swallow a following positional
    (`--tls-verify REF`), so such a value is kept in `<positional>_after_flag`
    for the handler (argparse later resets the empty positional itself)."""

    def __init__(self, option_strings, dest, positional: str, **kwargs):
        self.positional = positional
        super().__init__(option_strings, dest, nargs="?", const="true", **kwargs)

    def __call__(self, parser, namespace, value, option_string=None):
        try:
            setattr(namespace, self.dest, parse_bool(value))
        except argparse.ArgumentTypeError:
            if getattr(namespace, self.positional, None) is not None:
                parser.error(f"argument {option_string}: expected true or false, not {value!r}")
            setattr(namespace, self.dest, True)
            setattr(namespace, f"{self.positional}_after_flag", value)

    @staticmethod
    def positionals(args, name: str) -> list[str]:
        """A list positional with the value the flag took back in front."""
        after = getattr(args, f"{name}_after_flag", None)
        return ([after] if after else []) + list(getattr(args, name) or [])


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a one-line FerryError rather than a usage dump,
    naming the help of the command whose line it is; and boolean flags take podman's
    `--flag=true|false`."""

    def error(self, message: str) -> NoReturn:
        choice = re.match(r"argument COMMAND: invalid choice: '([^']*)'", message)
        if choice:
            message = f"unknown command '{choice.group(1)}' for '{self.prog}'"
        elif message.startswith("unrecognized arguments: "):
            message = "unknown flag or argument: " + message.split(": ", 1)[1]
        raise UsageError(message, hint=f"see '{self.prog} --help'")

    def parse_known_args(self, args=None, namespace=None):
        words = self._explicit_booleans(list(sys.argv[1:] if args is None else args))
        namespace, extras = super().parse_known_args(words, namespace)
        if extras:   # here, not in the top parser: the hint names this command's help
            self.error("unrecognized arguments: " + " ".join(extras))
        return namespace, extras

    def _explicit_booleans(self, words: list[str]) -> list[str]:
        """`--rm=true` as `--rm`; `--rm=false` as no --rm, dropping earlier ones (the
        last one counts). Only this parser's own flags: words past its first positional
        belong to a subcommand or to the container's command."""
        stops = any(a.nargs in (argparse.REMAINDER, argparse.PARSER) for a in self._actions
                    if not a.option_strings)
        kept: list[str] = []
        rest = iter(words)
        for word in rest:
            if word == "--" or (stops and not word.startswith("-")):
                return kept + [word, *rest]
            name, equals, value = word.partition("=")
            action = self._option_string_actions.get(name if equals else word)
            if action is None or not word.startswith("-"):
                kept.append(word)
            elif not equals:
                kept.append(word)
                if action.nargs != 0:   # its value is the next word, even one like a positional
                    value_word = next(rest, None)
                    kept += [] if value_word is None else [value_word]
            elif not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                kept.append(word)
            elif value in TRUE_WORDS + FALSE_WORDS:
                negation = f"--no-{name.lstrip('-')}" if action.default is True else None
                kept = [w for w in kept if w not in action.option_strings and w != negation]
                if value in TRUE_WORDS:
                    kept.append(name)
                elif negation:   # a flag on by default (run's --sig-proxy) is turned off by its hidden --no-
                    kept.append(negation)
            else:
                self.error(f'invalid argument "{value}" for "{name}" flag: it takes true or false')
        return kept


class SubcommandParser(Parser):
    """A command's parser; it also takes the global options, so that they may follow
    the command as they may in podman (`ferry ps --root DIR`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        add_global_options(self, hidden=True)


def add_global_options(parser: argparse.ArgumentParser, *, hidden: bool = False) -> None:
    """--root and --debug; `hidden` ones (a command's) set nothing unless given, so they
    never undo the same option given before the command."""
    if hidden:
        parser.add_argument("--root", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return
    from ferry.store.layout import DEFAULT_ROOT
    parser.add_argument("--root", metavar="DIR", default=None,
                        help=f"state root (default: $FERRY_ROOT or {DEFAULT_ROOT}); "
                        "each root is an independent host")
    parser.add_argument("--debug", action="store_true",
                        help="log every tool ferry runs and show tracebacks")


def subcommands(parser: argparse.ArgumentParser, title: str):
    return parser.add_subparsers(title=title, metavar="COMMAND", parser_class=SubcommandParser)


def add_commands(commands, builders: dict[str, Callable], only: str | None) -> bool:
    """Run each `builders[word](commands)`, or with `only`, just that one if it is
    among them. True when `only` was among them."""
    if only is not None:
        if only not in builders:
            return False
        builders = {only: builders[only]}
    for build in builders.values():
        build(commands)
    return True


def needs_subcommand(parser: argparse.ArgumentParser) -> Callable:
    """The handler of a group (`ferry system`) given no subcommand."""
    def handler(_args) -> int:
        raise UsageError(f"'{parser.prog}' needs a subcommand", hint=f"see '{parser.prog} --help'")
    return handler


def add_latest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-l", "--latest", action="store_true", help="the container created last")


def latest_container(engine: Engine) -> str:
    """--latest: the full ID of the container created last."""
    rows = engine.db.read().execute("SELECT id FROM containers ORDER BY created_at DESC LIMIT 1").fetchall()
    if not rows:
        raise NotFound("no containers to act on with --latest")
    return rows[0]["id"]


def add_filter(parser: argparse.ArgumentParser, *, short: bool = True) -> None:
    """--filter on a verb that acts on containers (stop, rm...): those ps --filter would list."""
    parser.add_argument(*(("-f", "--filter") if short else ("--filter",)), action="append", default=[],
                        metavar="KEY=VALUE",
                        help="act on the containers that match, as 'ferry ps -a --filter' lists them")


def add_cidfile_reading(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cidfile", action="append", default=[], metavar="FILE",
                        help="the container whose ID this file holds (as run --cidfile wrote it); repeatable")


def selected_names(engine: Engine, args, names: list[str], *, words: str = "containers") -> list[str]:
    """The names given; or with --latest the container created last, with --cidfile
    those the files name (by their full IDs, as podman prints them)."""
    cidfiles = getattr(args, "cidfile", None) or []
    latest = getattr(args, "latest", False)
    if cidfiles:
        if latest or getattr(args, "all", False):
            raise UsageError("--all, --latest, and --cidfile cannot be used together")
        if names:
            raise UsageError("no arguments are needed with --latest or --cidfile")
        return [_read_cidfile(path) for path in cidfiles]
    if not latest:
        return names
    if getattr(args, "all", False):
        raise UsageError("--all and --latest cannot be used together")
    if names:
        raise UsageError(f"--latest and {words} cannot be used together")
    return [latest_container(engine)]


CIDFILE_MAX = 4096   # an ID is 64 bytes: more is not a cidfile ferry or podman wrote


def _read_cidfile(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(CIDFILE_MAX + 1)
    except OSError as error:
        raise FerryError(f"reading CIDFile {path}: {error.strerror}") from None
    if len(data) > CIDFILE_MAX:
        raise FerryError(f"CIDFile {path} holds more than a container ID", hint="give the file run --cidfile wrote")
    return data.decode("utf-8", "replace").strip()


def engine_of(args) -> Engine:
    """The engine of the state root that the command line names (--root): the one
    way a handler reaches containers, checkpoints, images, networks and volumes."""
    from ferry.engine.core import Engine   # not for `ferry version`, nor a usage error
    return Engine(args.root)


def each_name(args, names, action, *, missing_ok: bool = False, first: type | None = None) -> int:
    """Apply `action` to each named container (or checkpoint, volume, network), printing each
    name it handled as podman does. A name that fails does not stop the others: each failure gets
    its line once all are done (with `missing_ok`, a missing name is no failure; failures of
    type `first` come first, and so decide the exit code)."""
    from ferry.cli import render
    failures: list[FerryError] = []
    for name in names:
        try:
            action(name)
        except NotFound as error:
            if not missing_ok:
                failures.append(error)
            continue
        except FerryError as error:
            failures.append(error)
            continue
        render.line(name)
    raise_all(failures, first=first)
    return 0


def inspect_each(names: list[str], look_up, fmt: str, view=lambda data: data) -> None:
    """podman's inspect: the records found, as JSON or through the template `fmt`
    (over `view` of each), and then each missing name's failure."""
    from ferry.cli import render
    found, missing = [], []
    for name in names:
        try:
            found.append(look_up(name))
        except NotFound as error:
            missing.append(error)
    if fmt == "json":
        render.json_out(found)
    else:
        render.template(fmt, [view(data) for data in found], heading=False, name="inspect")
    raise_all(missing)


def raise_all(failures: list[FerryError], *, first: type | None = None) -> None:
    """The failures of a command over several names, once all were tried: the one, or Several
    (those of type `first` first: podman's rmi exits 2 when one image is in use, whatever else failed)."""
    if first is not None:
        failures = sorted(failures, key=lambda error: not isinstance(error, first))
    if len(failures) > 1:
        raise Several(failures)
    if failures:
        raise failures[0]
