"""Whether a checkpoint taken on another host can restore on this one.

A refusal names the check that failed, so a migration's preflight can say
which one and why before anything is frozen. The CPU check is CRIU's own
(`criu cpuinfo check` against the source's cpuinfo.img): it knows which
features a restored process may have used.
"""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass

from ferry.checkpoint.hostinfo import CPUINFO_IMAGE, HostInfo
from ferry.util import proc
from ferry.util.errors import ToolError


@dataclass(frozen=True)
class Refusal:
    check: str      # arch | cgroup_mode | kernel | criu_version | runc_version | cpu
    reason: str


def _release(text: str) -> tuple[int, ...]:
    """'6.1.0-28-amd64' -> (6, 1, 0); what cannot be read compares lowest."""
    numbers = []
    for part in text.split("-")[0].split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def refusals(source, here: HostInfo, criu: str) -> list[Refusal]:
    """Every reason the checkpoint of `source` (anything with HostInfo's
    fields but cpu) cannot restore on `here`; empty when it can."""
    found = []
    for field in ("arch", "cgroup_mode"):
        theirs, ours = getattr(source, field), getattr(here, field)
        if theirs != ours:
            found.append(Refusal(field, f"the source has {field} {theirs}, this host {ours}"))
    # Older tools or kernels may lack what the dump used: a newer one reads older images.
    for field, what in (("kernel", "kernel"), ("criu_version", "CRIU"), ("runc_version", "runc")):
        theirs, ours = getattr(source, field), getattr(here, field)
        if _release(ours)[:2] < _release(theirs)[:2]:
            found.append(Refusal(field, f"this host's {what} {ours} is older than the source's {theirs}"))
    cpu = _cpu_refusal(source.cpuinfo_image, criu)
    if cpu:
        found.append(cpu)
    return found


def _cpu_refusal(cpuinfo_image: str, criu: str) -> Refusal | None:
    with tempfile.TemporaryDirectory(prefix="ferry-cpuinfo-") as tmp:
        with open(os.path.join(tmp, CPUINFO_IMAGE), "wb") as f:
            f.write(base64.b64decode(cpuinfo_image, validate=True))
        try:
            proc.run([criu, "cpuinfo", "check", "-D", tmp], desc="criu cpuinfo check", timeout=60)
        except ToolError as failure:
            said = failure.output_tail or "criu cpuinfo check failed"
            return Refusal("cpu", f"this host's CPU lacks features the source's has ({said})")
    return None
