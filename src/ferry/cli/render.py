"""Everything ferry prints goes through here: tables, JSON, key/value lists, errors."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, which costs `ferry ps` 4 ms to import
if TYPE_CHECKING:
    from ferry.host.probes import Check

OK, WARNING = "ok", "warning"  # ferry.host.probes' statuses, without importing it

# Off a terminal, rich would wrap at 80 columns; pipes and logs read better whole.
PIPE_WIDTH = 200


def _console():
    from rich.console import Console
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
    print(one_line(f"ferry: error: {message}" + (f" (hint: {hint})" if hint else "")), file=sys.stderr)


def warning(message: str, hint: str | None = None) -> None:
    print(one_line(f"ferry: warning: {message}" + (f" (hint: {hint})" if hint else "")), file=sys.stderr)


def one_line(text: str) -> str:
    """Errors are one line, even when they quote a tool's multi-line output."""
    if "\n" not in text and "\r" not in text:
        return text
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


def table(headers: list[str], rows: Iterable[list[str]]) -> None:
    """A podman-style table: upper-case headers, columns two spaces apart."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


STATUS_STYLE = {OK: "green", WARNING: "yellow"}


def checks_table(checks: Iterable[Check]) -> None:
    from rich.table import Table
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("CHECK", "STATUS", "VALUE", "DETAIL", "WITHOUT IT"):
        table.add_column(column, overflow="fold")
    for check in checks:
        style = STATUS_STYLE.get(check.status, "red" if check.required else "yellow")
        table.add_row(check.key, f"[{style}]{check.status}[/{style}]", check.value, check.detail,
                      "" if check.status == OK else check.impact)
    _print_table(table)


def _print_table(table) -> None:
    if sys.stdout.isatty():
        _console().print(table)
        return
    # Off a terminal, print plain text without rich's padding at line ends.
    from rich.console import Console
    buffer = io.StringIO()
    Console(file=buffer, width=PIPE_WIDTH, highlight=False, color_system=None).print(table)
    for text in buffer.getvalue().splitlines():
        print(text.rstrip())


def template(fmt: str, rows: list, headers: dict[str, str] | None = None, *, heading: bool = True,
             name: str = "format") -> None:
    """podman's --format Go template over `rows` (dicts of the fields it may
    name); a `table` template gets its header line unless `heading` is off.
    As podman, what was rendered before a failing row is printed before the error."""
    from ferry.cli import gotemplate
    from ferry.util.errors import UsageError
    try:
        output = gotemplate.render_rows(fmt, rows, headers or {}, noheading=not heading, name=name)
    except gotemplate.TemplateError as error:
        sys.stdout.write(error.output)
        raise UsageError(str(error).splitlines()[0] if str(error) else "bad template") from None
    sys.stdout.write(output)


DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")
BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def go_size(size: float, digits: int = 4, *, gap: str = "", binary: bool = False) -> str:
    """A size as go-units prints it for podman: `digits` significant digits and
    decimal units ("2.081MB", "12B"), or with `binary` KiB, MiB ("23.54GiB");
    `gap` goes between number and unit ("2.07 MB" in podman's images)."""
    step, units = (1024, BINARY_UNITS) if binary else (1000, DECIMAL_UNITS)
    value = float(size)
    for unit in units:
        if value < step or unit == units[-1]:
            return f"{value:.{digits}g}{gap}{unit}"
        value /= step
    raise AssertionError("unreachable")


def confirmed(warning: str = "") -> bool:
    """podman's [y/N] question on stdout, after `warning`; no answer (stdin closed)
    fails, as podman's "EOF" does, rather than guessing."""
    from ferry.util.errors import UsageError
    sys.stdout.write((f"{warning}\n" if warning else "") + "Are you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if not answer:
        raise UsageError("EOF: no answer to the confirmation on stdin", hint="use -f to skip it")
    return answer.strip().lower() in ("y", "yes")
