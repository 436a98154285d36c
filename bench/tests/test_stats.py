"""bench.stats: summaries, ratios, the CRIU floor and the targets (pure)."""

import pytest

from bench import stats


def sample(workload, engine, metric, value, rep=0, **extra):
    return {"workload": workload, "engine": engine, "metric": metric, "rep": rep,
            "value": value, "ok": value is not None, "extra": extra}


def test_summary_of_values_ignores_failures():
    s = stats.summarise_values([3.0, None, 1.0, 2.0])
    assert (s.n, s.median, s.min, s.max, s.failures) == (3, 2.0, 1.0, 3.0, 1)


def test_summary_of_even_count_is_the_mean_of_the_middle_two():
    assert stats.summarise_values([4.0, 1.0, 2.0, 3.0]).median == 2.5


def test_summary_of_only_failures_has_no_median():
    s = stats.summarise_values([None, None])
    assert (s.n, s.median, s.min, s.failures) == (0, None, None, 2)


def test_group_keeps_failed_samples_as_none():
    samples = [sample("w", "ferry", "gap", 1.0), {**sample("w", "ferry", "gap", 5.0), "ok": False}]
    assert stats.group(samples) == {"w": {"gap": {"ferry": [1.0, None]}}}


def test_ratio_handles_missing_and_zero():
    assert stats.ratio(1.0, 4.0) == 0.25
    assert stats.ratio(None, 1.0) is None
    assert stats.ratio(1.0, None) is None
    assert stats.ratio(1.0, 0.0) is None


def run_samples():
    out = []
    for rep, (f, p, fl, pl) in enumerate([(2.0, 6.0, 1.8, 1.9), (3.0, 5.0, 1.7, 2.5), (2.5, 7.0, 1.9, 2.0)]):
        out += [sample("redis-1g", "ferry", "checkpoint_archive", f, rep),
                sample("redis-1g", "podman", "checkpoint_archive", p, rep),
                sample("redis-1g", "ferry", "checkpoint_local", fl, rep),
                sample("redis-1g", "podman", "checkpoint_local", pl, rep),
                sample("redis-1g", "ferry", "restore_archive", 1.0, rep),
                sample("redis-1g", "podman", "restore_archive", 10.0, rep),
                sample("redis-1g", "ferry", "archive_size", 80.0, rep),
                sample("redis-1g", "podman", "archive_size", 100.0, rep),
                sample("redis-1g", "ferry", "gap", 4.0, rep),
                sample("redis-1g", "podman", "gap", 10.0, rep),
                sample("ps-20", "ferry", "ps", 0.2, rep),
                sample("ps-20", "podman", "ps", 0.1, rep)]
    return out


def test_floor_is_the_faster_engines_median_local_checkpoint():
    summary = stats.summarise(run_samples())
    assert stats.floor(summary, "redis-1g", "checkpoint_archive") == 1.8   # ferry's median 1.8 < podman's 2.0
    assert stats.floor(summary, "redis-1g", "restore_archive") is None    # no local restores recorded
    assert stats.floor(summary, "redis-1g", "gap") is None


def test_rows_carry_ratios_against_podman_and_the_floor():
    summary = stats.summarise(run_samples())
    row = next(r for r in stats.rows(summary) if r.metric == "checkpoint_archive")
    assert row.vs_podman == 2.5 / 6.0
    assert row.vs_floor == 2.5 / 1.8
    assert row.engines["ferry"].min == 2.0


def test_targets_compare_ratios_with_the_issue_limits():
    found = {(t.what, t.workload): t for t in stats.targets(stats.summarise(run_samples()))}
    ck = found[("checkpoint to archive <= 0.3x podman", "redis-1g")]
    assert ck.measured == 2.5 / 6.0 and ck.ok is False
    assert found[("checkpoint to archive <= 1.3x CRIU floor", "redis-1g")].ok is False
    assert found[("restore from archive <= 0.15x podman", "redis-1g")].ok is True
    assert found[("archive size <= podman", "redis-1g")].ok is True
    assert found[("client gap <= 0.3x podman", "redis-1g")].ok is False
    assert found[("ferry ps (20 containers) <= podman ps", "ps-20")].ok is False


def test_targets_fall_back_to_the_largest_redis_in_quick_runs():
    samples = [sample("redis-256m", "ferry", "checkpoint_archive", 1.0),
               sample("redis-256m", "podman", "checkpoint_archive", 4.0),
               sample("redis-64m", "ferry", "checkpoint_archive", 1.0)]
    found = {t.what: t for t in stats.targets(stats.summarise(samples))}
    ck = found["checkpoint to archive <= 0.3x podman"]
    assert ck.workload == "redis-256m" and "redis-1g" in ck.note
    assert ck.ok is True
    assert found["checkpoint to archive <= 1.3x CRIU floor"].workload == "redis-256m"


def test_a_target_without_data_is_neither_met_nor_missed():
    summary = stats.summarise([sample("redis-1g", "ferry", "checkpoint_archive", 1.0)])
    found = {t.what: t for t in stats.targets(summary)}
    target = found["checkpoint to archive <= 0.3x podman"]
    assert target.measured is None and target.ok is None


