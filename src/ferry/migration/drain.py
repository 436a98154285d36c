"""Draining a host: `ferry migrate --all` moves every running container, each
by a `ferry migrate NAME` of its own.

Each migration is a whole command, in a session of its own: it has its own
point of no return, its own recovery, and it ends as one (moved, or running
here again) whatever becomes of this one. So a drain interrupted by a signal
starts no new migration, lets those under way end, and reports; one killed
outright leaves each of its migrations to end on its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

POLL = 0.05


@dataclass(frozen=True)
class Outcome:
    name: str
    ok: bool
    detail: str              # where it went and its downtime, or the error
    stats: dict | None = None


def plan(containers: Sequence, runc) -> list[tuple]:
    """The running containers with their memory in bytes, in the order they
    move: smallest memory first, so the most containers are off the host soonest."""
    from ferry.engine.listing import RUNNING
    sized = [(c, runc.memory_in_use(c.id) or 0) for c in containers if c.state == RUNNING]
    return sorted(sized, key=lambda pair: (pair[1], pair[0].name))


def drain(names: Sequence[str], argv_for: Callable[[str], list[str]], *, parallel: int, keep_going: bool,
          report: Callable[[Outcome], None]) -> list[Outcome]:
    """Run argv_for(name) for each name, `parallel` at a time; after the first
    failure start no more unless keep_going; after a signal start no more, and
    wait for those under way (raises KeyboardInterrupt once they have ended)."""
    waiting = list(names)
    running: dict[str, subprocess.Popen] = {}
    outcomes: list[Outcome] = []
    interrupted = None
    while waiting or running:
        try:
            stop = interrupted or (not keep_going and any(not o.ok for o in outcomes))
            while waiting and len(running) < parallel and not stop:
                name = waiting.pop(0)
                running[name] = subprocess.Popen(argv_for(name), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
            if stop and not running:
                break
            for name, child in list(running.items()):
                if child.poll() is not None:
                    del running[name]
                    outcome = _outcome(name, child)
                    outcomes.append(outcome)
                    report(outcome)
            time.sleep(POLL)
        except KeyboardInterrupt as signal_name:
            interrupted = interrupted or str(signal_name) or "SIGINT"
    if interrupted:
        raise KeyboardInterrupt(interrupted)
    return outcomes


def _outcome(name: str, child: subprocess.Popen) -> Outcome:
    out, err = child.communicate()
    if child.returncode == 0:
        try:
            stats = json.loads(out)
        except ValueError:
            stats = None
        if stats:
            downtime = stats.get("downtime")
            shown = f"{downtime:.2f} s" if isinstance(downtime, (int, float)) else "unknown"
            return Outcome(name, True, f"migrated to {stats.get('Destination')}: downtime {shown}", stats)
        return Outcome(name, True, "migrated")
    lines = [line for line in err.strip().splitlines() if line.strip()]
    detail = lines[-1].removeprefix("ferry: error: ") if lines else f"exited {child.returncode}"
    return Outcome(name, False, detail)


def migrate_argv(root: str, name: str, forwarded: list[str]) -> list[str]:
    """One container's `ferry migrate`, with the drain's own flags forwarded and JSON out."""
    return [sys.executable, "-m", "ferry", "--root", root, "migrate", name, *forwarded, "--format", "json"]
