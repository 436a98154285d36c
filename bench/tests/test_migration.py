"""bench.migstats, bench.migreport and the pure parts of bench.baremigrate and
bench.migration: timelines, targets, tables, the bundle config (no clocks,
no tools, no timed assertions)."""

import random

import pytest

from bench import baremigrate, migration, migreport, migstats as ms
from bench import stats
from bench.tests.test_stats import sample


def gap(workload, variant, value, rep=0, timeline=None, client_gap=None, kept=True, first=0.01):
    return sample(workload, variant, "gap", value, rep=rep, timeline=timeline or [], client_gap=client_gap,
                  kept_connection=kept, client={"first_reply_after_restore": first})


def run_samples():
    out = []
    for rep, (s, l, p, b) in enumerate(((2.0, 0.5, 20.0, 0.4), (3.0, 0.6, 22.0, 0.5), (2.5, 0.7, 24.0, 0.6))):
        out += [gap("redis-1g", ms.STREAMED, s, rep), gap("redis-1g", ms.LAZY, l, rep),
                gap("redis-1g", ms.PODMAN_PATH, p, rep), gap("redis-1g", ms.BARE, b, rep)]
    out += [gap("redis-256m", ms.LAZY, 0.4), gap("redis-256m", ms.BARE, 0.35),
            gap("redis-2g", ms.LAZY, 0.8), gap("redis-2g", ms.BARE, 0.5)]
    return out


# ---- timelines ---------------------------------------------------------------------

def test_ferry_phases_follow_the_cli_start_up_and_end_with_the_command():
    timeline = ms.ferry_timeline({"preflight": 0.3, "stream": 2.0, "restore": 0.7}, wall=3.5)
    assert [p["phase"] for p in timeline] == [ms.STARTUP, "preflight", "stream", "restore"]
    assert timeline[0] == {"phase": ms.STARTUP, "start": 0.0, "end": pytest.approx(0.5)}
    assert timeline[2]["start"] == pytest.approx(0.8) and timeline[-1]["end"] == pytest.approx(3.5)


def test_ferry_phases_longer_than_the_wall_time_start_at_zero():
    timeline = ms.ferry_timeline({"a": 2.0, "b": -1.0, "c": 1.0}, wall=2.5)
    assert [(p["phase"], p["start"], p["end"]) for p in timeline] == [("a", 0.0, 2.0), ("b", 2.0, 2.0),
                                                                      ("c", 2.0, 3.0)]


def test_steps_and_the_client_gap_are_seconds_from_the_start():
    assert ms.steps_timeline([("cp", 101.5, 102.0)], t0=100.0) == [{"phase": "cp", "start": 1.5, "end": 2.0}]
    assert ms.client_gap({"gap_from": 100.25, "gap_to": 103.0}, t0=100.0) == [0.25, 3.0]
    assert ms.client_gap({"gap_from": None, "gap_to": None}, t0=100.0) is None


def test_lazy_is_found_in_the_help_only_as_an_option():
    assert ms.lazy_supported("usage: ferry migrate [-h] --to URL [--lazy] [--pre-copy]")
    assert ms.lazy_supported("  --lazy                post-copy: resume on the destination first")
    assert not ms.lazy_supported("usage: ferry migrate [-h] --to URL [--tcp-established]\nlazy people")
    assert not ms.lazy_supported("  --lazy-pages   something else")


def test_sizes_and_labels():
    assert ms.parse_sizes("256, 1g,2048") == [256, 1024, 2048]
    assert ms.parse_sizes("512m") == [512]
    for bad in ("", "0", "-1"):
        with pytest.raises(ValueError):
            ms.parse_sizes(bad)
    assert [ms.size_label(s) for s in (256, 1024, 2048, 1536)] == ["redis-256m", "redis-1g", "redis-2g",
                                                                   "redis-1536m"]


def test_the_order_rotates_so_that_each_kind_goes_first_in_turn():
    variants = [ms.STREAMED, ms.LAZY, ms.PODMAN_PATH, ms.BARE]
    firsts = [ms.order(variants, rep)[0] for rep in range(4)]
    assert firsts == variants
    assert sorted(ms.order(variants, 5)) == sorted(variants)
    assert ms.order([], 3) == []


# ---- targets ----------------------------------------------------------------------------

