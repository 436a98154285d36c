"""Pure statistics over benchmark samples: summaries, ratios, the CRIU floor
and the issue's targets. No I/O, no clocks: unit-tested in bench/tests.

A sample is a dict: workload, engine, metric, rep, value (seconds or bytes,
None when the step failed), ok, error, extra (free-form details).
"""

from __future__ import annotations

import re

import statistics
from dataclasses import dataclass, field

# ferry's archive variants: zstd (the default), gzip, and --compress none
# (a plain .tar: ferry's own overhead without compression's CPU cost).
FERRY, FERRY_GZIP, FERRY_NONE, PODMAN = "ferry", "ferry-gzip", "ferry-none", "podman"
FERRY_AGE = "ferry-age"   # ferry's zstd archive, encrypted with age to an X25519 recipient
ENGINES = (FERRY, FERRY_GZIP, FERRY_NONE, FERRY_AGE, PODMAN)

# metric -> (label, unit)
METRICS = {
    "checkpoint_archive": ("checkpoint to archive", "s"),
    "restore_archive": ("restore from archive", "s"),
    "archive_size": ("archive size", "B"),
    "gap": ("client gap (ckpt + rm + restore)", "s"),
    "checkpoint_local": ("local checkpoint (CRIU floor)", "s"),
    "restore_local": ("local restore (CRIU floor)", "s"),
    "criu_dump": ("CRIU frozen time (local ckpt)", "s"),
    "criu_dump_leave_running": ("CRIU frozen time (--leave-running export)", "s"),
    # ferry freezes a -R container's cgroup before CRIU and thaws it once its
    # files are archived (ferry_phases' frozen_for_files): the pause its service
    # sees, longer than CRIU's own. podman thaws when CRIU does: no such row.
    "frozen_leave_running": ("ferry: container frozen, freeze to thaw (--leave-running export)", "s"),
    "ps": ("ps with 20 containers", "s"),
    "run_to_answer": ("run -d until the service answers a GET", "s"),
    "rm_running": ("rm -f of the running container", "s"),
    "inspect": ("inspect NAME (1 running busybox)", "s"),
    "logs": ("logs NAME (100 lines)", "s"),
    "images": ("images", "s"),
    "rss_anon_sum_checkpoint": ("ferry peak RssAnon, sum of its processes: checkpoint to archive", "MiB"),
    "rss_anon_sum_restore": ("ferry peak RssAnon, sum of its processes: restore from archive", "MiB"),
}
RSS_METRICS = ("rss_anon_sum_checkpoint", "rss_anon_sum_restore")
RSS_LIMIT_MIB = 150.0
RSS_WORKLOAD = "redis-2g"
# The targets by workload: the small containers against podman...
SMALL_WORKLOADS = ("busybox-httpd", "nginx")
SMALL_LIMIT = 1.0
# ...and the large redis: checkpoint and restore well under podman's.
LARGE_WORKLOADS = ("redis-1g", "redis-2g")
LARGE_CHECKPOINT_LIMIT = 0.3
LARGE_RESTORE_LIMIT = 0.15
GAP_LIMIT = 0.3   # the client gap of redis workloads
COMMAND_METRICS = ("inspect", "logs", "images")
# The archive metric, and the local (no-archive) metric that is its floor.
FLOOR_OF = {"checkpoint_archive": "checkpoint_local", "restore_archive": "restore_local"}
TARGET_WORKLOAD = "redis-1g"
FLOOR_LIMIT = 1.3        # ferry's (zstd) checkpoint to archive against the CRIU floor
NONE_FLOOR_LIMIT = 1.15  # ferry's --compress none export against the CRIU floor
AGE_LIMIT = 1.15         # an encrypted archive's checkpoint and restore against the unencrypted one


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
    none_vs_floor: float | None = None   # ferry-none median / CRIU floor


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
                           ratio(med.get(FERRY_GZIP), med.get(PODMAN)), ratio(med.get(FERRY), fl), fl,
                           ratio(med.get(FERRY_NONE), fl)))
    return out


@dataclass(frozen=True)
class Target:
    what: str
    workload: str
    measured: float | None
    limit: float
    note: str = ""
    unit: str = "x"    # "x": a ratio; else an absolute value in this unit (fmt)

    @property
    def ok(self) -> bool | None:
        return None if self.measured is None else self.measured <= self.limit


def _median(summary: dict, workload: str, metric: str, engine: str) -> float | None:
    s = summary.get(workload, {}).get(metric, {}).get(engine)
    return s.median if s else None


def floor_workload(workloads, at: str = TARGET_WORKLOAD) -> str | None:
    """Where the CRIU-floor targets are measured: `at` (redis 1 GiB) when it
    is among the workloads, else the largest redis among them (a quick run's
    redis 256 MiB), else nowhere. bench.run runs the ferry-none round there."""
    if at in workloads:
        return at
    redis = sorted((w for w in workloads if w.startswith("redis-")), key=_redis_bytes)
    return redis[-1] if redis else None


