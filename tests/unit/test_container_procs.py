"""The pure parts of port, top, stats, wait and their command lines."""

from __future__ import annotations

import os

import pytest

from ferry.cli import container_procs as cli
from ferry.engine import container_procs as procs
from ferry.util.errors import UsageError


@pytest.mark.parametrize("nanos, text", [
    (0, "0s"), (999, "999ns"), (1_500, "1.5µs"), (108_323_122, "108.323122ms"), (30_000_000, "30ms"),
    (7_092_325_861, "7.092325861s"), (62_500_000_000, "1m2.5s"), (3_600_000_000_000, "1h0m0s"),
    (3_723_000_000_000, "1h2m3s"), (-2_000_000_000, "-2s"),
])
def test_durations_read_as_go_prints_them(nanos, text):
    assert procs.go_duration(nanos) == text


@pytest.mark.parametrize("words, descriptors", [
    ([], list(procs.TOP_DEFAULT)),
    (["pid", "user", "args", "comm"], ["pid", "user", "args", "comm"]),
    (["pid,user"], ["pid", "user"]),
    (["-ef"], None),
    (["pid", "bogus"], None),
])
def test_top_takes_descriptors_or_hands_the_words_to_ps(words, descriptors):
    assert procs.split_descriptors(words) == descriptors


def test_every_default_descriptor_has_podman_s_header():
    assert [procs.DESCRIPTORS[d] for d in procs.TOP_DEFAULT] == [
        "USER", "PID", "PPID", "%CPU", "ELAPSED", "TTY", "TIME", "COMMAND"]


@pytest.mark.parametrize("text, parsed", [("80", (80, None)), ("80/tcp", (80, "tcp")), ("53/udp", (53, "udp"))])
def test_a_private_port_parses(text, parsed):
    assert procs.parse_private(text) == parsed


@pytest.mark.parametrize("text", ["abc", "", "70000", "-1/tcp"])
def test_a_bad_private_port_is_refused_in_podman_s_words(text):
    with pytest.raises(UsageError, match="strconv.ParseUint"):
        procs.parse_private(text)


def test_wait_conditions_are_podman_s_states():
    assert procs.check_conditions(["running", "stopped"]) == ["running", "stopped"]
    with pytest.raises(UsageError, match="unknown container state: bogus"):
        procs.check_conditions(["bogus"])


@pytest.mark.parametrize("size, human, binary", [
    (0, "0B", "0B"), (999, "999B", "999B"), (532_480, "532.5kB", "520KiB"),
    (25_282_000_000, "25.28GB", "23.55GiB"),
])
def test_sizes_read_as_go_units_prints_them(size, human, binary):
    assert (cli.human_size(size), cli.bytes_size(size)) == (human, binary)


def _sample(**fields):
    base = dict(id="a" * 64, name="web", running=True, at_ns=10_000_000_000, cpu_ns=100_000_000,
                up_ns=10_000_000_000, mem_usage=532_480, mem_limit=25_282_000_000, net_rx=612, net_tx=1086,
                block_read=0, block_write=4096, pids=1)
    return procs.Sample(**{**base, **fields})


def test_a_stats_row_has_podman_s_fields_and_json_keys():
    row = cli.stats_row(_sample())
    assert (row["ID"], row["CPUPerc"], row["AVGCPU"], row["UpTime"]) == ("a" * 12, "1.00%", "1.00%", "100ms")
    assert (row["MemUsage"], row["MemPerc"], row["NetIO"], row["BlockIO"], row["PIDS"]) == (
        "532.5kB / 25.28GB", "0.00%", "612B / 1.086kB", "0B / 4.096kB", "1")
    assert {"id", "name", "cpu_time", "cpu_percent", "avg_cpu", "mem_usage", "mem_percent", "net_io", "block_io",
            "pids"} <= set(row)


def test_cpu_percent_while_streaming_is_over_the_last_interval():
    before = _sample()
    now = _sample(at_ns=before.at_ns + 1_000_000_000, cpu_ns=before.cpu_ns + 500_000_000)
    assert cli.stats_row(now, before)["CPUPerc"] == "50.00%"


def test_a_stopped_container_s_row_is_all_zero():
    row = cli.stats_row(_sample(running=False, cpu_ns=0, up_ns=0, mem_usage=0, mem_limit=0, net_rx=0, net_tx=0,
                                block_write=0, pids=0))
    assert (row["CPUPerc"], row["MemUsage"], row["MemPerc"], row["UpTime"], row["PIDS"]) == (
        "0.00%", "0B / 0B", "0.00%", "0s", "0")


def _parse(*argv):
    from ferry.cli.main import build_parser
    return build_parser(argv[0]).parse_args(list(argv))


def test_top_keeps_ps_flags_after_the_container():
    args = _parse("top", "web", "-ef")
    assert (args.container, args.descriptors) == ("web", ["-ef"])


@pytest.mark.parametrize("argv", [("events", "--stream=false"), ("events", "--stream", "false")])
def test_events_stream_takes_false(argv):
    assert _parse(*argv).stream is False


def test_events_streams_by_default_and_is_top_level_only():
    assert _parse("events").stream is True
    with pytest.raises(UsageError):
        _parse("container", "events")


@pytest.mark.parametrize("verb", ["port", "top", "stats", "rename", "wait", "pause", "unpause"])
def test_each_verb_is_taken_under_container_too(verb):
    assert _parse("container", verb).handler is _parse(verb).handler


def test_a_process_reads_from_proc():
    me = procs._process(os.getpid())
    assert me.host_pid == os.getpid() and me.uid == os.geteuid() and me.args
