"""Pure statistics over benchmark samples: summaries, ratios, the CRIU floor
and the issue's targets. No I/O, no clocks: unit-tested in bench/tests.

A sample is a dict: workload, engine, metric, rep, value (seconds or bytes,
None when the step failed), ok, error, extra (free-form details).
"""

from __future__ import annotations

import re

import statistics
from dataclasses import dataclass, field

FERRY, FERRY_GZIP, PODMAN = "ferry", "ferry-gzip", "podman"
ENGINES = (FERRY, FERRY_GZIP, PODMAN)

# metric -> (label, unit)
METRICS = {
    "checkpoint_archive": ("checkpoint to archive", "s"),
    "restore_archive": ("restore from archive", "s"),
    "archive_size": ("archive size", "B"),
    "gap": ("client gap (ckpt + rm + restore)", "s"),
    "checkpoint_local": ("local checkpoint (CRIU floor)", "s"),
    "restore_local": ("local restore (CRIU floor)", "s"),
    "criu_dump": ("CRIU frozen time (local ckpt)", "s"),
    "ps": ("ps with 20 containers", "s"),
}
# The archive metric, and the local (no-archive) metric that is its floor.
FLOOR_OF = {"checkpoint_archive": "checkpoint_local", "restore_archive": "restore_local"}
TARGET_WORKLOAD = "redis-1g"


@dataclass(frozen=True)
class Summary:
    n: int
    median: float | None
    min: float | None
    max: float | None
    failures: int
    values: tuple[float, ...] = field(default=(), repr=False)


def summarise_values(values: list[float | None]) -> Summary:
    good = sorted(v for v in values if v is not None)
    failures = len(values) - len(good)
    if not good:
        return Summary(0, None, None, None, failures, ())
    return Summary(len(good), statistics.median(good), good[0], good[-1], failures, tuple(good))


def group(samples: list[dict]) -> dict[str, dict[str, dict[str, list]]]:
    """workload -> metric -> engine -> [value or None], in sample order."""
    out: dict = {}
    for s in samples:
        value = s.get("value") if s.get("ok", True) else None
        out.setdefault(s["workload"], {}).setdefault(s["metric"], {}).setdefault(s["engine"], []).append(value)
    return out


def summarise(samples: list[dict]) -> dict[str, dict[str, dict[str, Summary]]]:
    return {w: {m: {e: summarise_values(v) for e, v in engines.items()} for m, engines in metrics.items()}
            for w, metrics in group(samples).items()}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def floor(summary: dict, workload: str, metric: str) -> float | None:
    """The CRIU floor of an archive metric: the fastest engine's median local
    checkpoint (or restore) of the same workload, no archive involved."""
    local = FLOOR_OF.get(metric)
    if local is None:
        return None
    medians = [s.median for s in summary.get(workload, {}).get(local, {}).values() if s.median is not None]
    return min(medians) if medians else None


@dataclass(frozen=True)
class Row:
    workload: str
    metric: str
    engines: dict           # engine -> Summary
    vs_podman: float | None        # ferry median / podman median
    gzip_vs_podman: float | None   # ferry-gzip median / podman median
    vs_floor: float | None         # ferry median / CRIU floor
    floor: float | None


def rows(summary: dict, metrics=tuple(METRICS)) -> list[Row]:
    out = []
    for workload, by_metric in summary.items():
        for metric in metrics:
            engines = by_metric.get(metric)
            if not engines:
                continue
            med = {e: s.median for e, s in engines.items()}
            fl = floor(summary, workload, metric)
            out.append(Row(workload, metric, engines, ratio(med.get(FERRY), med.get(PODMAN)),
                           ratio(med.get(FERRY_GZIP), med.get(PODMAN)), ratio(med.get(FERRY), fl), fl))
    return out


@dataclass(frozen=True)
class Target:
    what: str
    workload: str
    measured: float | None
    limit: float
    note: str = ""

    @property
    def ok(self) -> bool | None:
        return None if self.measured is None else self.measured <= self.limit


