"""Seconds spent per named phase of a long operation, for --print-stats."""

from __future__ import annotations

import contextlib
import time


class Timer:
    def __init__(self):
        self.phases: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - start
