"""The subprocess chokepoint against real, harmless programs."""

from __future__ import annotations

import pytest

from ferry.util import proc
from ferry.util.errors import NotFound, ToolError


def test_run_captures_output():
    result = proc.run(["sh", "-c", "echo out; echo err >&2"], desc="echo")
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "err\n")


def test_failure_raises_with_tail():
    with pytest.raises(ToolError) as failure:
        proc.run(["sh", "-c", "for i in 1 2 3 4 5 6 7; do echo line$i >&2; done; exit 3"],
                 desc="noisy tool")
    error = failure.value
    assert error.code == 3
    assert str(error) == "noisy tool failed (exit 3): line3 | line4 | line5 | line6 | line7"


def test_unchecked_failure_returns():
    assert proc.run(["false"], desc="false", check=False).returncode == 1


def test_missing_tool_is_not_found():
    with pytest.raises(NotFound) as failure:
        proc.run(["ferry-no-such-tool"], desc="ghost")
    assert "not installed" in str(failure.value) and failure.value.hint


def test_timeout():
    with pytest.raises(ToolError) as failure:
        proc.run(["sleep", "5"], desc="slow tool", timeout=0.2)
    assert failure.value.code is None and "timed out" in str(failure.value)


def test_string_argv_is_refused():
    with pytest.raises(TypeError):
        proc.run("echo hi", desc="shell string")


def test_tool_path_puts_local_sbin_first(monkeypatch):
    monkeypatch.setenv("PATH", "/opt/bin")
    path = proc.tool_env()["PATH"]
    assert path.startswith("/usr/local/sbin:") and path.endswith(":/opt/bin")


def test_a_tool_never_reads_ferrys_stdin():
    """restore --file - reads the archive from stdin: no tool may take bytes of it."""
    import os
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"archive bytes\n")
    saved = os.dup(0)
    try:
        os.dup2(read_fd, 0)
        result = proc.run(["sh", "-c", "cat; echo end"], desc="a reader")
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_fd, write_fd):
            os.close(fd)
    assert result.stdout == "end\n"
    assert proc.run(["cat"], desc="cat", input="given\n").stdout == "given\n"
