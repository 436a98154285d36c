"""The migration section of docs/benchmarks.md and its phase-timeline plot,
from a bench.migration results document. Markdown is pure and unit-tested;
the plot needs matplotlib (Agg)."""

from __future__ import annotations

from bench import migstats as ms
from bench import stats
from bench.stats import failure_reason

PHASE_COLOURS = {
    # ferry migrate
    ms.STARTUP: "#d9d9d9", "preflight": "#9ecae1", "image": "#c6dbef", "stream": "#1f77b4",
    "restore": "#2ca02c", "cleanup": "#bcbd22",
    # podman's path
    "checkpoint --export": "#ff7f0e", "checkpoint (in-flight, retried)": "#fdd0a2", "cp": "#8c564b",
    "rm": "#e377c2", "restore --import": "#2ca02c",
    # the bare recipe
    "dump": "#ff7f0e", "network": "#7f7f7f", "images": "#8c564b", "daemon": "#17becf",
    "unlock": "#7f7f7f", "pages": "#9467bd",
}
FALLBACK_COLOURS = ("#9467bd", "#17becf", "#e7ba52", "#843c39", "#637939", "#7b4173")

METHOD = """\
### How the migrations were measured

```
make bench-migration          # redis 256 MiB, 1 GiB and 2 GiB, 3 repeats (part of make bench)
make bench-migration-quick    # redis 256 MiB, 1 repeat
.venv/bin/python -m bench.migration --sizes 1g --repeats 5 --variants streamed,podman
```

- **Two hosts on one machine.** ferry: two state roots, A and B, each with its agent
  (`ferry --root X serve --listen 127.0.0.1:PORT --token-file F`); both build the redis image from
  the same recipe and so hold the same image ID, and both attach the container's netns to ferry's
  bridge, so its address moves with it. One redis is started in A and filled once per size; each
  repeat moves it to the other root and the next one moves it back.
- **streamed**: `ferry --root A migrate NAME --to http://127.0.0.1:PORT --token-file F
  --tcp-established --print-stats` (stop-and-copy: the memory goes to a CRIU page server B
  started, in the clear behind this http agent, and the rest of the checkpoint streams into B's
  restore).
  **lazy**: the same with `--lazy` (post-copy). Their timelines are the `--print-stats` phases in
  order, after the command's own start-up (`cli start`: the interpreter and its imports).
- **podman**: `podman container checkpoint --export F --tcp-established`, `cp F` to another
  directory, `podman rm`, `podman container restore --import F --tcp-established` (same store,
  same host; podman runs as in the rest of this page).
- **bare**: the lazy recipe of HOST-NOTES with runc and CRIU alone (`bench/baremigrate.py`): two
  runc roots, two copies of the same root filesystem, two netns with the same address and MAC on
  one bridge. `runc checkpoint --lazy-pages --page-server 127.0.0.1:PORT --status-fd FD
  --tcp-established`, and once FD says ready: the source's link down and the destination's up,
  the non-memory images copied, `criu lazy-pages --page-server --address 127.0.0.1 --port PORT
  -D IMAGES -W WORK`, `runc restore -d --lazy-pages --tcp-established` (in a private mount
  namespace), then `unlock`: an nft table that dropped TCP into the destination's netns until the
  socket was restored there (else the client's retransmission meets no socket and gets a RST) is
  deleted, and a gratuitous ARP goes out. `pages` runs until the source's checkpoint ends (every
  page served). The floor of a lazy migration: no engine, no agent, no HTTP, nothing checked.
- **Client gap**: a client on ONE connection to the container's own address sends a redis `GET`
  every millisecond through the migration (bench.client); the gap is its longest time without a
  reply. The client is a stock Linux TCP client: a request sent while the server is frozen is
  resent on the client's retransmission timer (200 ms, doubling), so the gap also holds the wait
  for the next retransmission after the server is back; after a freeze of tens of seconds that wait
  can itself be tens of seconds (the gap is then longer than the tool's own time: "first reply
  after the tool returned"). "kept" counts the migrations after which the client's first
  connection still answered (podman's `restore --import` sometimes resets it).
- The kinds of migration take turns in every repeat (the order rotates). Ratios divide medians of
  the same run; a 2-core shared VM is noisy, so compare ratios, not absolute seconds.
"""


