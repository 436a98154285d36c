"""Whether a checkpoint taken on another host can restore on this one.

A refusal names the check that failed and what the difference would cause,
so a restore, a migration's preflight and `ferry system compat` say which
one and why before anything is frozen or made. The CPU check is CRIU's own
(`criu cpuinfo check` against the source's cpuinfo.img): it knows which
features a restored process may have used; the features it lacks are named
from both hosts' cpuinfo. Known-harmless differences (a newer kernel, CRIU
or runc here, another hostname, CPU model or microcode) pass.
"""

from __future__ import annotations

import base64
import os
import tempfile
from typing import NamedTuple

from ferry.checkpoint.hostinfo import CPUINFO_IMAGE, HostInfo
from ferry.util import proc
from ferry.util.errors import ToolError


class Refusal(NamedTuple):
    check: str      # arch | cgroup_mode | kernel | criu_version | runc_version | cpu
    reason: str     # what differs
    effect: str = ""    # what the difference would cause

    def __str__(self) -> str:
        return f"{self.reason} ({self.effect})" if self.effect else self.reason


EFFECTS = {
    "arch": "CRIU restores processes only on the architecture they ran on",
    "cgroup_mode": "runc would place the processes in cgroups their images do not describe, and the restore fails",
    "kernel": "the processes may rely on system calls or kernel features this kernel lacks: CRIU may fail, or "
              "a process may crash later",
    "criu_version": "an older CRIU may not read the images a newer one wrote",
    "runc_version": "an older runc may not restore what a newer one checkpointed",
    "cpu": "a process that uses a missing CPU feature dies with SIGILL when it reaches that instruction",
}

# Linux's x86 capability words (arch/x86/include/asm/cpufeatures.h), as CRIU
# stores them: the features a process may use directly, by word and bit.
X86_FEATURES = {
    0: {0: "fpu", 15: "cmov", 23: "mmx", 24: "fxsr", 25: "sse", 26: "sse2"},
    4: {0: "sse3", 1: "pclmulqdq", 9: "ssse3", 12: "fma", 13: "cx16", 19: "sse4_1", 20: "sse4_2", 22: "movbe",
        23: "popcnt", 25: "aes", 26: "xsave", 28: "avx", 29: "f16c", 30: "rdrand"},
    6: {5: "abm", 6: "sse4a", 16: "fma4", 21: "tbm"},
    9: {3: "bmi1", 5: "avx2", 8: "bmi2", 9: "erms", 16: "avx512f", 17: "avx512dq", 18: "rdseed", 19: "adx",
        21: "avx512ifma", 23: "clflushopt", 24: "clwb", 28: "avx512cd", 29: "sha_ni", 30: "avx512bw",
        31: "avx512vl"},
    16: {1: "avx512vbmi", 6: "avx512_vbmi2", 8: "gfni", 9: "vaes", 10: "vpclmulqdq", 11: "avx512_vnni",
         12: "avx512_bitalg", 14: "avx512_vpopcntdq"},
}


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
            found.append(Refusal(field, f"the source has {field} {theirs}, this host {ours}", EFFECTS[field]))
    # Older tools or kernels may lack what the dump used: a newer one reads older images.
    for field, what in (("kernel", "kernel"), ("criu_version", "CRIU"), ("runc_version", "runc")):
        theirs, ours = getattr(source, field), getattr(here, field)
        if _release(ours)[:2] < _release(theirs)[:2]:
            found.append(Refusal(field, f"this host's {what} {ours} is older than the source's {theirs}",
                                 EFFECTS[field]))
    cpu = _cpu_refusal(source.cpuinfo_image, here.cpuinfo_image, criu)
    if cpu:
        found.append(cpu)
    return found


def _cpu_refusal(cpuinfo_image: str, here_image: str, criu: str) -> Refusal | None:
    if cpuinfo_image == here_image:
        return None   # this very CPU record: CRIU's check compares it with itself
    with tempfile.TemporaryDirectory(prefix="ferry-cpuinfo-") as tmp:
        with open(os.path.join(tmp, CPUINFO_IMAGE), "wb") as f:
            f.write(base64.b64decode(cpuinfo_image, validate=True))
        try:
            proc.run([criu, "cpuinfo", "check", "-D", tmp], desc="criu cpuinfo check", timeout=60)
        except ToolError as failure:
            missing = missing_features(cpuinfo_image, here_image)
            said = (failure.output_tail or "criu cpuinfo check failed").strip().splitlines()[-1]
            what = f"the source's CPU has {', '.join(missing)}, which this host's lacks" if missing else \
                "this host's CPU lacks features the source's has"
            return Refusal("cpu", f"{what} (CRIU: {said.split('cpu: ')[-1]})", EFFECTS["cpu"])
    return None


def missing_features(source_image: str, here_image: str, at_most: int = 8) -> list[str]:
    """x86 features the source's cpuinfo has and this host's lacks, by name
    (and a count of the capability bits without one); [] when either does
    not decode."""
    from ferry.checkpoint.hostinfo import decode_cpuinfo
    try:
        theirs, ours = (decode_cpuinfo(base64.b64decode(image, validate=True))["x86_entry"][0]["capability"]
                        for image in (source_image, here_image))
    except Exception:   # noqa: BLE001 - naming features is a courtesy; CRIU's verdict stands
        return []
    named, other = [], 0
    for word, (have, want) in enumerate(zip(ours, theirs)):
        lacking = int(want) & ~int(have)
        for bit in range(32):
            if lacking >> bit & 1:
                name = X86_FEATURES.get(word, {}).get(bit)
                if name:
                    named.append(name)
                else:
                    other += 1
    shown = named[:at_most]
    other += len(named) - len(shown)
    return shown + ([f"{other} other capability bit{'s' if other > 1 else ''}"] if other else [])

FIELDS = (("arch", "architecture"), ("kernel", "kernel"), ("cgroup_mode", "cgroups"),
          ("criu_version", "CRIU"), ("runc_version", "runc"))


def report(source, here: HostInfo, criu: str, refused: list[Refusal] | None = None) -> list[dict]:
    """One row per check, for `ferry system compat`: the checkpoint's value,
    this host's, and the verdict (same | harmless | refused) with its reason."""
    refused = refusals(source, here, criu) if refused is None else refused
    by_check = {r.check: r for r in refused}
    rows = []
    for field, label in FIELDS:
        theirs, ours = getattr(source, field), getattr(here, field)
        refusal = by_check.get(field)
        verdict = "refused" if refusal else "same" if theirs == ours else "harmless"
        rows.append({"check": label, "key": field, "checkpoint": theirs, "host": ours, "verdict": verdict,
                     "detail": str(refusal) if refusal else
                     "" if verdict == "same" else "this host's is newer: it reads what the older one wrote"})
    refusal = by_check.get("cpu")
    rows.append({"check": "CPU", "key": "cpu", "checkpoint": _cpu_model(source.cpuinfo_image),
                 "host": _cpu_model(here.cpuinfo_image), "verdict": "refused" if refusal else "same",
                 "detail": str(refusal) if refusal else "CRIU's cpuinfo check passes"})
    return rows


def _cpu_model(cpuinfo_image: str) -> str:
    from ferry.checkpoint.hostinfo import decode_cpuinfo
    try:
        entry = decode_cpuinfo(base64.b64decode(cpuinfo_image, validate=True))["x86_entry"][0]
        return f"{entry.get('vendor_id', '?')} {entry.get('model_id', '')}".strip()
    except Exception:   # noqa: BLE001 - a name for people; CRIU's check decides
        return "?"
