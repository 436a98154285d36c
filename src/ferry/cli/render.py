"""Everything ferry prints goes through here: tables, JSON, key/value lists, errors."""

from __future__ import annotations

import json
import sys
from typing import Iterable

from rich.console import Console
from rich.table import Table

from ferry.host.probes import OK, WARNING, Check

# Off a terminal, rich would wrap at 80 columns; pipes and logs read better whole.
PIPE_WIDTH = 200


def _console(stream=None) -> Console:
    stream = stream or sys.stdout
    return Console(file=stream, width=None if stream.isatty() else PIPE_WIDTH,
                   highlight=False, soft_wrap=not stream.isatty())


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


STATUS_STYLE = {OK: "green", WARNING: "yellow"}


def checks_table(checks: Iterable[Check]) -> None:
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("CHECK", "STATUS", "VALUE", "DETAIL", "WITHOUT IT"):
        table.add_column(column, overflow="fold")
    for check in checks:
        style = STATUS_STYLE.get(check.status, "red" if check.required else "yellow")
        table.add_row(check.key, f"[{style}]{check.status}[/{style}]", check.value, check.detail,
                      "" if check.status == OK else check.impact)
    _console().print(table)
