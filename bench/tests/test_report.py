"""bench.report renders markdown from results documents (pure parts only)."""

import json
import os

from bench import report
from bench.tests.test_stats import run_samples, sample


def document(samples, mode="full"):
    return {"mode": mode, "date": "2026-01-02T03:04:05", "seconds": 120,
            "environment": {"kernel": "6.18", "cpus": 2, "criu": "4.2.1", "runc": "runc version 1.1.5",
                            "podman": {"Client": {"Version": "4.3.1"}}, "ferry_commit": "abc" * 14},
            "samples": samples, "failures": [{"workload": "nginx", "engine": "podman", "step": "gap",
                                              "rep": 1, "error": "podman checkpoint failed\nmore"}],
            "notes": ["a note"]}


def test_results_table_has_a_row_per_workload_and_metric():
    doc = document(run_samples())
    text = report.render((doc, "bench/results/x.json"), None, None, {"full": "benchmarks.png"})
    assert "| redis-1g | checkpoint to archive | 2.50 s | 2.00 s | - | - | - | 6.00 s | 5.00 s | 0.42x | " \
           "1.39x (floor 1.80 s) |" in text
    assert "| ps-20 | ps with 20 containers | 200 ms |" in text
    assert "![ferry vs podman](benchmarks.png)" in text
    assert "podman 4.3.1" in text and "CRIU 4.2.1" in text


def test_targets_and_failures_are_reported():
    text = report.render((document(run_samples()), "r.json"), None, None, {})
    assert "| restore from archive <= 0.15x podman | redis-1g | 0.10x | yes |" in text
    assert "| client gap <= 0.3x podman | redis-1g | 0.40x | **no** |" in text
    assert "nginx / podman / gap (repeat 1): `podman checkpoint failed`" in text
    assert "- a note" in text


def test_gap_details_show_whether_the_connection_survived():
    samples = [sample("redis-1g", "ferry", "gap", 2.0, downtime=1.5, kept_connection=True,
                      client={"persistent": True}),
               sample("redis-1g", "podman", "gap", 9.0, downtime=10.0, kept_connection=False,
                      client={"persistent": True})]
    text = report.gap_table(samples)
    assert "| redis-1g | ferry | 2.00 s | 1.50 s | kept in 1/1 | 500 ms |" in text
    assert "| redis-1g | podman | 9.00 s | 10.00 s | kept in 0/1 | -1.00 s |" in text


def test_phases_table_uses_ferry_phase_medians():
    samples = [sample("redis-1g", "ferry", "checkpoint_archive", 3.0,
                      phases={"runc_checkpoint": 1_000_000, "stop": 500_000, "archive_write": 1_500_000}),
               sample("redis-1g", "ferry", "restore_archive", 2.0,
                      phases={"archive_read": 700_000, "runc_restore": 1_200_000})]
    from bench import stats
    text = report.phases_table(samples, stats.summarise(samples))
    assert "| redis-1g | zstd | 1.00 s | 500 ms | - | - | - | 1.50 s | 700 ms | - | 1.20 s |" in text


def test_quick_and_profile_sections():
    quick = document([sample("redis-256m", "ferry", "checkpoint_archive", 1.0),
                      sample("redis-256m", "podman", "checkpoint_archive", 2.0)], mode="quick")
    profile = {"kind": "profile", "date": "2026-01-02", "rate": 100, "description": "d.",
               "runs": [{"title": "checkpoint", "wall": 3.0, "samples": 300, "phases": {"stop": 400000},
                         "top": [{"frame": "checkpoint (ferry/engine/checkpoints.py)", "seconds": 2.5,
                                  "share": 0.83}]}],
               "findings": ["stop waits 0.4 s"]}
    text = report.render(None, (quick, "q.json"), (profile, "p.json"), {})
    assert "## Quick run" in text and "measured at redis-256m" in text
    assert "| `checkpoint (ferry/engine/checkpoints.py)` | 2.50 | 83% |" in text
    assert "- stop waits 0.4 s" in text
    assert "## Full run" not in text


def test_no_results_at_all():
    assert "No results yet" in report.render(None, None, None, {})


