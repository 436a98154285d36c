"""Pure logic of the migration benchmark (bench.migration): timelines from
what each kind of migration reports, the issue's targets as ratios of
medians, and the choice of the migration to plot. No I/O, no clocks:
unit-tested in bench/tests.

A sample is bench.stats' form: workload (redis-256m ...), engine (one of
VARIANTS), metric (gap, downtime, total), rep, value, ok, extra. A gap
sample's extra holds `timeline`: [{"phase", "start", "end"}] in seconds from
the moment the migration began, and `client_gap`: [from, to] on that scale.
"""

from __future__ import annotations

from bench import stats
from bench.stats import Target, ratio

STREAMED, LAZY, PODMAN_PATH, BARE = "streamed", "lazy", "podman", "bare"
VARIANTS = (STREAMED, LAZY, PODMAN_PATH, BARE)
LABELS = {
    STREAMED: "ferry migrate (streamed stop-and-copy)",
    LAZY: "ferry migrate --lazy",
    PODMAN_PATH: "podman checkpoint --export, cp, rm, restore --import",
    BARE: "bare runc + CRIU lazy recipe (floor)",
}
STARTUP = "cli start"
METRICS = {"gap": ("client gap", "s"), "downtime": ("downtime as the tool counts it", "s"),
           "total": ("wall time until done", "s")}


def ferry_timeline(phases: dict[str, float], wall: float) -> list[dict]:
    """`ferry migrate --print-stats` phases (seconds, in order, one after the
    other) on the scale of the command's wall time: whatever the phases do
    not account for (the interpreter's start and imports) comes first as
    STARTUP. Phases that add up to more than the wall time start at 0."""
    total = sum(max(0.0, v) for v in phases.values())
    offset = wall - total if wall > total else 0.0
    out = []
    if offset > 0:
        out.append({"phase": STARTUP, "start": 0.0, "end": offset})
    t = offset
    for name, seconds in phases.items():
        seconds = max(0.0, float(seconds))
        out.append({"phase": name, "start": t, "end": t + seconds})
        t += seconds
    return out


def steps_timeline(steps: list[tuple[str, float, float]], t0: float) -> list[dict]:
    """(name, start, end) on the monotonic clock -> seconds from t0."""
    return [{"phase": name, "start": start - t0, "end": end - t0} for name, start, end in steps]


def client_gap(client: dict, t0: float) -> list[float] | None:
    """The client's longest gap as [from, to], in seconds from t0."""
    if client.get("gap_from") is None or client.get("gap_to") is None:
        return None
    return [client["gap_from"] - t0, client["gap_to"] - t0]


def lazy_supported(help_text: str) -> bool:
    """Whether `ferry migrate --help` lists --lazy."""
    return any(word.strip(",[]") == "--lazy" for word in help_text.split())


def size_label(mib: int) -> str:
    return f"redis-{mib // 1024}g" if mib >= 1024 and mib % 1024 == 0 else f"redis-{mib}m"


def parse_sizes(text: str) -> list[int]:
    """'256,1g,2048' -> [256, 1024, 2048] (MiB)."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part.endswith("g"):
            sizes.append(int(float(part[:-1]) * 1024))
        else:
            sizes.append(int(part[:-1] if part.endswith("m") else part))
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError(f"bad sizes {text!r}")
    return sizes


def order(variants: list[str], rep: int) -> list[str]:
    """The variants of one repeat: rotated by the repeat, so that each goes
    first in turn (none always runs on a cold or a warm page cache)."""
    if not variants:
        return []
    k = rep % len(variants)
    return variants[k:] + variants[:k]


def _median(summary: dict, workload: str, engine: str, metric: str = "gap") -> float | None:
    s = summary.get(workload, {}).get(metric, {}).get(engine)
    return s.median if s else None


def _by_size(workloads) -> list[str]:
    return sorted((w for w in workloads if w.startswith("redis-")), key=stats._redis_bytes)


def targets(summary: dict) -> list[Target]:
    """Issue 13's migration targets, each a ratio of medians of one run.
    Sizes that the run lacks fall back (with a note) to what it has."""
    sizes = _by_size(summary)
    out = []
    at, note = "redis-1g", ""
    if at not in summary and sizes:
        at, note = sizes[-1], f"measured at {sizes[-1]}; the target is at redis-1g"
    out.append(Target("streamed stop-and-copy gap <= 0.15x podman export+copy+import", at,
                      ratio(_median(summary, at, STREAMED), _median(summary, at, PODMAN_PATH)), 0.15, note))
    small, large = "redis-256m", "redis-2g"
    note = ""
    if (small not in summary or large not in summary) and len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        note = "the target is redis-2g over redis-256m"
    measured = ratio(_median(summary, large, LAZY), _median(summary, small, LAZY)) if len(sizes) >= 2 else None
    out.append(Target("--lazy gap grows <= 1.5x from 256 MiB to 2 GiB", f"{large} / {small}", measured, 1.5,
                      note or ("needs two sizes" if len(sizes) < 2 else "")))
    for workload in sizes:
        out.append(Target("--lazy gap <= 1.3x the bare runc + CRIU lazy recipe", workload,
                          ratio(_median(summary, workload, LAZY), _median(summary, workload, BARE)), 1.3))
    return out


def typical(samples: list[dict], workload: str, engine: str) -> dict | None:
    """The successful gap sample of (workload, engine) closest to the median
    gap (the lower one of two equally close): the one the timeline shows."""
    good = [s for s in samples if (s["workload"], s["engine"], s["metric"]) == (workload, engine, "gap")
            and s.get("ok", True) and s.get("value") is not None]
    if not good:
        return None
    median = stats.summarise_values([s["value"] for s in good]).median
    return min(good, key=lambda s: (abs(s["value"] - median), s["value"]))


def timeline_workload(samples: list[dict]) -> str | None:
    """redis-1g when the run has it, else its largest redis."""
    sizes = _by_size({s["workload"] for s in samples if s["metric"] == "gap" and s.get("ok", True)})
    if not sizes:
        return None
    return "redis-1g" if "redis-1g" in sizes else sizes[-1]
