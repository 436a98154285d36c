"""bench.rss: which processes count as ferry's own, and their summed RssAnon
(a fake /proc tree, and real processes started here)."""

import sys

import pytest

from bench import proc, rss

ROOT = "/var/tmp/ferry-bench-x/ferry-root"
PY = "/work/main/.venv/bin/python3"
CLI = [PY, "/work/main/.venv/bin/ferry", "--root", ROOT, "container", "restore", "--import", "a.tar.zst"]
MONITOR = [PY, "-m", "ferry.runtime.monitor", "--container-dir", f"{ROOT}/containers/abc", "--id", "abc"]


def stat_line(pid, comm, ppid, start):
    fields = ["S", str(ppid)] + ["0"] * 17 + [str(start)] + ["0"] * 30   # state, ppid, ..., starttime (22nd)
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def add(tree, pid, argv, ppid, start, rss_kib, comm="python3"):
    d = tree / str(pid)
    d.mkdir(exist_ok=True)
    (d / "stat").write_text(stat_line(pid, comm, ppid, start))
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    status = f"Name:\t{comm}\nState:\tS (sleeping)\nPPid:\t{ppid}\n"
    if rss_kib is not None:
        status += f"VmRSS:\t{rss_kib * 3} kB\nRssAnon:\t{rss_kib} kB\nRssFile:\t{rss_kib * 2} kB\n"
    (d / "status").write_text(status)


def fake_tree(tmp_path):
    tree = tmp_path / "proc"
    tree.mkdir()
    add(tree, 1, ["/sbin/init"], 0, 1, 1000, comm="init")
    add(tree, 50, [PY, "-m", "bench.run"], 1, 500, 500_000)                  # the benchmark: not ferry
    add(tree, 100, CLI, 50, 1000, 40_960)                                     # the CLI: 40 MiB
    add(tree, 101, ["runc", "restore"], 100, 1010, 20_000, comm="runc")       # runc: never counted
    add(tree, 102, [PY, "-m", "ferry.network.hook", "up"], 101, 1020, 2048)    # ferry Python under runc: 2 MiB
    add(tree, 103, CLI, 100, 1030, 40_960)                                    # the CLI forked, not exec'd yet
    add(tree, 104, ["criu", "restore"], 101, 1040, 900_000, comm="criu")       # CRIU: never counted
    add(tree, 200, MONITOR, 1, 1050, 10_240)                                  # its new monitor, daemonized: 10 MiB
    add(tree, 201, MONITOR, 200, 1060, 10_240)                                # the monitor's fork before exec
    add(tree, 300, [PY, "-m", "ferry.runtime.monitor", "--container-dir", f"{ROOT}/containers/old"], 1, 900,
        9_000)                                                                # a monitor older than the CLI
    add(tree, 400, [PY, "/usr/bin/ferry", "--root", "/other/root", "ps"], 1, 1100, 30_000)   # another root's
    add(tree, 500, [PY, "-m", "ferry", "--root", ROOT, "container", "cleanup", "abc"], 1, 1070, None)  # a zombie
    return tree


def test_parse_stat_takes_fields_after_the_last_parenthesis():
    assert rss.parse_stat(stat_line(7, "a) (b c", 3, 12345)) == (3, 12345)


def test_parse_status_reads_rss_anon_in_bytes():
    text = "Name:\tx\nPPid:\t42\nVmRSS:\t3000 kB\nRssAnon:\t1024 kB\nRssFile:\t2000 kB\nRssShmem:\t0 kB\n"
    assert rss.parse_status(text) == {"PPid": 42, "RssAnon": 1024 * 1024}
    assert rss.parse_status("Name:\tkthreadd\nPPid:\t0\n") == {"PPid": 0, "RssAnon": 0}


@pytest.mark.parametrize("argv, expected", [
    (CLI, True), (MONITOR, True), ([PY, "-I", "-m", "ferry", "ps"], True), (["python3", "-m", "ferry.x"], True),
    ([PY, "-m", "bench.run"], False), ([PY, "-m", "ferryish"], False), (["runc", "ferry"], False),
    (["/usr/local/sbin/criu", "restore"], False), ([PY], False), ([], False)])
def test_is_ferry_python(argv, expected):
    assert rss.is_ferry_python(argv) is expected


def test_role_names_the_monitor_and_the_verbs():
    assert rss.role(MONITOR) == "monitor"
    assert rss.role(CLI) == "ferry container restore"
    assert rss.role([PY, "-m", "ferry", "--root", ROOT, "container", "cleanup", "abc"]) == "ferry container cleanup"