def test_targets_are_ratios_of_medians():
    targets = {(t.what, t.workload): t for t in ms.targets(stats.summarise(run_samples()))}
    streamed = targets[("streamed stop-and-copy gap <= 0.15x podman export+copy+import", "redis-1g")]
    assert streamed.measured == pytest.approx(2.5 / 22.0) and streamed.ok is True
    growth = targets[("--lazy gap grows <= 1.5x from 256 MiB to 2 GiB", "redis-2g / redis-256m")]
    assert growth.measured == pytest.approx(2.0) and growth.ok is False
    floor = targets[("--lazy gap <= 1.3x the bare runc + CRIU lazy recipe", "redis-1g")]
    assert floor.measured == pytest.approx(0.6 / 0.5) and floor.ok is True
    assert targets[("--lazy gap <= 1.3x the bare runc + CRIU lazy recipe", "redis-2g")].ok is False


def test_a_quick_run_falls_back_and_says_so():
    samples = [gap("redis-256m", ms.STREAMED, 2.0), gap("redis-256m", ms.PODMAN_PATH, 6.0),
               gap("redis-256m", ms.BARE, 0.4)]
    targets = ms.targets(stats.summarise(samples))
    assert targets[0].workload == "redis-256m" and "the target is at redis-1g" in targets[0].note
    assert targets[0].measured == pytest.approx(1 / 3)
    assert targets[1].measured is None and targets[1].ok is None and "two sizes" in targets[1].note
    assert targets[2].measured is None   # no lazy samples: not measured, not failed


def test_the_typical_migration_is_the_one_closest_to_the_median():
    samples = [gap("redis-1g", ms.LAZY, v, rep=i) for i, v in enumerate((0.9, 0.5, 0.61, 0.59))]
    samples.append({**gap("redis-1g", ms.LAZY, 0.6, rep=9), "ok": False})
    assert ms.typical(samples, "redis-1g", ms.LAZY)["value"] == 0.59   # median 0.6: 0.59 and 0.61 tie, lower wins
    assert ms.typical(samples, "redis-1g", ms.BARE) is None
    assert ms.timeline_workload(samples) == "redis-1g"
    assert ms.timeline_workload([gap("redis-256m", ms.BARE, 1.0), gap("redis-2g", ms.BARE, 1.0)]) == "redis-2g"
    assert ms.timeline_workload([]) is None


# ---- report -----------------------------------------------------------------------------------

def document(samples, **more):
    return {"kind": "migration", "mode": "full", "date": "2026-01-02T03:04:05", "seconds": 600,
            "environment": {"kernel": "6.18", "cpus": 2, "criu": "4.2.1", "runc": "runc version 1.1.5",
                            "podman": {"Client": {"Version": "4.3.1"}}, "ferry_commit": "abc" * 14},
            "variants": list(ms.VARIANTS), "samples": samples, "failures": [], "notes": [], **more}


def test_gap_table_has_a_row_per_size_with_the_two_ratios():
    text = migreport.gap_table(stats.summarise(run_samples()))
    assert "| redis-1g | 2.50 s (2.00 s-3.00 s) | 600 ms (500 ms-700 ms) | 22.00 s (20.00 s-24.00 s) | " \
           "500 ms (400 ms-600 ms) | 0.11x | 1.20x |" in text
    assert "| redis-256m | - | 400 ms | - | 350 ms | - | 1.14x |" in text
    assert text.index("redis-256m") < text.index("redis-1g") < text.index("redis-2g")


def test_details_count_kept_connections():
    samples = [gap("redis-1g", ms.PODMAN_PATH, 20.0, kept=False), gap("redis-1g", ms.PODMAN_PATH, 22.0, rep=1),
               sample("redis-1g", ms.PODMAN_PATH, "downtime", 19.0), sample("redis-1g", ms.PODMAN_PATH, "total", 21.0)]
    text = migreport.details_table(samples)
    assert "| redis-1g | podman | 21.00 s (20.00 s-22.00 s) | 19.00 s | 21.00 s | 1/2 | 10 ms |" in text


def test_section_names_what_was_skipped_and_lists_the_timelines():
    timeline = [{"phase": "dump", "start": 0.0, "end": 0.2}, {"phase": "restore", "start": 0.2, "end": 0.45}]
    samples = [gap("redis-256m", ms.BARE, 0.4, timeline=timeline, client_gap=[0.1, 0.5])]
    doc = document(samples, skipped={ms.LAZY: "`ferry migrate --help` does not list --lazy"},
                   failures=[{"workload": "redis-256m", "engine": "podman", "step": "migrate", "rep": 0,
                              "error": "podman checkpoint: exit 125\nError: boom"}], notes=["a note"])
    from bench.report import environment_text
    text = migreport.section(doc, "Migration", "m.png", "bench/results/m.json", environment_text)
    assert "**lazy was not measured**: `ferry migrate --help` does not list --lazy." in text
    assert "- bare: dump 0.00-0.20, restore 0.20-0.45; client gap 0.10-0.50 (0.40 s)" in text
    assert "![phase timelines of one migration of each kind](m.png)" in text
    assert "redis-256m / podman / migrate (repeat 0): `Error: boom`" in text and "- a note" in text
    assert "| --lazy gap <= 1.3x the bare runc + CRIU lazy recipe | redis-256m | - | n/a |" in text


