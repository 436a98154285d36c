"""ferry's event records, which `ferry events` reads: written by the commands
themselves, as there is no daemon.

They go to an append-only file of JSON lines under the root (ROOT/logs/events.log),
as podman's "file" events backend keeps them: one write(2) of one line per event,
with O_APPEND, so that commands running at once never interleave a line, and no
lock or database transaction slows the command that reports. When the file passes
MAX_BYTES it becomes events.log.1 (the one before goes), which bounds the records
at twice that.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import NamedTuple

EVENTS_DIR = "logs"
EVENTS_FILE = "events.log"
MAX_BYTES = 1 << 20        # about 4,000 events a file
MAX_LINE = 16 << 10        # a line longer than this (hostile labels) is cut to its essentials
FOLLOW_POLL = 0.25         # seconds between looks at the file while following it


class Event(NamedTuple):
    time_ns: int
    type: str              # container, image...
    status: str            # create, start, died...
    id: str
    name: str
    image: str
    attributes: dict
    exit_code: int | None = None   # died: podman's ContainerExitCode

    def to_json(self) -> str:
        data = {"t": self.time_ns, "type": self.type, "status": self.status, "id": self.id, "name": self.name,
                "image": self.image, "attributes": self.attributes}
        if self.exit_code is not None:
            data["exit_code"] = self.exit_code
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> "Event | None":
        """The event on one line, or None for a line that is not one (a torn or foreign line)."""
        try:
            data = json.loads(line)
            attributes = data.get("attributes") or {}
            event = cls(int(data["t"]), str(data["type"]), str(data["status"]), str(data.get("id", "")),
                        str(data.get("name", "")), str(data.get("image", "")),
                        {str(k): str(v) for k, v in attributes.items()} if isinstance(attributes, dict) else {},
                        data["exit_code"] if isinstance(data.get("exit_code"), int) else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return event


def events_path(layout) -> str:
    return os.path.join(layout.root, EVENTS_DIR, EVENTS_FILE)


def record(layout, action: str, *, kind: str = "container", id: str = "", name: str = "",
           image: str = "", attributes: dict | None = None) -> None:
    """Note that `action` (create, start, died, checkpoint, restore...) happened to
    the `kind` object; never fails the command that reports it. A died event's
    exit code comes as attributes["exit_code"] (an int)."""
    try:
        import time
        attributes = dict(attributes or {})
        code = attributes.pop("exit_code", None)
        event = Event(time.time_ns(), kind, action, id, name, image,
                      {str(k): str(v) for k, v in attributes.items()}, code if isinstance(code, int) else None)
        line = event.to_json()
        if len(line) > MAX_LINE:
            line = event._replace(attributes={}).to_json()[:MAX_LINE]
        _append(events_path(layout), (line + "\n").encode())
    except Exception as error:   # an event is a record of the command's work, never a reason for it to fail
        with contextlib.suppress(Exception):
            from ferry.util.log import get_logger
            get_logger("ferry.events").debug("cannot record the %s event of %s: %s", action, id[:12], error)


def note(layout, container, action: str, **attributes) -> None:
    """record() of a container (engine.containers' Container): its name, image and labels."""
    try:
        labels = dict(container.config.extras.labels)
        record(layout, action, id=container.id, name=container.name, image=container.config.image,
               attributes={**labels, **attributes})
    except Exception:   # never the reason a command fails
        pass


def note_by(service, container, action: str, **attributes) -> None:
    """note() through the service (engine.containers) that holds the root's layout."""
    try:
        layout = service.layout
    except AttributeError:   # a stand-in without a root records nothing
        return
    note(layout, container, action, **attributes)


def _append(path: str, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        if os.fstat(fd).st_size > MAX_BYTES:
            _rotate(fd, path)
    finally:
        os.close(fd)


def _rotate(fd: int, path: str) -> None:
    """events.log becomes events.log.1, by one of the commands that find it full:
    the one that gets the file's lock, if the file is still the full one."""
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return   # another command rotates it
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.replace(path, path + ".1")
    except OSError:
        pass


# ---- reading ---------------------------------------------------------------------------------------

def read(layout) -> list[Event]:
    """Every recorded event, oldest first."""
    path = events_path(layout)
    events: list[Event] = []
    for each in (path + ".1", path):
        with contextlib.suppress(OSError), open(each, errors="replace") as f:
            events += [e for e in map(Event.from_json, f) if e is not None]
    events.sort(key=lambda e: e.time_ns)   # the stamp is taken before the write: near ties may cross
    return events


def follow(layout, stop_ns: int | None = None) -> Iterator[Event]:
    """Events as they are recorded from now on (until `stop_ns`, when given), by
    looking at the file every FOLLOW_POLL seconds; a rotation is followed.
    "From now" is from this call, not from the first look."""
    path = events_path(layout)
    return _follow(path, _open(path, at_end=True), stop_ns)


def _follow(path: str, f, stop_ns: int | None) -> Iterator[Event]:
    import time
    pending = b""   # a line still being written
    try:
        while stop_ns is None or time.time_ns() < stop_ns:
            if f is None:
                f = _open(path)
            if f is not None:
                rotated = _replaced(f, path)   # looked at first: what was written before it is read below
                pending += f.read()
                *lines, pending = pending.split(b"\n")
                for text in lines:
                    event = Event.from_json(text.decode(errors="replace"))
                    if event is not None and (stop_ns is None or event.time_ns < stop_ns):
                        yield event
                if rotated:
                    f.close()
                    f, pending = _open(path), b""
                    continue
            time.sleep(FOLLOW_POLL)
    finally:
        if f is not None:
            f.close()


def _open(path: str, *, at_end: bool = False):
    try:
        f = open(path, "rb")
    except OSError:
        return None
    if at_end:
        f.seek(0, os.SEEK_END)
    return f


def _replaced(f, path: str) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
    except OSError:
        return True


# ---- podman's shapes ---------------------------------------------------------------------------------

def go_time(time_ns: int) -> str:
    """Go's time.Time.String() in UTC: '2026-12-01 03:14:29.083857198 +0000 UTC'."""
    import time
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    fraction = f"{nanos:09d}".rstrip("0")
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + (f".{fraction}" if fraction else "") \
        + " +0000 UTC"


def rfc3339_nano(time_ns: int) -> str:
    """Go's RFC3339Nano in UTC: '2026-12-01T03:14:29.083857198Z'."""
    import time
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    fraction = f"{nanos:09d}".rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + (f".{fraction}" if fraction else "") + "Z"


def line(event: Event) -> str:
    """podman's default line: time, type, status, ID, and (image=..., name=..., labels)."""
    head = f"{go_time(event.time_ns)} {event.type} {event.status} {event.id}"
    if event.type != "container":
        return f"{head} {event.name}"
    extras = [f"image={event.image}", f"name={event.name}"] + [f"{k}={v}" for k, v in sorted(event.attributes.items())]
    return f"{head} ({', '.join(extras)})"


def fields(event: Event) -> dict:
    """The fields a --format template sees, every one present (Time as JSON has it)."""
    return {"ID": event.id, "Image": event.image, "Name": event.name, "Status": event.status,
            "Time": rfc3339_nano(event.time_ns), "Type": event.type,
            "Attributes": dict(sorted(event.attributes.items()))}   # a Go map: its keys sorted


def as_json(event: Event) -> dict:
    """podman's JSON of an event: its omitempty fields (ContainerExitCode, an
    empty ID, Image or Name) left out, and an image event's Attributes null,
    as podman never fills them."""
    data: dict = {}
    if event.exit_code is not None and event.exit_code != 0:
        data["ContainerExitCode"] = event.exit_code
    data.update((key, value) for key, value in fields(event).items()
                if value or key not in ("ID", "Image", "Name"))
    if event.type != "container" and not event.attributes:
        data["Attributes"] = None
    return data


class Filters(NamedTuple):
    """--filter KEY=VALUE: values of one key are alternatives, keys must all match."""
    by_key: dict

    @classmethod
    def parse(cls, texts: list[str]) -> "Filters":
        from ferry.util.errors import UsageError
        by_key: dict = {}
        for text in texts:
            key, equals, value = text.partition("=")
            if not equals:
                raise UsageError(f"invalid filter {text!r}: expected KEY=VALUE",
                                 hint="keys: container, event, image, label, type")
            if key not in FILTER_KEYS:
                raise UsageError(f"{key!r} is an invalid filter", hint="keys: container, event, image, label, type")
            by_key.setdefault(key, []).append(value)
        return cls(by_key)

    def match(self, event: Event) -> bool:
        return all(any(FILTER_KEYS[key](event, value) for value in values) for key, values in self.by_key.items())


def _label_matches(event: Event, value: str) -> bool:
    key, equals, wanted = value.partition("=")
    return key in event.attributes and (not equals or event.attributes[key] == wanted)


FILTER_KEYS = {
    "container": lambda e, v: e.type == "container" and (v == e.name or (len(v) >= 1 and e.id.startswith(v))),
    "event": lambda e, v: e.status == v,
    "type": lambda e, v: e.type == v,
    # podman's: image events only, by the name they carry or an ID prefix
    "image": lambda e, v: e.type == "image" and (v == e.name or e.id.startswith(v)),
    "label": _label_matches,
}
