"""ferry's loggers, and the CLI's logging configuration, applied on first use.

Importing logging costs a command about 7 ms, a sixth of `ferry ps`, and most
commands log nothing. So the CLI only states its configuration here, and
get_logger() hands out a stand-in that loads logging when a record would be
emitted: a debug line of a command run without --debug loads nothing. Modules
get their loggers from get_logger(), not logging.getLogger().
"""

from __future__ import annotations

import sys

_pending: dict | None = None
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def configure(**basic_config) -> None:
    """logging.basicConfig(**basic_config), now if logging is loaded, else when it first is."""
    global _pending
    _pending = basic_config
    if "logging" in sys.modules:  # loaded already, so free: a logger made elsewhere may log next
        _apply()


def get_logger(name: str) -> Logger:
    return Logger(name)


class Logger:
    """logging.getLogger(name), loaded when a record passes the configured level.
    Once logging is loaded (by a record, or by anyone else, such as pytest's
    caplog), the real logger decides everything."""

    def __init__(self, name: str):
        self.name = name

    def _real(self, level: int):
        if "logging" not in sys.modules and _pending is not None:
            configured = _pending.get("level", "WARNING")
            if level < (configured if isinstance(configured, int) else _LEVELS.get(configured, 30)):
                return None   # the configured level drops it: logging need not load
        _apply()
        import logging
        return logging.getLogger(self.name)

    def log(self, level: int, message, *args, **kwargs) -> None:
        real = self._real(level)
        if real is not None:
            kwargs.setdefault("stacklevel", 3)   # the record names the caller of debug() and the rest
            real.log(level, message, *args, **kwargs)

    def debug(self, message, *args, **kwargs) -> None:
        self.log(10, message, *args, **kwargs)

    def info(self, message, *args, **kwargs) -> None:
        self.log(20, message, *args, **kwargs)

    def warning(self, message, *args, **kwargs) -> None:
        self.log(30, message, *args, **kwargs)

    def error(self, message, *args, **kwargs) -> None:
        self.log(40, message, *args, **kwargs)

    def exception(self, message, *args, exc_info=True, **kwargs) -> None:
        self.log(40, message, *args, exc_info=exc_info, **kwargs)


def _apply() -> None:
    global _pending
    if _pending is not None:
        import logging
        logging.basicConfig(**_pending)
        _pending = None