def test_targets_of_the_small_containers_and_both_large_redis():
    samples = []
    for workload, ferry, podman in (("busybox-httpd", 0.5, 0.4), ("nginx", 0.3, 0.4), ("redis-1g", 2.0, 8.0),
                                    ("redis-2g", 4.0, 16.0)):
        for metric in ("checkpoint_archive", "restore_archive", "gap", "criu_dump", "archive_size"):
            samples += [sample(workload, "ferry", metric, ferry), sample(workload, "podman", metric, podman)]
    found = {(t.what, t.workload): t for t in stats.targets(stats.summarise(samples))}
    for what in ("checkpoint to archive <= podman", "restore from archive <= podman", "client gap <= podman"):
        assert found[(what, "busybox-httpd")].ok is False and found[(what, "busybox-httpd")].measured == 0.5 / 0.4
        assert found[(what, "nginx")].ok is True
    assert ("client gap <= 0.3x podman", "busybox-httpd") not in found
    for workload in ("redis-1g", "redis-2g"):
        assert found[("checkpoint to archive <= 0.3x podman", workload)].ok is True     # 0.25x
        assert found[("restore from archive <= 0.15x podman", workload)].ok is False    # 0.25x
        assert found[("client gap <= 0.3x podman", workload)].ok is True
        assert not found[("checkpoint to archive <= 0.3x podman", workload)].note
    for workload in ("busybox-httpd", "nginx", "redis-1g", "redis-2g"):
        assert ("CRIU frozen time (local checkpoint) <= podman", workload) in found
        assert ("archive size <= podman", workload) in found
    # No RSS was sampled: the target shows, unmeasured, because redis-2g ran.
    rss = next(t for t in found.values() if "RssAnon" in t.what)
    assert rss.workload == "redis-2g" and rss.measured is None and rss.ok is None


def test_targets_of_everyday_commands_and_ferrys_memory():
    samples = [sample("commands", "ferry", "inspect", 0.09), sample("commands", "podman", "inspect", 0.03),
               sample("commands", "ferry", "logs", 0.03), sample("commands", "podman", "logs", 0.04),
               sample("commands", "ferry", "images", 0.04), sample("commands", "podman", "images", 0.04),
               sample("busybox-httpd", "ferry", "run_to_answer", 0.25),
               sample("busybox-httpd", "podman", "run_to_answer", 0.2),
               sample("busybox-httpd", "ferry", "rm_running", 0.3),
               sample("busybox-httpd", "podman", "rm_running", 0.2),
               sample("redis-2g", "ferry", "rss_anon_sum_checkpoint", 120.0, rep=0),
               sample("redis-2g", "ferry", "rss_anon_sum_checkpoint", 160.0, rep=1),
               sample("redis-2g", "ferry", "rss_anon_sum_restore", 90.0)]
    found = {(t.what, t.workload): t for t in stats.targets(stats.summarise(samples))}
    assert found[("ferry inspect <= podman inspect", "commands")].measured == pytest.approx(3.0)
    assert found[("ferry logs <= podman logs", "commands")].ok is True
    assert found[("ferry images <= podman images", "commands")].ok is True
    assert found[("run -d until the service answers <= podman", "busybox-httpd")].measured == pytest.approx(1.25)
    rss = next(t for t in found.values() if "RssAnon" in t.what)
    assert (rss.measured, rss.limit, rss.unit, rss.ok) == (160.0, 150.0, "MiB", False)   # the worst repeat
    assert not any("rm -f" in t.what for t in found.values())   # no target for rm -f
    table = stats.targets_table(list(found.values()))
    assert "| 160.0 MiB | **no** |" in table and "| 3.00x | **no** |" in table


def test_ferry_none_export_is_measured_against_the_criu_floor_at_redis_1g():
    samples = run_samples()   # the floor at redis-1g: ferry's median local checkpoint, 1.8 s
    samples += [sample("redis-1g", "ferry-none", "checkpoint_archive", v, rep) for rep, v in enumerate((2.0, 2.1, 1.9))]
    samples += [sample("redis-256m", "ferry-none", "checkpoint_archive", 9.0),
                sample("redis-256m", "ferry", "checkpoint_local", 1.0)]
    summary = stats.summarise(samples)
    found = {(t.what, t.workload): t for t in stats.targets(summary)}
    none = found[("export --compress none <= 1.15x CRIU floor", "redis-1g")]
    assert none.measured == pytest.approx(2.0 / 1.8) and none.limit == 1.15 and none.ok is True and not none.note
    assert not any(t.workload == "redis-256m" and "compress none" in t.what for t in found.values())
    row = next(r for r in stats.rows(summary) if (r.workload, r.metric) == ("redis-1g", "checkpoint_archive"))
    assert row.none_vs_floor == pytest.approx(2.0 / 1.8) and row.vs_floor == pytest.approx(2.5 / 1.8)
    # Over the limit: 2.2 s against the 1.8 s floor is 1.22x.
    over = stats.summarise(run_samples() + [sample("redis-1g", "ferry-none", "checkpoint_archive", 2.2)])
    assert next(t for t in stats.targets(over) if "compress none" in t.what).ok is False


