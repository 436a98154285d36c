"""ferry.util.log: the CLI's logging configuration reaches every ferry logger,
though logging itself loads only when a module asks for a logger."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          check=True)


def test_configuration_waits_for_the_first_logger_and_then_applies():
    result = run_python("""
        import sys
        from ferry.util import log
        log.configure(level="WARNING", format="ferry: %(name)s: %(message)s", stream=sys.stderr)
        print("logging" in sys.modules)
        proc_log = log.get_logger("ferry.x")
        proc_log.info("not shown")
        proc_log.warning("shown")
    """)
    assert result.stdout == "False\n"
    assert result.stderr == "ferry: ferry.x: shown\n"


def test_configuration_applies_at_once_when_logging_is_loaded():
    result = run_python("""
        import logging, sys
        from ferry.util import log
        log.configure(level="DEBUG", format="ferry: %(name)s: %(message)s", stream=sys.stderr)
        logging.getLogger("httpx").debug("a library's record")
    """)
    assert result.stderr == "ferry: httpx: a library's record\n"
