"""Everything ferry prints goes through here: tables, JSON, key/value lists, errors."""

from __future__ import annotations

import io
import json
import sys
from typing import Iterable

from rich.console import Console
from rich.table import Table

from ferry.host.probes import OK, WARNING, Check

# Off a terminal, rich would wrap at 80 columns; pipes and logs read better whole.
PIPE_WIDTH = 200


def _console() -> Console:
    return Console(file=sys.stdout, highlight=False)


def line(text: str) -> None:
    print(text)


def json_out(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def key_values(data: dict) -> None:
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key + ':':<{width + 1}} {value}")


def error(message: str, hint: str | None = None) -> None:
    text = f"ferry: error: {message}"
    if hint:
        text += f" (hint: {hint})"
    print(text, file=sys.stderr)


def table(headers: list[str], rows: Iterable[list[str]]) -> None:
    """A podman-style table: upper-case headers, columns separated by spaces."""
    grid = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 2, 0, 0))
    for header in headers:
        grid.add_column(header, overflow="fold")
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    _print_table(grid)


STATUS_STYLE = {OK: "green", WARNING: "yellow"}


def checks_table(checks: Iterable[Check]) -> None:
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("CHECK", "STATUS", "VALUE", "DETAIL", "WITHOUT IT"):
        table.add_column(column, overflow="fold")
    for check in checks:
        style = STATUS_STYLE.get(check.status, "red" if check.required else "yellow")
        table.add_row(check.key, f"[{style}]{check.status}[/{style}]", check.value, check.detail,
                      "" if check.status == OK else check.impact)
    _print_table(table)


def _print_table(table: Table) -> None:
    if sys.stdout.isatty():
        _console().print(table)
        return
    # Off a terminal, print plain text without rich's padding at line ends.
    buffer = io.StringIO()
    Console(file=buffer, width=PIPE_WIDTH, highlight=False, color_system=None).print(table)
    for text in buffer.getvalue().splitlines():
        print(text.rstrip())