def test_fake_tree_counts_the_cli_and_its_ferry_python_processes_only(tmp_path):
    tree = fake_tree(tmp_path)
    found = rss.ProcessTree(100, ROOT, proc_root=str(tree)).sample()
    # The CLI, the ferry hook under runc (a descendant through a non-ferry
    # process), the daemonized monitor. Not: runc, CRIU, the CLI's unexec'd
    # fork, the monitor's fork, a monitor older than the CLI, another root's
    # ferry, the benchmark, a zombie's missing RssAnon (counted as 0).
    assert {pid: kind for pid, (kind, _) in found.items()} == {
        100: "cli", 102: "ferry.network.hook", 200: "monitor", 500: "ferry container cleanup"}
    assert sum(v for _, v in found.values()) == (40_960 + 2048 + 10_240) * 1024


def test_fake_tree_follows_exec_exit_and_reparenting(tmp_path):
    tree = fake_tree(tmp_path)
    processes = rss.ProcessTree(100, ROOT, proc_root=str(tree))
    processes.sample()
    # The CLI's fork execs runc: still not counted. The monitor's first process
    # exits and its fork, reparented to init, becomes the monitor that counts.
    add(tree, 103, ["runc", "checkpoint"], 100, 1030, 5000, comm="runc")
    for name in ("stat", "cmdline", "status"):
        (tree / "200" / name).unlink()
    (tree / "200").rmdir()
    add(tree, 201, MONITOR, 1, 1060, 12_288)
    found = processes.sample()
    assert sorted(found) == [100, 102, 201, 500]
    assert found[201] == ("monitor", 12_288 * 1024)


def test_sampler_peak_is_the_largest_sum_and_keeps_each_processes_largest():
    sampler = rss.Sampler(ROOT)
    sampler.record({1: ("cli", 10 * rss.MIB), 2: ("monitor", 5 * rss.MIB)}, 0.1)
    sampler.record({1: ("cli", 20 * rss.MIB)}, 0.2)
    sampler.record({1: ("cli", 12 * rss.MIB), 2: ("monitor", 6 * rss.MIB)}, 0.3)
    peak = sampler.peak
    assert (peak.sum_mib, peak.at, peak.ticks, peak.max_process_mib) == (20.0, 0.2, 3, 20.0)
    assert peak.as_dict()["per_process_mib"] == {"1 cli": 20.0, "2 monitor": 6.0}


HOLD = """
import os, subprocess, sys, time
data = b"\\x01" * ({mib} << 20)       # written, so resident and anonymous
children = [subprocess.Popen(argv) for argv in {children!r}]
time.sleep({hold})
for child in children:
    child.wait()
"""


def test_real_processes_sum_the_cli_and_its_ferry_python_child(tmp_path):
    """A stand-in CLI holding 48 MiB starts a `ferry` script holding 32 MiB
    (counted) and a plain Python holding 32 MiB (not counted)."""
    script = tmp_path / "ferry"
    script.write_text(HOLD.format(mib=32, children=[], hold=0.6))
    other = [sys.executable, "-c", HOLD.format(mib=32, children=[], hold=0.6)]
    ferry_child = [sys.executable, str(script), "--root", ROOT, "container", "checkpoint", "x"]
    cli = [sys.executable, "-c", HOLD.format(mib=48, children=[ferry_child, other], hold=0.8)]
    sampler = rss.Sampler(ROOT)
    done = proc.run_watched(cli, desc="stand-in CLI", timeout=30, watch=sampler.watch)
    assert done.returncode == 0 and done.seconds >= 0.8
    peak = sampler.peak
    roles = sorted(key.split(" ", 1)[1] for key in peak.per_process)
    assert roles == ["cli", "ferry container checkpoint"], peak.per_process
    assert 80 <= peak.sum_mib < 80 + 40, peak.as_dict()      # 48 + 32 MiB, plus the interpreters' own
    assert 48 <= peak.max_process_mib < 48 + 25
    assert peak.ticks >= 10


def test_run_watched_reports_failure_and_timeout():
    sampler = rss.Sampler(ROOT)
    done = proc.run_watched([sys.executable, "-c", "import sys; sys.exit(3)"], desc="x", timeout=30,
                            watch=sampler.watch, check=False)
    assert done.returncode == 3
    with pytest.raises(proc.BenchError, match="exit 3"):
        proc.run_watched([sys.executable, "-c", "import sys; sys.exit(3)"], desc="x", timeout=30,
                         watch=sampler.watch)
    with pytest.raises(proc.BenchError, match="timed out"):
        proc.run_watched([sys.executable, "-c", "import time; time.sleep(30)"], desc="x", timeout=0.5,
                         watch=sampler.watch)
