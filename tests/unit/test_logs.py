"""`ferry logs` without root: podman's --since/--until values, and the tail,
filters and shapes on synthetic k8s-file logs. The expected values are what
podman 4.3.1 printed for the same log and flags on this machine."""

from __future__ import annotations

import types

import pytest

from ferry.cli import logs
from ferry.cli import main as cli
from ferry.util import timefmt
from ferry.util.errors import NotFound, UsageError

S = timefmt.SECOND_NS
NOW = timefmt.go_time_ns("2026-11-30T20:43:55Z")
T39 = timefmt.go_time_ns("2026-11-30T20:41:39Z")   # 1796071299 s
# podman's own log of `sh -c 'echo a; sleep 1; echo b; sleep 1; printf part; sleep 1; echo ial;
# sleep 1; echo c >&2; echo d'` (conmon writes +00:00; ferry's monitor writes Z).
PODMAN_LOG = (b"2026-11-30T20:41:37.055471930+00:00 stdout F a\n"
              b"2026-11-30T20:41:38.056550725+00:00 stdout F b\n"
              b"2026-11-30T20:41:39.057987641+00:00 stdout P part\n"
              b"2026-11-30T20:41:40.059210517+00:00 stdout F ial\n"
              b"2026-11-30T20:41:41.060854091+00:00 stdout F d\n"
              b"2026-11-30T20:41:41.060894196+00:00 stderr F c\n")


