"""What ferry does on SIGINT, SIGTERM and SIGHUP (Ctrl-C, `kill`, a dropped SSH
session): outside a critical step each raises KeyboardInterrupt, so the
command undoes what it started as on any failure; inside one (a dump that has
begun cannot be half-undone) the signal waits until the step is complete."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_deferred_depth = 0
_pending: list[int] = []


def _on_signal(number: int, _frame) -> None:
    if _deferred_depth:
        _pending.append(number)
        return
    raise KeyboardInterrupt(signal.Signals(number).name)


def install() -> None:
    """Make SIGTERM and SIGHUP interrupt like SIGINT (their default would end
    ferry without its cleanup), and let critical steps hold all three."""
    for number in HANDLED:
        signal.signal(number, _on_signal)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends, then act on the
    first one received (KeyboardInterrupt), unless the block raised already."""
    global _deferred_depth
    _deferred_depth += 1
    try:
        yield
    except BaseException:
        _deferred_depth -= 1
        if not _deferred_depth:
            _pending.clear()   # the command is failing already
        raise
    _deferred_depth -= 1
    if not _deferred_depth and _pending:
        number = _pending[0]
        _pending.clear()
        raise KeyboardInterrupt(signal.Signals(number).name)


def pending() -> bool:
    """A signal arrived during the current critical step."""
    return bool(_pending)


def number_of(name: str | int) -> int | None:
    """A signal's number from its number or name ("15", "TERM", "SIGTERM",
    "SIGRTMIN+3"), as podman shows stop signals; None for no signal."""
    if isinstance(name, int):
        return name
    text = str(name).upper().removeprefix("SIG")
    if text.isdigit():
        return int(text)
    for base in ("RTMIN", "RTMAX"):
        if text.startswith(base) and text[len(base):len(base) + 1] in ("+", "-") and text[len(base) + 1:].isdigit():
            offset = int(text[len(base) + 1:])
            return int(getattr(signal, f"SIG{base}")) + (offset if text[len(base)] == "+" else -offset)
    number = getattr(signal, f"SIG{text}", None)
    return int(number) if isinstance(number, signal.Signals) else None

