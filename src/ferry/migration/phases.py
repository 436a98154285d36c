"""The phases of a stop-and-copy migration, in order, and their timings.

    PREFLIGHT   the destination checks the offer; nothing is frozen yet
    IMAGE       the layers of the image that the destination lacks go over
    STREAM      the source is dumped (and stays stopped, its checkpoint kept
                here), and the archive streams into the destination's restore
    RESTORE     the destination finishes the restore and says it runs
    ---- the point of no return: the destination runs the container ----
    PAGES       lazy only: the source serves the memory until the last page
                has arrived; if it dies now, the destination's copy is lost
    CLEANUP     the source's copy is removed

Before the point of no return, any failure resumes the source from its kept
checkpoint and leaves the destination clean; after it, the source is only
cleaned up, and a failure there is reported, never undone.
"""

from __future__ import annotations

import enum
import time

from ferry.util.timing import Timer


class Phase(str, enum.Enum):
    PREFLIGHT = "preflight"
    IMAGE = "image"
    STREAM = "stream"
    RESTORE = "restore"
    PAGES = "pages"
    CLEANUP = "cleanup"


class Timings(Timer):
    """Seconds per phase, and the downtime: from the freeze on the source to
    the destination's word that the container runs (an upper bound: it
    includes the reply's way back)."""

    def __init__(self):
        super().__init__()
        self.frozen_at: float | None = None
        self.running_at: float | None = None
        self.source: dict = {}       # the source checkpoint's own phases
        self.pages_pushed = 0        # bytes the dump sent to the destination's page server

    def phase(self, phase: Phase):
        return super().phase(phase.value)

    def frozen(self) -> None:
        if self.frozen_at is None:
            self.frozen_at = time.monotonic()

    def running(self) -> None:
        self.running_at = time.monotonic()

    @property
    def downtime(self) -> float | None:
        if self.frozen_at is None or self.running_at is None:
            return None
        return self.running_at - self.frozen_at