# ---- the values of --since and --until ----------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2026-11-30T20:41:39Z", T39),
    ("2026-11-30T21:41:39+01:00", T39),
    ("2026-11-30T20:41:39-00:00", T39),
    ("2026-11-30T20:41:39", T39),                       # no zone: UTC
    ("2026-11-30T20:41:39.5", T39 + S // 2),
    ("2026-11-30T20:41:39,5", T39 + S // 2),
    ("2026-11-30T21:41:39.5+01:00", T39 + S // 2),
    ("2026-11-30T20:41:39.1234567891Z", T39 + 123456789),   # past nanoseconds: cut
    ("2026-11-30T2:41:39Z", T39 - 18 * 3600 * S),        # Go's `15` takes one digit
    ("2026-11-30", T39 - (20 * 3600 + 41 * 60 + 39) * S),
    ("2026-11-30Z", T39 - (20 * 3600 + 41 * 60 + 39) * S),
    ("2026-11-30+01:00", T39 - (21 * 3600 + 41 * 60 + 39) * S),
    ("1970-01-01", 0),
    ("0000-01-01", -62167219200 * S),
    ("2024-02-29T00:00:00Z", 1709164800 * S),
    ("1796071299", T39),                                 # Unix seconds
    ("1796071299.5", T39 + S // 2),
    ("+1796071299", T39),
    ("1e9", 10 ** 9 * S),
    ("1_000", 1000 * S),
    (".5", S // 2),
    ("-1.5", -3 * S // 2),
    ("0", 0),
    ("-0", 0),
    ("0x1p30", 2 ** 30 * S),
])
def test_since_and_until_take_podman_s_times(text, expected):
    assert timefmt.podman_time_ns(text, since=True, now_ns=NOW) == expected
    assert timefmt.podman_time_ns(text, since=False, now_ns=NOW) == expected


def test_unix_seconds_with_a_fraction_round_as_go_s_float64_does():
    # 1700000000.123 is 1700000000.1229999065... in a float64: Go's int64(frac*1e9) keeps 122999906
    assert timefmt.podman_time_ns("1700000000.123", since=True) == 1700000000 * S + 122999906


@pytest.mark.parametrize("text", ["inf", "-Infinity", "nan", "NaN", "1e300"])
def test_float_words_and_huge_numbers_are_the_far_past_as_go_s_int64_makes_them(text):
    # podman showed every line for --since inf and none for --until inf
    assert timefmt.podman_time_ns(text, since=True) < -(10 ** 18) * S


@pytest.mark.parametrize("text, seconds", [
    ("10m", 600), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400), (".5h", 1800), ("1.h", 3600),
    ("500ms", 0.5), ("5us", 5e-6), ("5\u00b5s", 5e-6), ("5\u03bcs", 5e-6), ("3ns", 3e-9), ("1m1m", 120),
    ("+10m", 600), ("-10m", -600),
])
def test_a_duration_is_before_now_for_since_and_after_now_for_until(text, seconds):
    """podman 4.3.1: --since 10m is ten minutes ago, --until 10m ten minutes from now."""
    ns = round(seconds * S)
    assert timefmt.podman_time_ns(text, since=True, now_ns=NOW) == NOW - ns
    assert timefmt.podman_time_ns(text, since=False, now_ns=NOW) == NOW + ns


@pytest.mark.parametrize("text", [
    "yesterday", "2026-13-01", "2026-02-30", "2026-11-30 20:41:39", "2026-11-30T20:41", "10x",
    "2026-11-30t20:41:39z", "2026-11-30T20:41:39+0100", "2026-11-30T24:00:00Z", "2026-11-30T20:60:00Z",
    "2026-11-30T20:41:60Z", "2026-11-30T20:41:39.Z", "1796071299,5", " 10", "10 ", "1h-30m", "0x10",
    "1e400", "1__0", ".", "-", "h", "1.5", "+nan", "\u0663",
])
def test_values_podman_cannot_interpret_fail(text):
    if text == "1.5":   # a float: Unix seconds, not an error (kept here to show the line)
        assert timefmt.podman_time_ns(text, since=True) == 3 * S // 2
        return
    with pytest.raises(ValueError):
        timefmt.podman_time_ns(text, since=True, now_ns=NOW)


def test_a_bad_value_is_one_usage_line_naming_the_flag():
    with pytest.raises(UsageError) as caught:
        logs.time_bound("--since", "yesterday", since=True)
    assert caught.value.message == "parsing --since 'yesterday': unable to interpret time value"
    assert cli.exit_code_for(caught.value) == 125
    with pytest.raises(UsageError, match="parsing --until '10x'"):
        logs.time_bound("--until", "10x", since=False)
    assert logs.time_bound("--since", "", since=True) is None   # empty: not given, as podman


@pytest.mark.parametrize("text, expected", [
    ("1h", 3600 * S), ("2h45m30.5s", (2 * 3600 + 45 * 60 + 30) * S + S // 2), ("0", 0), ("-0", 0),
    ("1.0000000001s", S), ("0.1s", S // 10), ("2562047h47m16.854775807s", 2 ** 63 - 1),
])
def test_go_durations(text, expected):
    assert timefmt.go_duration_ns(text) == expected


@pytest.mark.parametrize("text", ["", "1", "1x", "1h-1m", ".s", "2562047h47m16.854775808s", "9999999999h"])
def test_go_durations_refused(text):
    with pytest.raises(ValueError):
        timefmt.go_duration_ns(text)


@pytest.mark.parametrize("stamp, shown", [
    ("2026-11-30T20:41:37.055471930+00:00", "2026-11-30T20:41:37.05547193Z"),
    ("2026-11-30T20:41:37.055471000Z", "2026-11-30T20:41:37.055471Z"),   # ferry's monitor: microseconds
    ("2026-11-30T20:41:37.000000000Z", "2026-11-30T20:41:37Z"),
    ("2026-11-30T21:41:37.5+01:00", "2026-11-30T21:41:37.5+01:00"),        # the log's own zone is kept
    ("not-a-time", "not-a-time"),
])
def test_timestamps_print_as_go_s_rfc3339nano(stamp, shown):
    assert timefmt.rfc3339_nano(stamp) == shown


# ---- tail, filters and shapes on synthetic logs --------------------------------

def entries(data: bytes = PODMAN_LOG) -> list:
    return logs.parse_entries(data)


def texts(selected) -> list[bytes]:
    return [e.text for e in selected]


def test_tail_counts_lines_a_partial_entry_belongs_to_its_line():
    """podman 4.3.1 splits a line here (tail 3 gives `ial`, tail 4 `bpart`): ferry keeps it whole."""
    assert texts(logs.tail(entries(), 1)) == [b"c"]
    assert texts(logs.tail(entries(), 2)) == [b"d", b"c"]
    assert texts(logs.tail(entries(), 3)) == [b"part", b"ial", b"d", b"c"]
    assert texts(logs.tail(entries(), 4)) == [b"b", b"part", b"ial", b"d", b"c"]
    assert logs.tail(entries(), None) == entries() and logs.tail(entries(), 0) == []


def test_tail_keeps_each_stream_s_partial_line_with_its_own_end():
    data = (b"T stdout P o1\nT stderr P e1\nT stderr F e2\nT stdout F o2\nT stdout F o3\nT stderr P e3\n")
    assert texts(logs.tail(entries(data), 1)) == [b"e3"]                        # an unended line counts
    assert texts(logs.tail(entries(data), 2)) == [b"o3", b"e3"]
    assert texts(logs.tail(entries(data), 3)) == [b"o1", b"o2", b"o3", b"e3"]   # o1+o2 ended after e1+e2
    assert texts(logs.tail(entries(data), 4)) == [b"o1", b"e1", b"e2", b"o2", b"o3", b"e3"]


def test_damaged_lines_are_skipped():
    data = b"garbage\nT stdout F ok\nT stdin F no\nT stdout X no\n\nT stdout F\nT stdout F  two spaces\n"
    assert texts(entries(data)) == [b"ok", b"", b" two spaces"]


def show(capsysbinary, selected, *, sources=None, **options) -> tuple[bytes, bytes]:
    sources = sources or [logs.Source("f" * 64, "fb5de1f5cbd3", "/nonexistent")]
    options = {"timestamps": False, "since": None, "until": None, "prefixes": len(sources) > 1, **options}
    logs.Printer(**options)(logs.merge(selected, sources))
    captured = capsysbinary.readouterr()
    return captured.out, captured.err


def test_timestamps_shape_is_podman_s(capsysbinary):
    out, err = show(capsysbinary, [entries()], timestamps=True)
    assert out == (b"2026-11-30T20:41:37.05547193Z a\n2026-11-30T20:41:38.056550725Z b\n"
                   b"2026-11-30T20:41:39.057987641Z part2026-11-30T20:41:40.059210517Z ial\n"
                   b"2026-11-30T20:41:41.060854091Z d\n")
    assert err == b"2026-11-30T20:41:41.060894196Z c\n"


def test_since_and_until_are_exclusive(capsysbinary):
    b = timefmt.go_time_ns("2026-11-30T20:41:38.056550725Z")
    assert show(capsysbinary, [entries()], since=b)[0] == b"partial\nd\n"
    assert show(capsysbinary, [entries()], since=b - 1)[0] == b"b\npartial\nd\n"
    assert show(capsysbinary, [entries()], until=b)[0] == b"a\n"
    assert show(capsysbinary, [entries()], until=b + 1)[0] == b"a\nb\n"


def test_each_piece_of_a_partial_line_is_filtered_by_its_own_time(capsysbinary):
    at = timefmt.go_time_ns
    assert show(capsysbinary, [entries()], since=at("2026-11-30T20:41:39.5Z"),
                until=at("2026-11-30T20:41:40.5Z"))[0] == b"ial\n"
    assert show(capsysbinary, [entries()], since=at("2026-11-30T20:41:39Z"),
                until=at("2026-11-30T20:41:39.5Z"))[0] == b"part"   # no newline, as podman
    assert show(capsysbinary, [entries()], since=at("2026-12-01"))[0] == b""


def test_tail_comes_before_the_time_filters(capsysbinary):
    """podman: --tail 2 --until (just after b) shows nothing: the last two lines are later."""
    until = timefmt.go_time_ns("2026-11-30T20:41:38.056550726Z")
    assert show(capsysbinary, [logs.tail(entries(), 2)], until=until) == (b"", b"")
    assert show(capsysbinary, [logs.tail(entries(), 4)], until=until)[0] == b"b\n"


def test_several_containers_prefix_each_entry_and_merge_by_time(capsysbinary):
    other = (b"2026-11-30T20:41:37.5Z stdout F n0\n"
             b"2026-11-30T20:41:39.5Z stdout F n1\n")
    sources = [logs.Source("f" * 64, "fb5de1f5cbd3", "/x"), logs.Source("1" * 64, "1490ab5e5531", "/y")]
    out, err = show(capsysbinary, [entries(), entries(other)], sources=sources)
    assert out == (b"fb5de1f5cbd3 a\n1490ab5e5531 n0\nfb5de1f5cbd3 b\nfb5de1f5cbd3 part"
                   b"1490ab5e5531 n1\nfb5de1f5cbd3 ial\nfb5de1f5cbd3 d\n")
    assert err == b"fb5de1f5cbd3 c\n"
    out, _ = show(capsysbinary, [entries()[:1], entries(other)[:1]], sources=sources, timestamps=True)
    assert out == b"fb5de1f5cbd3 2026-11-30T20:41:37.05547193Z a\n1490ab5e5531 2026-11-30T20:41:37.5Z n0\n"


def test_a_source_reads_whole_entries_as_they_come(tmp_path):
    path = tmp_path / "ctr.log"
    source = logs.Source("f" * 64, "f" * 12, str(path))
    assert source.read() == []                      # not started yet: no file
    path.write_bytes(b"T stdout F one\nT stdout F tw")
    assert texts(source.read()) == [b"one"]
    with open(path, "ab") as f:
        f.write(b"o\nT stderr F three\n")
    path.unlink()                                   # a --rm container's cleanup: the open file still reads
    assert texts(source.read()) == [b"two", b"three"]
    assert source.read() == []
    source.close()


# ---- the command, on a fake listing --------------------------------------------

class FakeListing:
    """The read side of the engine that `logs` uses: names, log paths, states."""

    def __init__(self, tmp_path, containers: dict[str, tuple[bytes, str]]):
        self.rows = {}
        for number, (name, (data, state)) in enumerate(containers.items()):
            container_id = f"{number + 1:x}" * 64
            path = tmp_path / f"{name}.log"
            path.write_bytes(data)
            self.rows[name] = types.SimpleNamespace(id=container_id, name=name, state=state, path=str(path))
        self.state_reads = 0

    def _find(self, name):
        for row in self.rows.values():
            if name in (row.name, row.id):
                return row
        raise NotFound(f"no such container {name!r}", hint="see 'ferry ps -a'")

    def log_path(self, name):
        row = self._find(name)
        return row.id, row.path

    def record(self, name):
        self.state_reads += 1
        return self._find(name)

    def containers(self, *, all_states=False):
        return [r for r in self.rows.values() if all_states or r.state == "running"]


def run_logs(monkeypatch, capsysbinary, listing, *argv):
    monkeypatch.setattr(logs, "engine_of", lambda args: types.SimpleNamespace(listing=listing))
    args = cli.build_parser("logs").parse_args(["logs", *argv])
    code = args.handler(args)
    captured = capsysbinary.readouterr()
    return code, captured.out, captured.err


def test_logs_of_several_containers_by_name(tmp_path, monkeypatch, capsysbinary):
    listing = FakeListing(tmp_path, {"lg-a": (PODMAN_LOG, "exited"),
                                     "lg-b": (b"2026-11-30T20:44:09.767114492Z stdout F n0\n", "exited")})
    code, out, err = run_logs(monkeypatch, capsysbinary, listing, "-n", "--tail", "1", "lg-a", "lg-b")
    assert (code, out, err) == (0, b"lg-b n0\n", b"lg-a c\n")
    code, out, _ = run_logs(monkeypatch, capsysbinary, listing, "--tail=1", "lg-b", "lg-b")
    assert out == b"222222222222 n0\n222222222222 n0\n"     # a name given twice shows twice, as podman
    code, out, _ = run_logs(monkeypatch, capsysbinary, listing, "-n", "lg-b")   # one container: no prefix
    assert out == b"n0\n"
    code, out, _ = run_logs(monkeypatch, capsysbinary, listing, "-l")
    assert out == b"n0\n"


def test_logs_refuse_what_podman_refuses(tmp_path, monkeypatch, capsysbinary):
    listing = FakeListing(tmp_path, {"lg-a": (PODMAN_LOG, "exited")})
    for argv, message in ((["-l", "lg-a"], "--latest and containers cannot be used together"),
                          ([], "specify at least one container name or ID to log"),
                          (["--since", "yesterday", "nosuch"], "parsing --since 'yesterday'")):
        with pytest.raises(UsageError, match=message):
            run_logs(monkeypatch, capsysbinary, listing, *argv)
    with pytest.raises(NotFound, match="nosuch"):   # nothing is printed before the lookup fails
        run_logs(monkeypatch, capsysbinary, listing, "lg-a", "nosuch")
    assert capsysbinary.readouterr() == (b"", b"")


def test_follow_stops_once_until_has_passed(tmp_path, monkeypatch, capsysbinary):
    """A running container: `-f --until` in the past prints what came before and returns
    without polling its state (newer podman stops there too; 4.3.1 waited for the exit)."""
    listing = FakeListing(tmp_path, {"lg-a": (PODMAN_LOG, "running")})
    code, out, _ = run_logs(monkeypatch, capsysbinary, listing, "-f", "--until", "2026-11-30T20:41:38Z", "lg-a")
    assert (code, out, listing.state_reads) == (0, b"a\n", 0)


def test_follow_reads_to_the_end_once_the_container_stops(tmp_path, monkeypatch, capsysbinary):
    listing = FakeListing(tmp_path, {"lg-a": (b"T stdout F one\n", "running")})
    row = listing.rows["lg-a"]
    real_record = listing.record

    def record(name):   # the container writes its last line and exits while logs -f waits
        with open(row.path, "ab") as f:
            f.write(b"T stdout F two\n")
        row.state = "exited"
        return real_record(name)
    listing.record = record
    monkeypatch.setattr(logs, "LOG_FOLLOW_POLL", 0)
    code, out, _ = run_logs(monkeypatch, capsysbinary, listing, "-f", "--tail", "0", "lg-a")
    assert (code, out) == (0, b"two\n")
