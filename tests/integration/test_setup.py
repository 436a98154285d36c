"""`make setup` is idempotent: a second run on a set-up machine changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_second_setup_rebuilds_nothing():
    criu_path = Path("/var/cache/ferry/criu/criu-path").read_text().strip()
    venv_python = Path(sys.executable)
    before = (os.stat(criu_path).st_mtime_ns, os.stat(venv_python.parent).st_mtime_ns)
    done = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    for word in ("installing", "building", "creating virtualenv", "fetching"):
        assert word not in said, said
    assert (os.stat(criu_path).st_mtime_ns, os.stat(venv_python.parent).st_mtime_ns) == before
    assert "setup: ready:" in done.stdout
