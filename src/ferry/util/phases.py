"""Named points in long operations, where the tests of interruptions stop a
command exactly (issue 10's kill matrix): with FERRY_TEST_PHASE=NAME in its
environment, a command that reaches NAME writes its pid to the file named by
FERRY_TEST_PHASE_FILE and waits there to be signalled, or for the file to be
removed (60 s at most; a signal held by a critical step ends the wait too).
Without the variable, reached() costs one dictionary lookup."""

from __future__ import annotations

import os
import time

from ferry.util import signals

WAIT = 60.0


def reached(name: str) -> None:
    if os.environ.get("FERRY_TEST_PHASE") != name:
        return
    path = os.environ.get("FERRY_TEST_PHASE_FILE")
    if path:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + WAIT
    # A held signal ends the wait, and so does the test removing the file.
    while time.monotonic() < deadline and not signals.pending() and (not path or os.path.exists(path)):
        time.sleep(0.05)
