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
    ck = found[("checkpoint to archive <= 0.4x podman", "redis-1g")]
    assert ck.measured == 2.5 / 6.0 and ck.ok is False
    assert found[("checkpoint to archive <= 1.3x CRIU floor", "redis-1g")].ok is False
    assert found[("restore from archive <= 0.2x podman", "redis-1g")].ok is True
    assert found[("archive size <= podman", "redis-1g")].ok is True
    assert found[("client gap <= 0.3x podman", "redis-1g")].ok is False
    assert found[("ferry ps (20 containers) <= podman ps", "ps-20")].ok is False


def test_targets_fall_back_to_the_largest_redis_in_quick_runs():
    samples = [sample("redis-256m", "ferry", "checkpoint_archive", 1.0),
               sample("redis-256m", "podman", "checkpoint_archive", 4.0),
               sample("redis-64m", "ferry", "checkpoint_archive", 1.0)]
    first = stats.targets(stats.summarise(samples))[0]
    assert first.workload == "redis-256m" and "redis-1g" in first.note
    assert first.ok is True


def test_a_target_without_data_is_neither_met_nor_missed():
    target = stats.targets(stats.summarise([sample("redis-1g", "ferry", "checkpoint_archive", 1.0)]))[0]
    assert target.measured is None and target.ok is None


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
    assert stats.human_bytes(512) == "512 B"
    assert stats.fmt_ratio(0.333) == "0.33x"
    assert stats.fmt_ratio(None) == "-"