def test_failure_reason_prefers_criu_errors_over_the_rlimit_noise():
    error = ("podman checkpoint x: exit 125\nError: `/usr/bin/runc checkpoint` failed\nCRIU log: /p/dump.log:\n"
             "(00.025917) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self\n"
             "(00.136661) Error (criu/sk-inet.c:185): inet: In-flight connection (l) for 56474\n")
    assert report.failure_reason(error) == "Error (criu/sk-inet.c:185): inet: In-flight connection (l) for 56474"
    assert report.failure_reason("ferry restore x: exit 125\nferry: error: IP 10.90.0.2 is already leased") \
        == "ferry: error: IP 10.90.0.2 is already leased"
    assert report.failure_reason("just one line") == "just one line"


def test_newest_run_is_chosen_by_its_recorded_date_not_the_file_time(tmp_path, monkeypatch):
    """A clone gives every results file the same mtime; the run's own date decides."""
    monkeypatch.setattr(report, "RESULTS", str(tmp_path))
    for name, date in (("2026-11-26-211519.json", "2026-11-26T21:15:19"), ("2026-11-26.json", "2026-11-26T20:24:19"),
                       ("2026-11-26-quick.json", "2026-11-26T19:35:13")):
        (tmp_path / name).write_text(json.dumps({"mode": "quick" if "quick" in name else "full", "date": date}))
        os.utime(tmp_path / name, (1000, 1000))
    assert os.path.basename(report.newest("20*.json", "quick")) == "2026-11-26-211519.json"


def new_rows_samples():
    out = []
    for rep in range(3):
        out += [sample("commands", "ferry", "inspect", 0.06 + rep * 0.01, rep),
                sample("commands", "podman", "inspect", 0.04, rep),
                sample("commands", "ferry", "logs", 0.035, rep), sample("commands", "podman", "logs", 0.035, rep),
                sample("commands", "ferry", "images", 0.03, rep), sample("commands", "podman", "images", 0.04, rep),
                sample("busybox-httpd", "ferry", "run_to_answer", 0.25, rep, command=0.24, attempts=1),
                sample("busybox-httpd", "podman", "run_to_answer", 0.2, rep, command=0.19, attempts=1),
                sample("busybox-httpd", "ferry", "rm_running", 0.3, rep),
                sample("busybox-httpd", "podman", "rm_running", 0.2, rep),
                sample("nginx", "ferry", "run_to_answer", 0.3, rep),
                sample("nginx", "podman", "run_to_answer", 0.4, rep),
                sample("redis-2g", "ferry", "rss_anon_sum_checkpoint", 100.0 + rep, rep, per_process_mib={"1 cli": 99}),
                sample("redis-2g", "ferry", "rss_anon_sum_restore", 140.0 + rep * 10, rep)]
    return out


def test_new_rows_and_targets_are_rendered():
    text = report.render((document(run_samples() + new_rows_samples()), "r.json"), None, None, {})
    assert "| commands | inspect NAME (1 running busybox) | 70 ms | 60 ms | - | - | - | 40 ms | 40 ms | 1.75x | - |" in text
    assert "| commands | logs NAME (100 lines) | 35 ms |" in text and "| commands | images | 30 ms |" in text
    assert "| busybox-httpd | run -d until the service answers a GET | 250 ms |" in text
    assert "| busybox-httpd | rm -f of the running container | 300 ms | 300 ms | - | - | - | 200 ms | 200 ms | 1.50x " \
           "| - |" in text
    assert "| redis-2g | ferry peak RssAnon, sum of its processes: checkpoint to archive | 101.0 MiB | 100.0 MiB | - " \
           "| - | - | - | - | - | - |" in text
    assert "| ferry inspect <= podman inspect | commands | 1.75x | **no** |" in text
    assert "| ferry images <= podman images | commands | 0.75x | yes |" in text
    assert "| run -d until the service answers <= podman | busybox-httpd | 1.25x | **no** |" in text
    assert "| run -d until the service answers <= podman | nginx | 0.75x | yes |" in text
    assert "<= 150 MiB | redis-2g (the largest over both commands and all repeats) | 160.0 MiB | **no** |" in text
    # The results table keeps the order: the new workload after ps.
    assert text.index("| ps-20 | ps with 20 containers") < text.index("| commands | inspect NAME")


