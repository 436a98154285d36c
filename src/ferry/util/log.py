"""ferry's loggers, and the CLI's logging configuration, applied on first use.

Importing logging costs a command about 7 ms, a sixth of `ferry ps`, and most
commands log nothing. So the CLI only states its configuration here, and it is
applied when a ferry module first asks for a logger, which is before that module
can log. Modules get their loggers from get_logger(), not logging.getLogger().
"""

from __future__ import annotations

import sys

_pending: dict | None = None


def configure(**basic_config) -> None:
    """logging.basicConfig(**basic_config), now if logging is loaded, else at the first get_logger()."""
    global _pending
    _pending = basic_config
    if "logging" in sys.modules:  # loaded already, so free: a logger made elsewhere may log next
        _apply()


def get_logger(name: str):
    """logging.getLogger(name), with the configuration applied first."""
    _apply()
    import logging
    return logging.getLogger(name)


def _apply() -> None:
    global _pending
    if _pending is not None:
        import logging
        logging.basicConfig(**_pending)
        _pending = None
