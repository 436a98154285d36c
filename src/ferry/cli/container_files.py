"""The verbs that reach a container's files: cp, diff, export, commit."""

from __future__ import annotations

# verb -> builder(subparsers), taken at the top level and under `ferry container`
VERBS: dict = {}