def test_a_results_file_from_before_the_new_rows_still_renders():
    """Old results have none of the new metrics: their rows and targets are simply absent."""
    path = os.path.join(report.RESULTS, "2026-11-26-211519.json")
    if not os.path.exists(path):
        import pytest
        pytest.skip("the stored full run is not in this checkout")
    text = report.render((report.load(path), "old.json"), None, None, {})
    assert "| redis-1g | checkpoint to archive |" in text
    assert "| run -d until" not in text and "| commands |" not in text and "ferry peak RssAnon, sum" not in text
    assert "| restore from archive <= 0.15x podman | redis-2g |" in text
    assert "| checkpoint to archive <= podman | busybox-httpd |" in text
    assert "during checkpoint and restore <= 150 MiB | redis-2g (the largest over both commands and all repeats) " \
           "| - | n/a |" in text


def none_and_leave_running_samples(workload="redis-1g"):
    """ferry-none's and ferry-age's archive rounds and both engines' --leave-running exports, on top of
    run_samples()."""
    out = []
    for rep, (ck, rs, frozen_f, frozen_p) in enumerate([(2.0, 1.5, 0.9, 0.8), (2.2, 1.6, 1.1, 0.7),
                                                        (2.1, 1.4, 1.0, 0.9)]):
        out += [sample(workload, "ferry-none", "checkpoint_archive", ck, rep,
                       phases={"runc_checkpoint": 1_500_000, "archive_write": 400_000}),
                sample(workload, "ferry-none", "restore_archive", rs, rep, phases={"archive_read": 300_000}),
                sample(workload, "ferry-none", "archive_size", 1.1 * 2**30, rep),
                sample(workload, "ferry-age", "checkpoint_archive", (2.7, 2.8, 2.75)[rep], rep),
                sample(workload, "ferry-age", "restore_archive", (3.0, 3.1, 3.2)[rep], rep),
                sample(workload, "ferry", "criu_dump_leave_running", frozen_f, rep),
                sample(workload, "podman", "criu_dump_leave_running", frozen_p, rep)]
    return out


def test_ferry_none_and_leave_running_rows_and_targets_are_rendered():
    text = report.render((document(run_samples() + none_and_leave_running_samples()), "r.json"), None, None, {})
    # ferry-none has its own column, and its ratio to the floor (1.8 s) sits next to ferry's.
    assert "| redis-1g | checkpoint to archive | 2.50 s | 2.00 s | - | 2.10 s | 2.75 s | 6.00 s | 5.00 s | 0.42x | " \
           "1.39x (ferry-none 1.17x; floor 1.80 s) |" in text
    assert "| redis-1g | archive size | 80 B | 80 B | - | 1.1 GiB | - | 100 B |" in text
    assert "| redis-1g | CRIU frozen time (--leave-running export) | 1.00 s | 900 ms | - | - | - | 800 ms | 700 ms | " \
           "1.25x | - |" in text
    assert "| export --compress none <= 1.15x CRIU floor | redis-1g | 1.17x | **no** |" in text
    assert "| CRIU frozen time (--leave-running export) <= podman | redis-1g | 1.25x | **no** |" in text
    # ferry-age against ferry's own zstd rounds, in the same run: 2.75 / 2.50 s, and its restore.
    assert "| age-encrypted checkpoint <= 1.15x unencrypted | redis-1g | 1.10x | yes |" in text
    assert "| age-encrypted restore <= 1.15x unencrypted | redis-1g |" in text
    # The phases table has a row for the plain tar.
    assert "| redis-1g | none | 1.50 s | - | - | - | - | 400 ms | 300 ms | - | - |" in text


def test_quick_run_measures_ferry_none_at_its_largest_redis():
    samples = [sample("redis-256m", "ferry", "checkpoint_local", 0.7),
               sample("redis-256m", "podman", "checkpoint_local", 0.6),
               sample("redis-256m", "ferry", "checkpoint_archive", 1.0),
               sample("redis-256m", "podman", "checkpoint_archive", 2.4),
               sample("redis-256m", "ferry-none", "checkpoint_archive", 0.66)]
    text = report.render(None, (document(samples, mode="quick"), "q.json"), None, {})
    assert "| export --compress none <= 1.15x CRIU floor | redis-256m (measured at redis-256m; the target is at " \
           "redis-1g) | 1.10x | yes |" in text