def _cell(s: stats.Summary | None) -> str:
    if s is None or (s.median is None and not s.failures):
        return "-"
    text = stats.fmt(s.median, "s")
    if s.n > 1:
        text += f" ({stats.fmt(s.min, 's')}-{stats.fmt(s.max, 's')})"
    if s.failures:
        text += f" ({s.failures} failed)"
    return text


def _order(workloads) -> list[str]:
    return sorted(workloads, key=stats._redis_bytes)


def gap_table(summary: dict, variants=ms.VARIANTS) -> str:
    head = " | ".join(ms.LABELS[v] for v in variants)
    lines = [f"| workload | {head} | streamed / podman | lazy / bare |",
             "|---|" + "---|" * len(variants) + "---|---|"]
    for workload in _order(w for w in summary if w.startswith("redis-")):
        gaps = summary[workload].get("gap", {})
        med = {v: (gaps[v].median if v in gaps else None) for v in variants}
        cells = " | ".join(_cell(gaps.get(v)) for v in variants)
        lines.append(f"| {workload} | {cells} | {stats.fmt_ratio(stats.ratio(med.get(ms.STREAMED), med.get(ms.PODMAN_PATH)))}"
                     f" | {stats.fmt_ratio(stats.ratio(med.get(ms.LAZY), med.get(ms.BARE)))} |")
    return "\n".join(lines)


def details_table(samples: list[dict], variants=ms.VARIANTS) -> str:
    """Per workload and kind: the gap, the tool's own downtime, when it was
    done, and whether the client's connection survived."""
    lines = ["| workload | migration | gap median | downtime (tool's own) | done after | connection kept | "
             "first reply after the tool returned |", "|---|---|---|---|---|---|---|"]
    summary = stats.summarise(samples)
    groups: dict = {}
    for s in samples:
        if s["metric"] == "gap":
            groups.setdefault((s["workload"], s["engine"]), []).append(s)
    for workload in _order({w for w, _ in groups}):
        for variant in variants:
            group = groups.get((workload, variant))
            if not group:
                continue
            by = summary.get(workload, {})
            ok = [s for s in group if s.get("ok", True)]
            kept = sum(1 for s in ok if s.get("extra", {}).get("kept_connection"))
            first = stats.summarise_values([s.get("extra", {}).get("client", {}).get("first_reply_after_restore")
                                            for s in ok]).median
            lines.append(f"| {workload} | {variant} | {_cell(by.get('gap', {}).get(variant))} | "
                         f"{stats.fmt(_median(by, 'downtime', variant), 's')} | "
                         f"{stats.fmt(_median(by, 'total', variant), 's')} | {kept}/{len(group)} | "
                         f"{stats.fmt(first, 's')} |")
    return "\n".join(lines)


def _median(by_metric: dict, metric: str, variant: str) -> float | None:
    s = by_metric.get(metric, {}).get(variant)
    return s.median if s else None


def timeline_text(samples: list[dict], variants=ms.VARIANTS) -> str:
    """The plotted migrations as text: phases and the client's gap, in seconds from the start."""
    workload = ms.timeline_workload(samples)
    if workload is None:
        return ""
    lines = [f"The migration of each kind whose gap is closest to its median at {workload} "
             "(seconds from the start of the command):", ""]
    for variant in variants:
        s = ms.typical(samples, workload, variant)
        if s is None:
            continue
        phases = ", ".join(f"{p['phase']} {p['start']:.2f}-{p['end']:.2f}" for p in s["extra"].get("timeline", []))
        gap = s["extra"].get("client_gap")
        gap_text = f"; client gap {gap[0]:.2f}-{gap[1]:.2f} ({gap[1] - gap[0]:.2f} s)" if gap else ""
        lines.append(f"- {variant}: {phases}{gap_text}")
    return "\n".join(lines)


