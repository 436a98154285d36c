"""Render docs/benchmarks.md and its plots from bench/results/*.json.

    python -m bench.report [RESULTS.json ...]

With no arguments: the newest full run, the newest quick run and the newest
profile in bench/results. Rendering (markdown) is pure and unit-tested; the
plot needs matplotlib (Agg backend).
"""

from __future__ import annotations

import glob
import json
import os
import sys

from bench import stats
from bench.stats import (FERRY, FERRY_AGE, FERRY_GZIP, FERRY_NONE, METRICS, PODMAN,  # noqa: F401 (used here and by name)
                         failure_reason)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
DOC = os.path.join(REPO, "docs", "benchmarks.md")
CHECKPOINT_PHASES = ("runc_checkpoint", "stop", "config", "rootfs_diff", "volumes", "archive_write")
RESTORE_PHASES = ("archive_read", "files", "runc_restore")
WORKLOAD_ORDER = ("busybox-httpd", "nginx", "redis-256m", "redis-1g", "redis-2g", "ps-20", "commands")
# The metrics the plot's panels show: a workload without any (ps-20, commands) gets no place on its axis.
PLOT_METRICS = ("checkpoint_archive", "restore_archive", "gap", "archive_size")

METHOD = """\
## How to run

```
make bench-quick   # redis 256 MiB only, 3 repeats, ps with 20 containers: under 3 minutes
make bench         # busybox httpd, nginx, redis 256 MiB / 1 GiB / 2 GiB (tens of minutes),
                   # then the migration benchmarks (make bench-migration)
make bench-migration-quick   # the four kinds of migration, redis 256 MiB, 1 repeat: about a minute
.venv/bin/python -m bench.run --workloads redis-1g --repeats 3   # any subset
.venv/bin/python -m bench.report                                  # re-render this page
.venv/bin/python -m bench.profile                                 # py-spy over ferry at 1 GiB
```

All targets install what they need (podman from Debian, matplotlib into the venv), need root,
and leave nothing behind: every container, state root, agent, podman store, mount namespace, the
bare recipe's netns, bridge and cgroups (all named `bm*`), and the `cni-podman0` bridge /
`CNI-*` iptables chains that podman's CNI created are removed at the end.

## Method

- **Same root filesystem.** busybox httpd is the test suite's busybox OCI archive, loaded into
  both engines. nginx and redis are built by `ferry image build-debian` (debootstrap, cached as
  one tar); podman loads an OCI archive whose one layer is that very tar and whose config is
  ferry's image config. The run checks that both engines report the same layer digest.
  nginx runs `access_log off; keepalive_requests 1e9` (set by `sed` at start, in both engines)
  so that the client's one connection is never closed by the server. redis runs with
  `--save "" --appendonly no` and is filled with `DEBUG POPULATE N key` (its own small
  `value:N` strings, so memory is mostly redis' dict entries and objects) until `INFO memory`
  reports `used_memory` at least at the size in the workload's name (a dict rehash can
  overshoot by up to 10%).
- **podman** is Debian's 4.3.1, run as `podman --runtime runc --cgroup-manager cgroupfs
  --storage-driver overlay` with `--ulimit nofile=1024:1024 --ulimit nproc=1000:1000`, its own
  `--root/--runroot/--tmpdir/--network-config-dir`, inside a private mount namespace whose
  `/var/lib` is an overlay onto a temp dir (so CNI leases and the image cache never touch the
  machine). runc and both engines use the same CRIU (`/usr/local/sbin/criu`, first in PATH).
- **ferry** is this checkout, from its venv, with its own `--root`.
- **Each repeat alternates the engines** (ferry first on even repeats, podman first on odd),
  on one long-lived container per engine that every round checkpoints and brings back:
  - *archive round*: `checkpoint --export X` (ferry `.tar.zst`; *ferry-gzip* is ferry writing
    `.tar.gz`; podman writes zstd whatever the name), `rm`, `restore --import X --name N`;
    wall time of each CLI call, and the archive's size. *ferry-none* is ferry writing a plain
    `.tar` (`--compress none`), which leaves out compression's CPU cost (two cores cannot hide
    it): it runs only where the CRIU-floor targets are measured (redis 1 GiB, else the largest
    redis in the run), as does *ferry-age*: ferry's `.tar.zst` encrypted with age to an X25519
    recipient (`--encrypt-to`, restored with `--decrypt-key`), to measure encryption's cost
    against the unencrypted round;
  - *local round* (the CRIU floor): `container checkpoint NAME` and `container restore NAME`
    without an archive; CRIU's own frozen time comes from `--print-stats`. The floor of a
    workload is the faster engine's median local checkpoint (or restore). For redis, the
    frozen-time row also holds the *frozen rounds* that follow the repeats: local
    `checkpoint --leave-running` of each engine in turn (4 each by default), because the page
    cache's write speed, most of a large dump's frozen time, swings 3-4x from one dump to the
    next on this VM whichever engine dumps;
  - *leave-running round*: `container checkpoint --leave-running --export X` of the running
    container (ferry `.tar.zst`, podman zstd); CRIU's frozen time from `--print-stats`, then the
    archive is deleted and the container, which never stopped, must still answer. ferry freezes
    the container's cgroup from CRIU's pre-dump hook and thaws it only once its files are
    staged (so that they are the files the dump saw); that whole pause, its `frozen_for_files`
    phase, is the row *ferry: container frozen*. podman's container runs again when CRIU's dump
    ends;
  - *gap round*: a client on ONE connection (redis `GET`, nginx HTTP/1.1 keep-alive; busybox
    httpd has no keep-alive, so a new connection per request) sends a request every
    millisecond across `checkpoint --export --tcp-established`, `rm` and
    `restore --import --tcp-established`; the gap is the longest time between two replies. podman
    refuses `--name` with `--tcp-established`, so it restores under the checkpointed name. The
    client is a stock Linux TCP client, so the gap also contains the wait for its next
    retransmission (RTO back-off) after the restore.
- **ps**: `ps` with 20 running busybox containers in each engine; each sample is a fresh
  process, timed by a helper that runs inside the engine's mount namespace.
- **inspect, logs, images** (workload `commands`): each command against one running busybox
  container that has written 100 log lines, timed as `ps` is (a warm-up, then 5 runs per round,
  engines alternating).
- **run -d until the service answers** (busybox httpd, and nginx when its image is in the run):
  the helper starts `run -d --name N --ip IP ...` (a fixed address per engine, so that no timed
  `inspect` is needed to find it) and, once the command has exited, sends `GET /` to IP:port every
  3 ms until one answers 200; the sample ends at that answer. The host's neighbour entry for the
  address is flushed before each sample (not timed), as for a fresh address. Then **`rm -f` of the
  running container** is timed on its own (podman gets `-t 0`, as ferry's `rm -f` kills at once;
  without it podman waits 10 s for a PID 1 that ignores SIGTERM). One untimed warm-up sample each.
- **ferry's peak RssAnon** (redis 2 GiB, `bench/rss.py`): during ferry's (zstd) checkpoint to
  archive and restore from archive, a thread reads `/proc/PID/status` every 10 ms and sums
  `RssAnon` over the ferry CLI and the ferry Python processes it starts (its container monitor,
  the monitor's exit command; not runc, CRIU, the container or podman). The row is the largest
  sum seen; each process's own largest value is kept in the sample's details. RssAnon leaves out
  file-backed and shmem pages, such as the CRIU page images ferry maps from its tmpfs. A forked
  child that has not exec'd yet (same command line as its living parent) is skipped, as it shares
  its parent's pages. The sampling thread costs about 5% of one core during those two ferry
  commands (its CPU time is kept with each sample), and their wall-time samples are marked
  `rss_sampled`.
- Medians and minimums over the repeats; ratios divide medians. The numbers are wall times on a
  shared 2-core VM, so they are noisy; compare ratios from the same run.
"""


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def newest(pattern: str, exclude: str | None = None) -> str | None:
    """The results file matching pattern whose run is the newest, by the date it
    records: a clone gives every file the same mtime."""
    paths = [p for p in glob.glob(os.path.join(RESULTS, pattern)) if not (exclude and exclude in os.path.basename(p))]
    return max(paths, key=_run_date) if paths else None


