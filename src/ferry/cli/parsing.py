"""What every command module shares: the parser, the registration of commands,
and the engine a command line names. It imports no command module: they import
it, and main imports them."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from ferry.util.errors import UsageError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, which costs `ferry ps` 4 ms to import
if TYPE_CHECKING:
    from typing import NoReturn

    from ferry.engine.core import Engine


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a one-line FerryError rather than a usage dump."""

    def error(self, message: str) -> NoReturn:
        choice = re.match(r"argument COMMAND: invalid choice: '([^']*)'", message)
        if choice:
            message = f"unknown command '{choice.group(1)}' for '{self.prog}'"
        elif message.startswith("unrecognized arguments: "):
            message = "unknown flag or argument: " + message.split(": ", 1)[1]
        raise UsageError(message, hint=f"see '{self.prog} --help'")


def subcommands(parser: argparse.ArgumentParser, title: str):
    return parser.add_subparsers(title=title, metavar="COMMAND", parser_class=Parser)


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


def engine_of(args) -> Engine:
    """The engine of the state root that the command line names (--root): the one
    way a handler reaches containers, checkpoints, images, networks and volumes."""
    from ferry.engine.core import Engine   # not for `ferry version`, nor a usage error
    return Engine(args.root)