def section(doc: dict, title: str, plot: str | None, source: str, environment_text) -> str:
    samples = doc.get("samples", [])
    summary = stats.summarise(samples)
    variants = [v for v in ms.VARIANTS if any(s["engine"] == v for s in samples)
                or v in (doc.get("variants") or [])]
    repeats = doc.get("repeats")
    sizes = ", ".join(doc.get("sizes") or [])
    parts = [f"## {title}", "", environment_text(doc),
             f"Sizes {sizes or '?'}, {repeats or '?'} repeat(s) each. Raw samples: `{source}`.", ""]
    for variant, why in (doc.get("skipped") or {}).items():
        parts += [f"**{variant} was not measured**: {why}.", ""]
    parts += ["### Migration targets (ratios of medians, same run)", "",
              stats.targets_table(ms.targets(summary)), "",
              "### Client gap (median, min-max over the repeats)", "", gap_table(summary, variants), "",
              "### Per migration kind", "", details_table(samples, variants), ""]
    if plot:
        parts += [f"![phase timelines of one migration of each kind]({plot})", ""]
    text = timeline_text(samples, variants)
    if text:
        parts += [text, ""]
    failures, notes = doc.get("failures", []), doc.get("notes", [])
    if failures or notes:
        parts += ["### Failures and notes", ""]
        parts += [f"- {f['workload']} / {f['engine']} / {f['step']} (repeat {f['rep']}): "
                  f"`{failure_reason(f.get('error') or '')}`" for f in failures]
        parts += [f"- {n}" for n in notes]
        parts.append("")
    parts.append(METHOD)
    return "\n".join(parts)


def phase_colour(name: str, seen: dict) -> str:
    if name in PHASE_COLOURS:
        return PHASE_COLOURS[name]
    if name not in seen:
        seen[name] = FALLBACK_COLOURS[len(seen) % len(FALLBACK_COLOURS)]
    return seen[name]


def plot(doc: dict, path: str) -> bool:
    """One row per kind of migration: its phases, and under them the client's
    longest gap. Each row has its own time axis (podman's takes ten times as
    long). Returns False when there is nothing to plot."""
    samples = doc.get("samples", [])
    workload = ms.timeline_workload(samples)
    chosen = [(v, ms.typical(samples, workload, v)) for v in ms.VARIANTS] if workload else []
    chosen = [(v, s) for v, s in chosen if s is not None and s["extra"].get("timeline")]
    if not chosen:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(chosen), 1, figsize=(12, 1.9 * len(chosen) + 0.8), squeeze=False)
    extra_colours: dict = {}
    for ax, (variant, s) in zip(axes[:, 0], chosen):
        timeline = s["extra"]["timeline"]
        gap = s["extra"].get("client_gap")
        end = max([p["end"] for p in timeline] + ([gap[1]] if gap else []))
        handles = []
        for p in timeline:
            colour = phase_colour(p["phase"], extra_colours)
            ax.broken_barh([(p["start"], max(p["end"] - p["start"], end / 500))], (1.1, 0.8),
                           facecolors=colour, edgecolors="white", linewidth=0.5)
            if p["phase"] not in [h.get_label() for h in handles]:
                handles.append(Patch(facecolor=colour, label=f"{p['phase']} {p['end'] - p['start']:.2f} s"))
        if gap:
            ax.broken_barh([(gap[0], gap[1] - gap[0])], (0.1, 0.8), facecolors="#d62728")
            handles.append(Patch(facecolor="#d62728", label=f"client gap {gap[1] - gap[0]:.2f} s"))
        ax.set_ylim(0, 2)
        ax.set_yticks([0.5, 1.5])
        ax.set_yticklabels(["client", "phases"], fontsize=8)
        ax.set_xlim(0, end * 1.02)
        ax.set_title(f"{ms.LABELS[variant]}: gap {s['value']:.2f} s", fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        ax.tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel("seconds from the start of the migration (each row its own scale)", fontsize=8)
    fig.suptitle(f"One migration of each kind, redis {workload.split('-', 1)[1]} "
                 f"({doc.get('mode')} run {doc.get('date', '')[:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