def _run_date(path: str) -> str:
    try:
        return str(load(path).get("date", ""))
    except (OSError, ValueError):
        return ""


def _order(workloads) -> list[str]:
    return sorted(workloads, key=lambda w: (WORKLOAD_ORDER.index(w) if w in WORKLOAD_ORDER else 99, w))


def _cell(summary: stats.Summary | None, unit: str, what: str = "median") -> str:
    if summary is None:
        return "-"
    text = stats.fmt(getattr(summary, what), unit)
    if what == "median" and summary.failures:
        text += f" ({summary.failures} failed)"
    return text


def results_table(summary: dict) -> str:
    lines = ["| workload | measurement | ferry median | ferry min | ferry-gzip median | ferry-none median | "
             "ferry-age median | podman median | podman min | ferry/podman | ferry/CRIU floor |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    by_workload: dict[str, list[stats.Row]] = {}
    for row in stats.rows(summary):
        by_workload.setdefault(row.workload, []).append(row)
    for workload in _order(by_workload):
        for row in by_workload[workload]:
            label, unit = METRICS[row.metric]
            e = row.engines
            vs_floor = stats.fmt_ratio(row.vs_floor)
            if row.floor is not None:
                none = f"ferry-none {stats.fmt_ratio(row.none_vs_floor)}; " if row.none_vs_floor is not None else ""
                vs_floor += f" ({none}floor {stats.fmt(row.floor, unit)})"
            lines.append(f"| {workload} | {label} | {_cell(e.get(FERRY), unit)} | {_cell(e.get(FERRY), unit, 'min')} "
                         f"| {_cell(e.get(FERRY_GZIP), unit)} | {_cell(e.get(FERRY_NONE), unit)} "
                         f"| {_cell(e.get(FERRY_AGE), unit)} "
                         f"| {_cell(e.get(PODMAN), unit)} "
                         f"| {_cell(e.get(PODMAN), unit, 'min')} | {stats.fmt_ratio(row.vs_podman)} | "
                         f"{vs_floor if row.metric in stats.FLOOR_OF else '-'} |")
    return "\n".join(lines)


def phases_table(samples: list[dict], summary: dict) -> str:
    head = [f"ckpt: {p}" for p in CHECKPOINT_PHASES] + [f"restore: {p}" for p in RESTORE_PHASES]
    lines = ["| workload | archive | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
    for workload in _order(summary):
        for engine, fmt in ((FERRY, "zstd"), (FERRY_GZIP, "gzip"), (FERRY_NONE, "none"), (FERRY_AGE, "zstd + age")):
            ck = stats.phase_medians(samples, workload, "checkpoint_archive", engine)
            rs = stats.phase_medians(samples, workload, "restore_archive", engine)
            if not ck and not rs:
                continue
            cells = [stats.fmt(ck.get(p), "s") for p in CHECKPOINT_PHASES] + \
                    [stats.fmt(rs.get(p), "s") for p in RESTORE_PHASES]
            lines.append(f"| {workload} | {fmt} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def criu_table(samples: list[dict]) -> str:
    """CRIU's own figures per engine (local checkpoints): medians of --print-stats."""
    rows: dict = {}
    for s in samples:
        if s["metric"] != "checkpoint_local" or not s.get("ok", True):
            continue
        criu = s.get("extra", {}).get("criu", {})
        runtime = s.get("extra", {}).get("runtime_checkpoint_duration")
        entry = rows.setdefault((s["workload"], s["engine"]), {"frozen": [], "memdump": [], "memwrite": [],
                                                               "runtime": [], "pages": []})
        for key, field in (("frozen", "frozen_time"), ("memdump", "memdump_time"), ("memwrite", "memwrite_time")):
            if criu.get(field) is not None:
                entry[key].append(criu[field] / 1e6)
        if criu.get("pages_written") is not None:
            entry["pages"].append(criu["pages_written"])
        if runtime is not None:
            entry["runtime"].append(runtime / 1e6)
    lines = ["| workload | engine | CLI wall (median) | runc checkpoint | CRIU frozen | CRIU memdump | "
             "CRIU memwrite | pages written |", "|---|---|---|---|---|---|---|---|"]
    walls = stats.summarise([s for s in samples if s["metric"] == "checkpoint_local"])
    for workload in _order({w for w, _ in rows}):
        for engine in (FERRY, PODMAN):
            entry = rows.get((workload, engine))
            if not entry:
                continue
            med = lambda k: stats.summarise_values(entry[k]).median   # noqa: E731
            wall = walls.get(workload, {}).get("checkpoint_local", {}).get(engine)
            pages = med("pages")
            lines.append(f"| {workload} | {engine} | {_cell(wall, 's')} | {stats.fmt(med('runtime'), 's')} | "
                         f"{stats.fmt(med('frozen'), 's')} | {stats.fmt(med('memdump'), 's')} | "
                         f"{stats.fmt(med('memwrite'), 's')} | {'-' if pages is None else f'{pages:.0f}'} |")
    return "\n".join(lines)


def gap_table(samples: list[dict]) -> str:
    lines = ["| workload | engine | gap median | ckpt+rm+restore median | connection | gap minus downtime |",
             "|---|---|---|---|---|---|"]
    groups: dict = {}
    for s in samples:
        if s["metric"] == "gap":
            groups.setdefault((s["workload"], s["engine"]), []).append(s)
    for workload in _order({w for w, _ in groups}):
        for engine in (FERRY, PODMAN):
            group = groups.get((workload, engine))
            if not group:
                continue
            gaps = stats.summarise_values([s["value"] if s.get("ok", True) else None for s in group])
            down = stats.summarise_values([s.get("extra", {}).get("downtime") for s in group if s.get("ok", True)])
            kept = [s.get("extra", {}).get("kept_connection") for s in group if s.get("ok", True)]
            persistent = any(s.get("extra", {}).get("client", {}).get("persistent") for s in group)
            if not persistent:
                conn = "new connection per request"
            else:
                conn = f"kept in {sum(1 for k in kept if k)}/{len(kept)}"
            extra = None if gaps.median is None or down.median is None else gaps.median - down.median
            lines.append(f"| {workload} | {engine} | {_cell(gaps, 's')} | {stats.fmt(down.median, 's')} | {conn} | "
                         f"{stats.fmt(extra, 's') if extra is None or extra >= 0 else '-' + stats.fmt(-extra, 's')} |")
    return "\n".join(lines)


def environment_text(doc: dict) -> str:
    env = doc.get("environment", {})
    podman = env.get("podman", {})
    podman_version = (podman.get("Client") or {}).get("Version") or podman.get("Version") or "?"
    snap = env.get("ferry_snapshot") or {}
    commit = (snap.get("commit") or env.get("ferry_commit", "?"))[:12]
    if snap.get("uncommitted_src_files") or (not snap and env.get("ferry_src_dirty")):
        commit += " + uncommitted changes in " + ", ".join(snap.get("uncommitted_src_files") or ["src"])
    if snap.get("subject"):
        commit += f" (\"{snap['subject'][:80]}\")"
    return (f"Run of {doc.get('date', '?')} ({doc.get('mode', '?')}, {doc.get('seconds', 0) / 60:.1f} min): "
            f"kernel {env.get('kernel', '?')}, {env.get('cpus', '?')} CPUs ({env.get('cpu', '?')}), "
            f"{env.get('mem_kib', 0) / 2**20:.0f} GiB RAM; CRIU {env.get('criu', '?')}, "
            f"{env.get('runc', '?').splitlines()[0]}, podman {podman_version}, {env.get('conmon', '?')}; "
            f"ferry {commit}, Python {env.get('python', '?')}, zstandard {env.get('zstandard', '?')}.")


def run_section(doc: dict, title: str, plot: str | None, source: str) -> str:
    samples = doc.get("samples", [])
    summary = stats.summarise(samples)
    parts = [f"## {title}", "", environment_text(doc), f"Raw samples: `{source}`.", "",
             "### Targets (ratios of medians, same run)", "",
             stats.targets_table(stats.targets(summary)), "",
             "### Results", "", results_table(summary), ""]
    if plot:
        parts += [f"![ferry vs podman]({plot})", ""]
    parts += ["### Where ferry's time goes (median seconds per `--print-stats` phase)", "",
              phases_table(samples, summary), "",
              "### CRIU's own numbers (local checkpoints, `--print-stats`)", "", criu_table(samples), "",
              "### Client gap details", "", gap_table(samples), ""]
    failures = doc.get("failures", [])
    notes = doc.get("notes", [])
    if failures or notes:
        parts += ["### Failures and notes", ""]
        for f in failures:
            parts.append(f"- {f['workload']} / {f['engine']} / {f['step']} (repeat {f['rep']}): "
                         f"`{failure_reason(f.get('error') or '')}`")
        parts += [f"- {n}" for n in notes]
        parts.append("")
    return "\n".join(parts)


def profile_section(doc: dict, source: str) -> str:
    parts = ["## Profile of ferry (py-spy)", "",
             f"`python -m bench.profile`, {doc.get('date', '?')}: {doc.get('description', '')} "
             f"Raw data: `{source}`.", ""]
    for run in doc.get("runs", []):
        own = run.get("ferry_duration")
        sampled = run.get("sampled_seconds", run.get("samples", 0) / (doc.get("rate") or 1))
        parts += [f"### {run['title']}", "", f"Wall time under py-spy {run.get('wall', 0):.2f} s"
                  + (f", ferry's own duration {own:.2f} s" if own else "")
                  + f"; {run.get('samples', 0)} samples ({sampled:.2f} s) of the CLI's main thread, with "
                  "`--idle`, so time spent waiting on runc, CRIU or compressor threads shows up in the frame "
                  "that waits. py-spy drops samples while both cores are busy, so the phases are the "
                  "authority on seconds and the tables on where the time goes inside them.", ""]
        if run.get("phases"):
            parts.append("Phases (`--print-stats`): " + ", ".join(
                f"{k} {v / 1e6:.2f} s" for k, v in run["phases"].items()) + ".")
            parts.append("")
        parts += ["| function (ferry, inclusive) | seconds | share |", "|---|---|---|"]
        for entry in run.get("top", []):
            parts.append(f"| `{entry['frame']}` | {entry['seconds']:.2f} | {entry['share'] * 100:.0f}% |")
        parts.append("")
        if run.get("self_top"):
            parts += ["| leaf frame (self time) | seconds | share |", "|---|---|---|"]
            for entry in run["self_top"]:
                parts.append(f"| `{entry['frame']}` | {entry['seconds']:.2f} | {entry['share'] * 100:.0f}% |")
            parts.append("")
    if doc.get("findings"):
        parts += ["### Findings", ""] + [f"- {f}" for f in doc["findings"]] + [""]
    return "\n".join(parts)


def render(full: tuple[dict, str] | None, quick: tuple[dict, str] | None,
           profile: tuple[dict, str] | None, plots: dict[str, str], include_analysis: bool = False,
           migration: dict[str, tuple[dict, str]] | None = None) -> str:
    parts = ["# Benchmarks: ferry against podman", "",
             "Generated by `python -m bench.report` from the JSON files in `bench/results/`; "
             "rerun `make bench` or `make bench-quick` rather than editing by hand.", ""]
    if full:
        parts.append(run_section(full[0], "Full run", plots.get("full"), full[1]))
    if quick:
        parts.append(run_section(quick[0], "Quick run (`make bench-quick`)", plots.get("quick"), quick[1]))
    if not full and not quick:
        parts += ["No results yet: run `make bench-quick`.", ""]
    from bench import migreport
    for key, title in (("migration", "Migration: client gap (`make bench-migration`)"),
                       ("migration-quick", "Migration, quick run (`make bench-migration-quick`)")):
        if migration and migration.get(key):
            doc, source = migration[key]
            parts.append(migreport.section(doc, title, plots.get(key), source, environment_text))
    if profile:
        parts.append(profile_section(*profile))
    analysis = os.path.join(REPO, "bench", "analysis.md")
    if include_analysis and os.path.exists(analysis):
        with open(analysis) as f:
            parts += [f.read().rstrip(), ""]
    parts.append(METHOD)
    return "\n".join(parts).rstrip() + "\n"


def plot(doc: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    summary = stats.summarise(doc.get("samples", []))
    workloads = [w for w in _order(summary) if any(m in summary[w] for m in PLOT_METRICS)]
    panels = [("checkpoint_archive", "checkpoint to archive (s)"),
              ("restore_archive", "restore from archive (s)"),
              ("gap", "client gap: ckpt + rm + restore (s)"),
              ("archive_size", "archive size (MiB)")]
    colours = {FERRY: "#1f77b4", FERRY_GZIP: "#9ecae1", FERRY_NONE: "#2ca02c", FERRY_AGE: "#9467bd",
               PODMAN: "#d62728"}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (metric, title) in zip(axes.flat, panels):
        values = []
        engines = [e for e in (FERRY, FERRY_GZIP, FERRY_NONE, FERRY_AGE, PODMAN)
                   if any(summary[w].get(metric, {}).get(e) for w in workloads)]
        width = 0.78 / max(len(engines), 3)
        for i, engine in enumerate(engines):
            xs, meds, mins = [], [], []
            for j, w in enumerate(workloads):
                s = summary[w].get(metric, {}).get(engine)
                if s is None or s.median is None:
                    continue
                scale = 1 / 2**20 if metric == "archive_size" else 1
                xs.append(j + (i - (len(engines) - 1) / 2) * width)
                meds.append(s.median * scale)
                mins.append(s.min * scale)
            bars = ax.bar(xs, meds, width, label=engine, color=colours[engine])
            ax.plot(xs, mins, "k.", markersize=4)
            unit = "MiB" if metric == "archive_size" else "s"
            ax.bar_label(bars, labels=[stats.fmt(m * (2**20 if unit == "MiB" else 1), "B" if unit == "MiB" else "s")
                                       for m in meds], fontsize=6, rotation=90, padding=2)
            values += meds
        if metric in stats.FLOOR_OF:
            first = True
            for j, w in enumerate(workloads):
                fl = stats.floor(summary, w, metric)
                if fl is not None:
                    ax.hlines(fl, j - 0.45, j + 0.45, colors="k", linestyles="dashed",
                              label="CRIU floor (local, no archive)" if first else None)
                    first = False
        ax.set_title(title)
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels(workloads, fontsize=8)
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_yscale("log")   # busybox's 0.3 s and redis 2 GiB's 30 s on one axis
            ax.set_ylim(min(positive) / 2, max(positive) * 4)
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        elif positive:
            ax.set_ylim(0, max(positive) * 1.25)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"ferry vs podman ({doc.get('mode')} run {doc.get('date', '')[:10]}): bars are medians, "
                 "dots are minimums", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    full = quick = profile = None
    migration: dict[str, tuple[dict, str]] = {}
    for path in argv:
        doc = load(path)
        if doc.get("kind") == "migration":
            migration["migration-quick" if doc.get("mode") == "quick" else "migration"] = (doc, path)
        elif "runs" in doc and doc.get("kind") == "profile":
            profile = (doc, path)
        elif doc.get("mode") == "quick":
            quick = (doc, path)
        else:
            full = (doc, path)
    if not argv:
        for pattern, exclude, slot in (("20*.json", "quick", "full"), ("20*-quick*.json", None, "quick"),
                                       ("profile-*.json", None, "profile")):
            path = newest(pattern, exclude)
            if slot == "full" and path and "profile" in path:
                path = None
            if path:
                entry = (load(path), os.path.relpath(path, REPO))
                if slot == "full":
                    full = entry
                elif slot == "quick":
                    quick = entry
                else:
                    profile = entry
        for key, pattern, exclude in (("migration", "migration-*.json", "quick"),
                                      ("migration-quick", "migration-*-quick*.json", None)):
            path = newest(pattern, exclude)
            if path:
                migration[key] = (load(path), os.path.relpath(path, REPO))
    plots = {}
    for key, name in (("migration", "benchmarks-migration.png"), ("migration-quick", "benchmarks-migration-quick.png")):
        if migration.get(key):
            try:
                from bench import migreport
                if migreport.plot(migration[key][0], os.path.join(REPO, "docs", name)):
                    plots[key] = name
            except ImportError:
                print("bench.report: matplotlib is missing (make bench installs it); no timeline plot",
                      file=sys.stderr)
    for key, entry, name in (("full", full, "benchmarks.png"), ("quick", quick, "benchmarks-quick.png")):
        if entry and entry[0].get("samples"):
            try:
                plot(entry[0], os.path.join(REPO, "docs", name))
                plots[key] = name
            except ImportError:
                print("bench.report: matplotlib is missing (make bench installs it); no plot", file=sys.stderr)
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w") as f:
        f.write(render(full, quick, profile, plots, include_analysis=True, migration=migration))
    print(f"wrote {os.path.relpath(DOC, REPO)}" + "".join(f", docs/{p}" for p in plots.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
