"""The Undo stack: every step runs, newest first, and a step that fails leaves a trace."""

from __future__ import annotations

import errno
import logging
import os

import pytest

from ferry.engine.containers import Undo


def unmount(target: str) -> None:
    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), target)


def test_steps_run_newest_first_and_a_failure_stops_none(caplog):
    ran = []
    undo = Undo()
    undo.push(ran.append, "record")
    undo.push(unmount, "/root/containers/c1/rootfs")
    undo.push(ran.append, "lease")
    with caplog.at_level(logging.WARNING, logger="ferry"):
        undo.run()
    assert ran == ["lease", "record"]
    assert undo.steps == []


def test_each_failing_step_is_logged_with_its_function_and_error(caplog):
    undo = Undo()
    undo.push(unmount, "/root/containers/c1/rootfs")
    undo.push(lambda: None)
    with caplog.at_level(logging.WARNING, logger="ferry"):
        undo.run()
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.name.startswith("ferry.")
    assert record.getMessage() == ("undo step unmount('/root/containers/c1/rootfs') failed: "
                                   "[Errno 16] Device or resource busy: '/root/containers/c1/rootfs'")


def test_an_interrupt_is_not_swallowed():
    def interrupted():
        raise KeyboardInterrupt
    undo = Undo()
    undo.push(interrupted)
    with pytest.raises(KeyboardInterrupt):
        undo.run()