def test_the_report_renders_migration_sections_after_the_others():
    from bench import report
    doc = document(run_samples(), sizes=["redis-256m", "redis-1g"], repeats=3)
    text = report.render(None, None, None, {"migration": "benchmarks-migration.png"},
                         migration={"migration": (doc, "bench/results/migration-x.json")})
    assert "## Migration: client gap (`make bench-migration`)" in text
    assert "Sizes redis-256m, redis-1g, 3 repeat(s) each. Raw samples: `bench/results/migration-x.json`." in text
    assert "![phase timelines of one migration of each kind](benchmarks-migration.png)" in text
    assert text.index("## Migration") < text.index("## How to run")


def test_unknown_phases_get_colours_of_their_own():
    seen: dict = {}
    assert migreport.phase_colour("stream", seen) == migreport.PHASE_COLOURS["stream"]
    a, b = migreport.phase_colour("pages-from-source", seen), migreport.phase_colour("other", seen)
    assert a != b and migreport.phase_colour("pages-from-source", seen) == a


# ---- the bare recipe's pure parts ---------------------------------------------------------------

def test_a_free_subnet_avoids_the_routes_in_use():
    routes = "\n".join(f"10.79.{n}.0/24 dev x proto kernel" for n in range(1, 255) if n != 77)
    assert baremigrate.free_subnet(routes + "\ndefault via 192.0.2.1 dev eth0", random.Random(1)) == 77
    with pytest.raises(baremigrate.BenchError):
        baremigrate.free_subnet(routes + "\n10.79.77.0/24 dev y", random.Random(1))


def test_the_bundle_joins_the_named_netns_and_runs_redis_without_a_terminal():
    template = {"process": {"terminal": True, "args": ["sh"], "env": ["PATH=/bin", "TERM=xterm"],
                            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]},
                "root": {"path": "rootfs", "readonly": True}, "hostname": "runc",
                "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]}}
    config = baremigrate.bundle_config(template, rootfs="/r", args=["redis-server", "--save", ""],
                                       netns="bm1234-b", cgroup="/bm1234-b")
    assert config["root"] == {"path": "/r", "readonly": False}
    assert config["process"]["terminal"] is False and config["process"]["args"] == ["redis-server", "--save", ""]
    assert config["process"]["env"] == ["PATH=/bin"]
    assert {"type": "network", "path": "/run/netns/bm1234-b"} in config["linux"]["namespaces"]
    assert [ns for ns in config["linux"]["namespaces"] if ns["type"] == "network"] == \
        [{"type": "network", "path": "/run/netns/bm1234-b"}]
    assert config["linux"]["cgroupsPath"] == "/bm1234-b"
    assert template["process"]["terminal"] is True   # the template is left alone


def test_the_gratuitous_arp_announces_our_address_from_our_mac():
    frame = baremigrate.garp_frame("10.79.5.50", "02:bd:0a:4f:05:32")
    mac = bytes.fromhex("02bd0a4f0532")
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    assert frame[20:22] == b"\x00\x01"                   # a request
    assert frame[22:28] == mac and frame[28:32] == bytes([10, 79, 5, 50])
    assert frame[38:42] == bytes([10, 79, 5, 50])        # for our own address
    assert len(frame) == 42


# ---- the command line ---------------------------------------------------------------------------

def test_quick_mode_is_one_size_one_repeat():
    args = migration.parse_args(["--quick"])
    assert (args.sizes, args.repeats, args.variants) == ([256], 1, list(ms.VARIANTS))
    args = migration.parse_args(["--sizes", "1g,2g", "--variants", "bare,podman"])
    assert (args.sizes, args.repeats, args.variants) == ([1024, 2048], 3, ["bare", "podman"])
    with pytest.raises(SystemExit):
        migration.parse_args(["--variants", "teleport"])


def test_results_files_are_named_apart_from_the_other_runs(tmp_path, monkeypatch):
    import datetime as dt
    from bench import run
    monkeypatch.setattr(run, "RESULTS", str(tmp_path))
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    first = run.results_path(True, now, "migration")
    assert first.endswith("migration-2026-01-02-quick.json")
    open(first, "w").close()
    assert run.results_path(True, now, "migration").endswith("migration-2026-01-02-quick-030405.json")
    assert run.results_path(False, now, "migration").endswith("migration-2026-01-02.json")
    assert run.results_path(False, now).endswith("/2026-01-02.json")
