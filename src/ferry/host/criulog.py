"""Reading CRIU's output and logs: the lines that explain what happened."""

from __future__ import annotations

import re

# Lines CRIU prints on every run on this kind of host; they explain nothing
# (HOST-NOTES: the RLIMIT_NOFILE one is harmless without CAP_SYS_RESOURCE).
CRIU_NOISE = ("Can't keep kdat cache", "Can't setup RLIMIT_NOFILE for self")
_CRIU_PREFIX = re.compile(r"^\s*(\(\s*[\d.]+\)\s*)?(Warn|Error|Info)?\s*(\([^)]*\))?:?\s*")


def criu_messages(lines) -> list[str]:
    """CRIU's lines without timestamps, "Error (file.c:12):" prefixes and known noise."""
    kept = []
    for line in lines:
        if not line.strip() or any(noise in line for noise in CRIU_NOISE):
            continue
        kept.append(_CRIU_PREFIX.sub("", line, count=1).strip())
    return [line for line in kept if line]


def criu_said(text: str) -> str:
    """CRIU's last meaningful message in some output."""
    messages = criu_messages(text.splitlines())
    return messages[-1] if messages else "no output"


# Markers CRIU puts on the lines that explain a failure.
LOG_ERROR_MARKERS = ("Error (", "Error:", "FAILED", "In-flight connection", "bad size")
QUOTED_LOG_LINES = 3


def quote_log(log_path: str, markers: tuple[str, ...] = LOG_ERROR_MARKERS,
              lines: int = QUOTED_LOG_LINES) -> str:
    """The last lines of a CRIU log that explain a failure, joined for one line."""
    try:
        with open(log_path, errors="replace") as f:
            text = f.read().splitlines()
    except OSError:
        return ""
    hits = criu_messages(line for line in text if any(m in line for m in markers))
    return " | ".join(hits[-lines:])
