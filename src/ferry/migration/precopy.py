"""Pre-copy: when to stop pre-dumping and take the final, frozen dump.

A pre-dump copies memory while the container runs. The first round copies all
of it; each later round copies only the pages written since the round before
(CRIU's soft-dirty tracking). Rounds pay off while that dirty set shrinks: the
final dump freezes the container for whatever is left. `next_step` makes the
call after each round from numbers the caller measured, and does no I/O.

`check_pre_copy_possible` refuses pre-copy on a host whose kernel cannot track
dirty pages, in the words `ferry system check` uses for the same probe.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Sequence

from ferry.host import probes
from ferry.util.errors import Incompatible
from ferry.util.space import size_text

# P.Haul's cap (phaul_iter_max_iters): a workload still shrinking after this
# many rounds shrinks too slowly for another round to be worth its time.
MAX_ROUNDS = 8
# A round that shrinks the dirty set by less than this has converged: the next
# one would cost about as long and leave about as much for the frozen dump.
MIN_SHRINK = 0.10
# Seconds the final dump's memory may take on the link. Linux's minimum TCP
# retransmission timeout is 200 ms (TCP_RTO_MIN), so a client of a container
# frozen for less retransmits at most once. The freeze also pays CRIU's fixed
# dump and restore costs; this budgets the memory part only.
TARGET_DOWNTIME = 0.2


@dataclass(frozen=True)
class Round:
    """One pre-dump round, as measured by the caller."""
    pages: int          # pages this round copied: all memory in round 1, then the dirty set
    bytes: int          # what those pages took on the link
    seconds: float      # the round's length, from its dump to the end of its transfer
    throughput: float   # bytes/s the link was measured to move

    def __post_init__(self) -> None:
        for name in ("pages", "bytes", "seconds", "throughput"):
            value = getattr(self, name)
            if not value >= 0:      # NaN fails this too
                raise ValueError(f"pre-dump round: {name} must be >= 0, not {value!r}")


class Step(str, enum.Enum):
    PRE_DUMP = "pre-dump"        # run another round while the container runs
    FINAL_DUMP = "final-dump"    # freeze the container and dump what is left


@dataclass(frozen=True)
class Decision:
    step: Step
    reason: str         # one line for the user: why this step

    @property
    def final(self) -> bool:
        return self.step is Step.FINAL_DUMP


def next_step(rounds: Sequence[Round]) -> Decision:
    """After the last of `rounds`: another pre-dump, or the final dump."""
    if not rounds:
        return Decision(Step.PRE_DUMP, "no pre-dump has run yet")
    latest, count = rounds[-1], len(rounds)
    previous = rounds[-2] if count > 1 else None
    if latest.pages == 0:
        return _final(f"round {count} found no dirty pages")
    if latest.throughput <= 0:
        return _final(f"round {count} measured no throughput on the link, so another round "
                      f"cannot be shown to help")
    rate = dirty_rate(previous, latest)
    # The final dump carries what is written while the latest round ran. Without
    # a rate (after round 1), all memory, which round 1 copied, bounds it.
    final_bytes = latest.bytes if rate is None else rate * latest.seconds
    downtime = final_bytes / latest.throughput
    if downtime <= TARGET_DOWNTIME:
        return _final(f"the final dump should move about {size_text(int(final_bytes))} in "
                      f"{_ms(downtime)}, within the {_ms(TARGET_DOWNTIME)} target")
    if rate is not None and rate >= latest.throughput:
        return _final(f"pre-copy cannot catch up: the container writes "
                      f"{size_text(int(rate))}/s, and the link moves {size_text(int(latest.throughput))}/s")
    if previous is not None and latest.pages > previous.pages * (1 - MIN_SHRINK):
        return _final(f"the dirty set has converged: {_change(previous.pages, latest.pages)}, "
                      f"less than the {MIN_SHRINK:.0%} another round needs")
    if count >= MAX_ROUNDS:
        return _final(f"{MAX_ROUNDS} pre-dump rounds ran, the most allowed; the final dump "
                      f"should take about {_ms(downtime)}")
    return Decision(Step.PRE_DUMP, f"the final dump would take about {_ms(downtime)}, above the "
                                   f"{_ms(TARGET_DOWNTIME)} target")


def dirty_rate(previous: Round | None, latest: Round) -> float | None:
    """Bytes/s the container writes: the latest round's pages were written while
    the previous round ran. None when there is no previous round, or it took no time."""
    if previous is None or previous.seconds <= 0:
        return None
    return latest.bytes / previous.seconds


def check_pre_copy_possible() -> None:
    """Raise Incompatible when this host cannot pre-dump. The probe runs once
    per process (`probes.cached`), so asking again is free."""
    check = probes.cached("soft_dirty")
    if check.status != probes.OK:
        raise refusal(check)


def refusal(check: probes.Check) -> Incompatible:
    """The error for a failed soft-dirty probe: its key and detail as
    `ferry system check` prints them, and what to migrate with instead."""
    return Incompatible(f"--pre-copy is not possible on this host: {check.key}: {check.detail}",
                        hint="migrate without --pre-copy (stop-and-copy), or with --lazy if "
                             "'ferry system check' shows userfaultfd ok")


def _final(reason: str) -> Decision:
    return Decision(Step.FINAL_DUMP, reason)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _change(before: int, after: int) -> str:
    if after >= before:
        return f"it did not shrink ({before} pages, then {after})"
    return f"it shrank {1 - after / before:.0%} ({before} pages, then {after})"
