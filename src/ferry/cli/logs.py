"""`ferry logs` (and `ferry container logs`): podman's flags --follow, --latest,
--names, --since, --until, --tail and --timestamps, over the k8s-file log that
each container's monitor writes (`TIME stdout|stderr F|P TEXT`), checked
against podman 4.3.1."""

from __future__ import annotations

import argparse
import sys

from ferry.cli.parsing import engine_of
from ferry.util.errors import NotFound, Several, UsageError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, which costs `ferry ps` 4 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ferry.engine.listing import Listing

LOG_FOLLOW_POLL = 0.1
SHORT_ID = 12
SECOND_NS = 1_000_000_000
STREAMS = (b"stdout", b"stderr")
TAGS = (b"F", b"P")
TIME_FORMS = ("an RFC 3339 time (2006-01-02T15:04:05.999999999Z07:00, the zone optional: UTC), "
              "a date (2006-01-02), Unix seconds (1700000000.5) or a Go duration (10m, 1h30m)")


class Entry:
    """One entry of the log; `partial` (P) when its line goes on in the next
    entry of its stream. (Not a namedtuple: making one cost this module's
    import, which `ferry ps` pays, 0.2 ms.)"""
    __slots__ = ("stamp", "stream", "partial", "text")

    def __init__(self, stamp: bytes, stream: bytes, partial: bool, text: bytes):
        self.stamp, self.stream, self.partial, self.text = stamp, stream, partial, text

    def __eq__(self, other) -> bool:
        return isinstance(other, Entry) and (self.stamp, self.stream, self.partial, self.text) == \
            (other.stamp, other.stream, other.partial, other.text)

    def __repr__(self) -> str:
        return f"Entry({self.stamp!r}, {self.stream!r}, {self.partial!r}, {self.text!r})"


def add_logs(sub) -> None:
    p = sub.add_parser("logs", help="show containers' output")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new output until the containers exit (or --until passes)")
    p.add_argument("-l", "--latest", action="store_true", help="the container created last")
    p.add_argument("-n", "--names", action="store_true",
                   help="with several containers, start each line with its container's name, not its ID")
    p.add_argument("--since", metavar="TIME", default="",
                   help=f"only output logged after TIME: {TIME_FORMS} before now")
    p.add_argument("--until", metavar="TIME", default="",
                   help="only output logged before TIME, in the forms of --since; a duration is after now")
    p.add_argument("--tail", type=line_count, default=None, metavar="N",
                   help="only the last N lines of each container (all when negative), before --since/--until")
    p.add_argument("-t", "--timestamps", action="store_true", help="start each entry with its time")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(handler=cmd_logs)
    # A value like -10m (--since -10m: ten minutes from now) is a value, as pflag takes
    # it; argparse takes only plain negative numbers (--tail -1) for values.
    import re
    p._negative_number_matcher = re.compile(r"-\.?\d")