def targets(summary: dict, at: str = TARGET_WORKLOAD) -> list[Target]:
    """The issue's targets, as ratios measured in the same run (and ferry's
    own memory, in MiB). The large-redis targets are at 1 GiB and 2 GiB; with
    neither present (quick mode) they fall back to the largest redis present."""
    out = []
    vs_podman = lambda m, w: ratio(_median(summary, w, m, FERRY), _median(summary, w, m, PODMAN))   # noqa: E731
    large = [w for w in LARGE_WORKLOADS if w in summary]
    note = ""
    if not large:
        redis = sorted((w for w in summary if w.startswith("redis-")), key=_redis_bytes)
        if redis:
            note = f"measured at {redis[-1]}; the target is at {at}"
            large = [redis[-1]]
    floor_at = floor_workload(summary, at)
    floor_note = f"measured at {floor_at}; the target is at {at}" if floor_at not in (None, at) else ""
    if floor_at is not None:
        out.append(Target(f"checkpoint to archive <= {FLOOR_LIMIT}x CRIU floor", floor_at,
                          ratio(_median(summary, floor_at, "checkpoint_archive", FERRY),
                                floor(summary, floor_at, "checkpoint_archive")), FLOOR_LIMIT, floor_note))
        # Only where the run had the ferry-none round (older results have none).
        if FERRY_NONE in summary[floor_at].get("checkpoint_archive", {}):
            out.append(Target(f"export --compress none <= {NONE_FLOOR_LIMIT}x CRIU floor", floor_at,
                              ratio(_median(summary, floor_at, "checkpoint_archive", FERRY_NONE),
                                    floor(summary, floor_at, "checkpoint_archive")), NONE_FLOOR_LIMIT, floor_note))
        for metric, what in (("checkpoint_archive", "checkpoint"), ("restore_archive", "restore")):
            if FERRY_AGE in summary[floor_at].get(metric, {}):
                out.append(Target(f"age-encrypted {what} <= {AGE_LIMIT}x unencrypted", floor_at,
                                  ratio(_median(summary, floor_at, metric, FERRY_AGE),
                                        _median(summary, floor_at, metric, FERRY)), AGE_LIMIT, floor_note))
    for workload in large:
        out.append(Target(f"checkpoint to archive <= {LARGE_CHECKPOINT_LIMIT}x podman", workload,
                          vs_podman("checkpoint_archive", workload), LARGE_CHECKPOINT_LIMIT, note))
        out.append(Target(f"restore from archive <= {LARGE_RESTORE_LIMIT}x podman", workload,
                          vs_podman("restore_archive", workload), LARGE_RESTORE_LIMIT, note))
    for workload in _ordered(summary):
        metrics = summary[workload]
        if workload in SMALL_WORKLOADS:
            for metric, what in (("checkpoint_archive", "checkpoint to archive"),
                                 ("restore_archive", "restore from archive"), ("gap", "client gap")):
                if metric in metrics:
                    out.append(Target(f"{what} <= podman", workload, vs_podman(metric, workload), SMALL_LIMIT))
        if "archive_size" in metrics:
            out.append(Target("archive size <= podman", workload, vs_podman("archive_size", workload), 1.0))
        if "gap" in metrics and workload not in SMALL_WORKLOADS:
            out.append(Target(f"client gap <= {GAP_LIMIT}x podman", workload, vs_podman("gap", workload), GAP_LIMIT))
        if "criu_dump" in metrics:
            out.append(Target("CRIU frozen time (local checkpoint) <= podman", workload,
                              vs_podman("criu_dump", workload), 1.0))
        if "criu_dump_leave_running" in metrics:
            out.append(Target("CRIU frozen time (--leave-running export) <= podman", workload,
                              vs_podman("criu_dump_leave_running", workload), 1.0))
        if "run_to_answer" in metrics:
            out.append(Target("run -d until the service answers <= podman", workload,
                              vs_podman("run_to_answer", workload), 1.0))
    if "ps-20" in summary:
        out.append(Target("ferry ps (20 containers) <= podman ps", "ps-20", vs_podman("ps", "ps-20"), 1.0))
    for metric in COMMAND_METRICS:
        if metric in summary.get("commands", {}):
            out.append(Target(f"ferry {metric} <= podman {metric}", "commands", vs_podman(metric, "commands"), 1.0))
    rss = [summary.get(RSS_WORKLOAD, {}).get(m, {}).get(FERRY) for m in RSS_METRICS]
    if RSS_WORKLOAD in summary or any(rss):
        peaks = [s.max for s in rss if s is not None and s.max is not None]
        out.append(Target(f"ferry's peak RssAnon (sum of its processes) during checkpoint and restore "
                          f"<= {RSS_LIMIT_MIB:.0f} MiB", RSS_WORKLOAD, max(peaks) if peaks else None, RSS_LIMIT_MIB,
                          "the largest over both commands and all repeats", unit="MiB"))
    return out


def _ordered(summary: dict) -> list[str]:
    order = ("busybox-httpd", "nginx")
    return sorted(summary, key=lambda w: (order.index(w) if w in order else 2,
                                          _redis_bytes(w) if w.startswith("redis-") else 0, w))


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
    if unit == "MiB":
        return f"{value:.1f} MiB"
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
        unit = getattr(t, "unit", "x")
        measured = fmt_ratio(t.measured) if unit == "x" else fmt(t.measured, unit)
        lines.append(f"| {t.what} | {t.workload}{note} | {measured} | {met} |")
    return "\n".join(lines)