def test_ferry_none_falls_back_to_the_largest_redis_with_the_same_note():
    samples = [sample("redis-256m", "ferry", "checkpoint_local", 0.7),
               sample("redis-256m", "podman", "checkpoint_local", 0.6),
               sample("redis-256m", "ferry", "checkpoint_archive", 1.0),
               sample("redis-256m", "ferry-none", "checkpoint_archive", 0.72),
               sample("nginx", "ferry-none", "checkpoint_archive", 0.3)]
    found = {t.what: t for t in stats.targets(stats.summarise(samples))}
    none, zstd = found["export --compress none <= 1.15x CRIU floor"], found["checkpoint to archive <= 1.3x CRIU floor"]
    assert none.workload == zstd.workload == "redis-256m"
    assert none.note == zstd.note == "measured at redis-256m; the target is at redis-1g"
    assert none.measured == pytest.approx(0.72 / 0.6) and none.ok is False


def test_no_ferry_none_samples_no_ferry_none_target():
    """A run without the round (--no-none, or results from before it) shows no such row."""
    assert not any("compress none" in t.what for t in stats.targets(stats.summarise(run_samples())))
    # A round that failed every time is a target not measured, rather than absent.
    failed = stats.summarise(run_samples() + [sample("redis-1g", "ferry-none", "checkpoint_archive", None)])
    target = next(t for t in stats.targets(failed) if "compress none" in t.what)
    assert target.measured is None and target.ok is None


def test_floor_workload_is_redis_1g_else_the_largest_redis():
    assert stats.floor_workload(["busybox-httpd", "redis-256m", "redis-1g", "redis-2g"]) == "redis-1g"
    assert stats.floor_workload(["redis-2g", "redis-256m"]) == "redis-2g"
    assert stats.floor_workload(["nginx", "redis-256m"]) == "redis-256m"
    assert stats.floor_workload(["nginx", "busybox-httpd"]) is None


def test_leave_running_frozen_time_targets_at_every_workload():
    samples = []
    for workload, ferry, podman in (("busybox-httpd", 0.05, 0.06), ("nginx", 0.07, 0.06), ("redis-256m", 0.2, 0.2),
                                    ("redis-1g", 0.9, 0.8)):
        samples += [sample(workload, "ferry", "criu_dump_leave_running", ferry),
                    sample(workload, "podman", "criu_dump_leave_running", podman)]
    samples.append(sample("redis-2g", "ferry", "criu_dump_leave_running", 2.0))   # podman's failed or missing
    found = {(t.what, t.workload): t for t in stats.targets(stats.summarise(samples))}
    what = "CRIU frozen time (--leave-running export) <= podman"
    assert found[(what, "busybox-httpd")].ok is True
    assert found[(what, "nginx")].measured == pytest.approx(0.07 / 0.06) and found[(what, "nginx")].ok is False
    assert found[(what, "redis-256m")].ok is True   # equal is within the limit
    assert found[(what, "redis-1g")].ok is False
    assert found[(what, "redis-2g")].measured is None and found[(what, "redis-2g")].ok is None
    # Its row in the per-workload table, right after the local checkpoint's frozen time.
    metrics = list(stats.METRICS)
    assert metrics.index("criu_dump_leave_running") == metrics.index("criu_dump") + 1
    assert [r.metric for r in stats.rows(stats.summarise(samples))][:1] == ["criu_dump_leave_running"]
    # ferry's whole freeze (freeze to thaw) is a row of its own, ferry's alone, with no target.
    held = stats.summarise(samples + [sample("redis-1g", "ferry", "frozen_leave_running", 1.7)])
    row = next(r for r in stats.rows(held) if r.metric == "frozen_leave_running")
    assert row.engines["ferry"].median == 1.7 and row.vs_podman is None
    assert len(stats.targets(held)) == len(found)


def test_phase_medians_convert_microseconds():
    samples = [sample("w", "ferry", "checkpoint_archive", 1.0, phases={"stop": 400000, "archive_write": 1000000}),
               sample("w", "ferry", "checkpoint_archive", 1.0, phases={"stop": 200000, "archive_write": 3000000}),
               sample("w", "podman", "checkpoint_archive", 1.0, phases={"stop": 9e9})]
    medians = stats.phase_medians(samples, "w", "checkpoint_archive")
    assert medians == {"stop": pytest.approx(0.3), "archive_write": pytest.approx(2.0)}


def test_formatting():
    assert stats.fmt(0.25, "s") == "250 ms"
    assert stats.fmt(12.345, "s") == "12.35 s"
    assert stats.fmt(None, "s") == "-"
    assert stats.fmt(3 * 2**20, "B") == "3.0 MiB"
    assert stats.fmt(123.45, "MiB") == "123.5 MiB"
    assert stats.human_bytes(512) == "512 B"
    assert stats.fmt_ratio(0.333) == "0.33x"
    assert stats.fmt_ratio(None) == "-"
