"""System-level facade calls: the host preflight."""

from __future__ import annotations

from typing import NamedTuple

from ferry.host import probes
from ferry.host.probes import Check


class SystemReport(NamedTuple):
    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        """True when checkpoint/restore can work on this host."""
        return not self.blocking

    @property
    def blocking(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.blocking)

    def to_dict(self) -> dict:
        return {"ready": self.ready,
                "checks": {c.key: {k: v for k, v in c.to_dict().items() if k != "key"}
                           for c in self.checks}}


def system_check() -> SystemReport:
    return SystemReport(tuple(probes.run_all()))
