"""Progress of a long read, write or download: callers pass progress(phase,
done, total), with total -1 when unknown; a Reporter calls it at most every
PROGRESS_INTERVAL, and at the end."""

from __future__ import annotations

import time
from typing import Callable

Progress = Callable[[str, int, int], None]
PROGRESS_INTERVAL = 0.1    # seconds between progress calls


class Reporter:
    """Calls progress(phase, done, total) at most every PROGRESS_INTERVAL, and at the end."""

    def __init__(self, progress: Progress | None, phase: str, total: int):
        self._progress = progress
        self.phase = phase
        self.total = total
        self.done = 0
        self._last = 0.0
        if progress:
            progress(phase, 0, total)
            self._last = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        if self._progress and time.monotonic() - self._last >= PROGRESS_INTERVAL:
            self._progress(self.phase, self.done, self.total)
            self._last = time.monotonic()

    def finish(self) -> None:
        if self._progress:
            self._progress(self.phase, self.done, self.total)