def line_count(text: str) -> int | None:
    """--tail's N; None (all lines) when negative, as podman's -1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    return None if value < 0 else value


def time_bound(flag: str, text: str, *, since: bool, now_ns: int | None = None) -> int | None:
    """--since or --until in nanoseconds since the epoch; None when not given (empty)."""
    if not text:
        return None
    from ferry.util.timefmt import podman_time_ns
    try:
        return podman_time_ns(text, since=since, now_ns=now_ns)
    except ValueError:
        raise UsageError(f"parsing {flag} {text!r}: unable to interpret time value",
                         hint=f"use {TIME_FORMS} {'before' if since else 'after'} now") from None


# ---- handler -----------------------------------------------------------------

def cmd_logs(args) -> int:
    if args.latest and args.containers:
        raise UsageError("--latest and containers cannot be used together", hint="see 'ferry logs --help'")
    if not args.latest and not args.containers:
        raise UsageError("specify at least one container name or ID to log", hint="see 'ferry logs --help'")
    # Before any lookup, as podman: a bad value fails whatever the names.
    since = time_bound("--since", args.since, since=True)
    until = time_bound("--until", args.until, since=False)
    listing = engine_of(args).listing
    sources = _sources(listing, args)
    show = Printer(timestamps=args.timestamps, since=since, until=until,
                   prefixes=len(sources) > 1)
    try:
        show(merge([tail(s.read(), args.tail) for s in sources], sources))
        if args.follow:
            _follow(listing, sources, show, until)
    finally:
        for source in sources:
            source.close()
    return 0


def _sources(listing: Listing, args) -> list[Source]:
    """The logs of the named containers (or the latest one); every missing name
    fails the command, before anything is printed (as podman)."""
    if args.latest:
        created = listing.containers(all_states=True)
        if not created:
            raise NotFound("there is no container to show the logs of", hint="see 'ferry ps -a'")
        names = [created[-1].id]
    else:
        names = args.containers
    sources, missing = [], []
    for name in names:
        try:
            container_id, path = listing.log_path(name)
            label = container_id[:SHORT_ID]
            if args.names and len(names) > 1:
                label = listing.record(container_id).name
            sources.append(Source(container_id, label, path))
        except NotFound as error:
            missing.append(error)
    if len(missing) > 1:
        raise Several(missing)
    if missing:
        raise missing[0]
    return sources


def _follow(listing: Listing, sources: list[Source], show: Printer, until: int | None) -> None:
    """Print what the logs gain until every container has stopped running, or
    until --until has passed: nothing logged later could show then."""
    import time

    from ferry.engine.listing import RUNNING
    live = {s.container_id for s in sources}
    while True:
        if until is not None and time.time_ns() >= until:
            live = set()
        else:
            live = {container_id for container_id in live if _running(listing, container_id, RUNNING)}
        if not live:   # one last read: what it wrote before it stopped
            show(merge([s.read() for s in sources], sources))
            return
        time.sleep(LOG_FOLLOW_POLL)
        show(merge([s.read() for s in sources], sources))


def _running(listing: Listing, container_id: str, running: str) -> bool:
    try:
        return listing.record(container_id).state == running
    except NotFound:   # removed meanwhile (rm, --rm): its log is read to the end through the open file
        return False


# ---- the log file ------------------------------------------------------------

class Source:
    """One container's log, read from where the last read stopped. The file
    stays open, so that the end of a --rm container's log, whose directory its
    cleanup removes, is still read."""

    def __init__(self, container_id: str, label: str, path: str):
        self.container_id, self.label, self.path = container_id, label, path
        self.file = None
        self.rest = b""   # an entry not yet ended by its \n

    def read(self) -> list[Entry]:
        if self.file is None:
            try:
                self.file = open(self.path, "rb")
            except FileNotFoundError:   # never started: nothing logged yet
                return []
        data = self.rest + self.file.read()
        end = data.rfind(b"\n") + 1
        self.rest = data[end:]
        return parse_entries(data[:end])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def parse_entries(data: bytes) -> list[Entry]:
    """The entries of whole log lines. Entries end at \\n only: a lone \\r (a
    progress bar, a terminal's \\r\\n) is text, as podman prints it."""
    entries = []
    for raw in data.split(b"\n")[:-1]:
        fields = raw.split(b" ", 3)
        if len(fields) < 3 or not fields[0] or fields[1] not in STREAMS or fields[2] not in TAGS:
            continue   # not an entry (a damaged line)
        entries.append(Entry(fields[0], fields[1], fields[2] == b"P", fields[3] if len(fields) == 4 else b""))
    return entries


def tail(entries: list[Entry], lines: int | None) -> list[Entry]:
    """The entries of the last `lines` lines (all with None). A line is one
    stream's partial (P) entries and the full (F) one that ends it, or a partial
    one at the end; lines count in the order they end."""
    if lines is None:
        return entries
    if lines == 0:
        return []
    line_of: list[int] = []
    ends: list[int] = []           # per line: its last entry's index
    open_line: dict[bytes, int] = {}
    for index, entry in enumerate(entries):
        line = open_line.get(entry.stream)
        if line is None:
            line = len(ends)
            ends.append(index)
        ends[line] = index
        if entry.partial:
            open_line[entry.stream] = line
        else:
            open_line.pop(entry.stream, None)
        line_of.append(line)
    kept = set(sorted(range(len(ends)), key=ends.__getitem__)[-lines:])
    return [entry for entry, line in zip(entries, line_of) if line in kept]


class Stamps:
    """Log stamps read and shown fast. Entries come in order, so the seconds
    part of the last stamp is kept: --since over a 200,000-entry log (15 MB)
    took 1.7 s with a full parse of each stamp, 0.5 s so."""

    pattern = None
    last_key: tuple[bytes, bytes] | None = None
    last_seconds = 0

    @classmethod
    def match(cls, stamp: bytes):
        if cls.pattern is None:
            import re
            # RFC 3339 as conmon (+00:00) and ferry's monitor (Z) write it.
            cls.pattern = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
        return cls.pattern.fullmatch(stamp)

    @classmethod
    def time(cls, stamp: bytes) -> int | None:
        """Nanoseconds since the epoch; None for a damaged stamp."""
        if len(stamp) in (30, 35) and stamp[19:20] == b"." and stamp[20:29].isdigit():
            head, fraction, zone = stamp[:19], stamp[20:29], stamp[29:]   # the usual: nanoseconds
        else:
            match = cls.match(stamp)
            if match is None:
                return None
            head, fraction, zone = match.groups()
        if (head, zone) != cls.last_key:
            from ferry.util.timefmt import go_time_ns
            try:   # the head and the zone are checked here
                cls.last_seconds = go_time_ns((head + zone).decode("ascii"), zone_required=True) // SECOND_NS
            except (ValueError, UnicodeDecodeError):
                return None
            cls.last_key = (head, zone)
        return cls.last_seconds * SECOND_NS + (int(fraction.ljust(9, b"0")) if fraction else 0)

    @classmethod
    def shown(cls, stamp: bytes) -> bytes:
        """As Go's RFC3339Nano prints it (podman's -t): no trailing zeros in the
        fraction, and a zero offset as Z; a damaged stamp as it is."""
        match = cls.match(stamp)
        if match is None:
            return stamp
        fraction = (match.group(2) or b"").rstrip(b"0")
        zone = b"Z" if match.group(3) in (b"Z", b"+00:00", b"-00:00") else match.group(3)
        return match.group(1) + (b"." + fraction if fraction else b"") + zone


def entry_time(entry: Entry) -> int | None:
    """An entry's time in nanoseconds since the epoch; None when its stamp is damaged."""
    return Stamps.time(entry.stamp)


def merge(logs: list[list[Entry]], sources: list[Source]) -> Iterable[tuple[Source, Entry]]:
    """(source, entry) pairs: one log's in its order; several logs' by time, as
    podman's `logs -f a b` shows them as they came."""
    if len(logs) == 1:
        return ((sources[0], entry) for entry in logs[0])
    import heapq
    timed = ([(entry_time(e) or 0, i, n, e) for n, e in enumerate(log)] for i, log in enumerate(logs))
    return ((sources[i], e) for _, i, _, e in heapq.merge(*timed))


class Printer:
    """Writes entries as podman does: `[ID|NAME ][TIME ]TEXT`, a newline after
    a full entry only, stdout's to stdout and stderr's to stderr."""

    def __init__(self, *, timestamps: bool, since: int | None, until: int | None, prefixes: bool):
        self.timestamps, self.since, self.until, self.prefixes = timestamps, since, until, prefixes

    def wanted(self, entry: Entry) -> bool:
        """--since and --until, both exclusive; each entry by its own time (a
        partial line's pieces each by theirs)."""
        if self.since is None and self.until is None:
            return True
        when = entry_time(entry)
        return when is not None and (self.since is None or when > self.since) \
            and (self.until is None or when < self.until)

    def __call__(self, entries: Iterable[tuple[Source, Entry]]) -> None:
        out, err = sys.stdout.buffer, sys.stderr.buffer
        last = None
        for source, entry in entries:
            if not self.wanted(entry):
                continue
            stream = out if entry.stream == b"stdout" else err
            if last is not None and stream is not last:
                last.flush()   # the two streams interleave on a terminal as they were logged
            last = stream
            stream.write(self.render(source, entry))
        out.flush()
        err.flush()

    def render(self, source: Source, entry: Entry) -> bytes:
        head = source.label.encode() + b" " if self.prefixes else b""
        if self.timestamps:
            head += Stamps.shown(entry.stamp) + b" "
        return head + entry.text + (b"" if entry.partial else b"\n")
