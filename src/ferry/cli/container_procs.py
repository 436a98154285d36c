"""The verbs that watch or steer a container's processes: port, top, stats,
rename, wait, pause, unpause, and events."""

from __future__ import annotations

# verb -> builder(subparsers), taken at the top level and under `ferry container`
VERBS: dict = {}
# verbs taken at the top level only
TOP_ONLY: dict = {}