def _median(summary: dict, workload: str, metric: str, engine: str) -> float | None:
    s = summary.get(workload, {}).get(metric, {}).get(engine)
    return s.median if s else None


def targets(summary: dict, at: str = TARGET_WORKLOAD) -> list[Target]:
    """The issue's targets, as ratios measured in the same run. The 1 GiB
    targets fall back to the largest redis present (quick mode: 256 MiB)."""
    note = ""
    if at not in summary:
        redis = sorted((w for w in summary if w.startswith("redis-")), key=_redis_bytes)
        if redis:
            note = f"measured at {redis[-1]}; the target is at {at}"
            at = redis[-1]
    out = []
    med = lambda m, e, w=at: _median(summary, w, m, e)   # noqa: E731
    out.append(Target("checkpoint to archive <= 0.4x podman", at,
                      ratio(med("checkpoint_archive", FERRY), med("checkpoint_archive", PODMAN)), 0.4, note))
    out.append(Target("checkpoint to archive <= 1.3x CRIU floor", at,
                      ratio(med("checkpoint_archive", FERRY), floor(summary, at, "checkpoint_archive")), 1.3, note))
    out.append(Target("restore from archive <= 0.2x podman", at,
                      ratio(med("restore_archive", FERRY), med("restore_archive", PODMAN)), 0.2, note))
    for workload in summary:
        if workload == "ps-20":
            continue
        if "archive_size" in summary[workload]:
            out.append(Target("archive size <= podman", workload,
                              ratio(med("archive_size", FERRY, workload), med("archive_size", PODMAN, workload)), 1.0))
        if "gap" in summary[workload]:
            out.append(Target("client gap <= 0.3x podman", workload,
                              ratio(med("gap", FERRY, workload), med("gap", PODMAN, workload)), 0.3))
    if "ps-20" in summary:
        out.append(Target("ferry ps (20 containers) <= podman ps", "ps-20",
                          ratio(med("ps", FERRY, "ps-20"), med("ps", PODMAN, "ps-20")), 1.0))
    return out


def _redis_bytes(name: str) -> float:
    label = name.split("-", 1)[1]
    number = float(label[:-1])
    return number * (1 << 30 if label.endswith("g") else 1 << 20)


def phase_medians(samples: list[dict], workload: str, metric: str, engine: str = FERRY) -> dict[str, float]:
    """Median seconds per ferry phase (from --print-stats' ferry_phases, in µs)."""
    per_phase: dict[str, list[float]] = {}
    for s in samples:
        if (s["workload"], s["metric"], s["engine"]) != (workload, metric, engine) or not s.get("ok", True):
            continue
        for phase, micros in (s.get("extra", {}).get("phases") or {}).items():
            per_phase.setdefault(phase, []).append(micros / 1e6)
    return {phase: statistics.median(v) for phase, v in per_phase.items()}


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "B":
        return human_bytes(value)
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def failure_reason(error: str, limit: int = 220) -> str:
    """The most telling line of a failure: CRIU's own error, a ferry/podman
    error line, else the first line (CRIU's harmless rlimit line is skipped)."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    for pattern in (r"Error \(criu/(?!util\.c)", r"^(ferry: error|Error:)"):
        for line in lines:
            if re.search(pattern, line):
                text = re.sub(r"^\(\d+\.\d+\) ", "", line)
                return text[:limit]
    return lines[0][:limit] if lines else "?"


def targets_table(targets) -> str:
    """The Markdown table of targets (stats.targets or migstats.targets): what, where, measured, met."""
    lines = ["| target | workload | measured | met |", "|---|---|---|---|"]
    for t in targets:
        met = "n/a" if t.ok is None else ("yes" if t.ok else "**no**")
        note = f" ({t.note})" if t.note else ""
        lines.append(f"| {t.what} | {t.workload}{note} | {fmt_ratio(t.measured)} | {met} |")
    return "\n".join(lines)
