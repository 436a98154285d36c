"""ferry's event records: written by the commands, bounded, read back in
podman's shapes, filtered and followed."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from ferry.engine import events
from ferry.store.layout import Layout


@pytest.fixture
def layout(tmp_path):
    return Layout(str(tmp_path / "root"))


def test_a_recorded_event_reads_back_with_its_labels_and_exit_code(layout):
    events.record(layout, "died", id="a" * 64, name="web", image="localhost/busybox:latest",
                  attributes={"tier": "db", "exit_code": 3})
    (event,) = events.read(layout)
    assert (event.type, event.status, event.name, event.image) == ("container", "died", "web",
                                                                    "localhost/busybox:latest")
    assert event.attributes == {"tier": "db"} and event.exit_code == 3
    assert os.stat(events.events_path(layout)).st_mode & 0o777 == 0o600


def test_recording_never_fails_the_command(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    events.record(Layout(str(blocker)), "start", id="x")   # its directory cannot be made: no exception
    assert not os.path.exists(str(blocker / "logs"))


def test_the_file_is_bounded_by_rotation(layout, monkeypatch):
    monkeypatch.setattr(events, "MAX_BYTES", 2000)
    for number in range(200):
        events.record(layout, "start", id=f"{number:064d}", name=f"c{number}")
    path = events.events_path(layout)
    assert os.path.getsize(path) <= 2000 + 400 and os.path.getsize(path + ".1") <= 2000 + 400
    kept = events.read(layout)
    assert kept and kept[-1].name == "c199"
    assert [e.time_ns for e in kept] == sorted(e.time_ns for e in kept)
    assert len(kept) < 200


def test_a_huge_event_is_cut_to_its_essentials(layout):
    events.record(layout, "create", id="b" * 64, name="big", attributes={"x": "y" * 100_000})
    (event,) = events.read(layout)
    assert event.name == "big" and event.attributes == {}


def test_torn_and_foreign_lines_are_skipped(layout):
    events.record(layout, "start", id="c" * 64, name="ok")
    with open(events.events_path(layout), "a") as f:
        f.write("not json\n{\"t\": \"x\"}\n{\"t\": 1, \"type\": \"container\"")
    assert [e.name for e in events.read(layout)] == ["ok"]


def test_podman_s_default_line_and_json_shape():
    event = events.Event(1764558869083857198, "container", "rename", "d" * 64, "k2", "localhost/busybox:latest",
                         {"zz": "1", "aa": "2"})
    assert events.line(event) == (f"2025-12-01 03:14:29.083857198 +0000 UTC container rename {'d' * 64} "
                                  "(image=localhost/busybox:latest, name=k2, aa=2, zz=1)")
    assert list(events.as_json(event)) == ["ID", "Image", "Name", "Status", "Time", "Type", "Attributes"]
    assert events.as_json(event)["Time"] == "2025-12-01T03:14:29.083857198Z"
    assert list(events.as_json(event)["Attributes"]) == ["aa", "zz"]
    died = event._replace(status="died", exit_code=4)
    assert list(events.as_json(died))[0] == "ContainerExitCode"
    assert "ContainerExitCode" not in events.as_json(died._replace(exit_code=0))   # omitempty


@pytest.mark.parametrize("nanos, text", [
    (1764558869000000000, "2025-12-01 03:14:29 +0000 UTC"),
    (1764558869500000000, "2025-12-01 03:14:29.5 +0000 UTC"),
    (1764558869083857190, "2025-12-01 03:14:29.08385719 +0000 UTC"),
])
def test_times_drop_trailing_zeros_as_go_does(nanos, text):
    assert events.go_time(nanos) == text


def _event(**fields):
    base = dict(time_ns=1, type="container", status="start", id="abc123" + "0" * 58, name="web",
                image="localhost/busybox:latest", attributes={"tier": "db"})
    return events.Event(**{**base, **fields})


@pytest.mark.parametrize("filters, matches", [
    (["container=web"], True),
    (["container=abc1"], True),
    (["container=other"], False),
    (["event=start"], True),
    (["event=died", "event=start"], True),
    (["event=start", "container=other"], False),
    (["type=container"], True),
    (["type=image"], False),
    (["image=busybox"], False),   # podman's image filter sees image events only
    (["image=localhost/busybox:latest"], False),
    (["label=tier"], True),
    (["label=tier=db"], True),
    (["label=tier=web"], False),
])
def test_filters_of_one_key_are_alternatives_and_keys_must_all_match(filters, matches):
    assert events.Filters.parse(filters).match(_event()) is matches


@pytest.mark.parametrize("value, matches", [
    ("mine:one", True), ("localhost/mine:one", False), ("mine", False), ("abc1", True), ("abd", False)])
def test_the_image_filter_takes_an_image_event_s_name_as_given_or_an_id_prefix(value, matches):
    tag = _event(type="image", status="tag", name="mine:one", image="", attributes={})
    assert events.Filters.parse([f"image={value}"]).match(tag) is matches


def test_an_image_event_s_json_omits_the_empty_fields_and_its_line_keeps_their_spaces():
    pull = events.Event(1764558869000000000, "image", "pull", "", "quay.io/x:1", "", {})
    assert events.as_json(pull) == {"Name": "quay.io/x:1", "Status": "pull", "Time": "2025-12-01T03:14:29Z",
                                    "Type": "image", "Attributes": None}
    assert events.line(pull) == "2025-12-01 03:14:29 +0000 UTC image pull  quay.io/x:1"
    removed = pull._replace(status="remove", id="a" * 64, name="")
    assert list(events.as_json(removed)) == ["ID", "Status", "Time", "Type", "Attributes"]
    assert events.line(removed).endswith(f"remove {'a' * 64} ")
    assert events.fields(pull)["ID"] == "" and events.fields(pull)["Attributes"] == {}   # a template's view


@pytest.mark.parametrize("by_name, lines, expected", [
    ("localhost/a:1", ["Untagged: localhost/a:1"], [("untag", "localhost/a:1"), ("remove", "localhost/a:1")]),
    (None, ["Untagged: localhost/a:1", "Untagged: localhost/b:2", "Deleted: " + "f" * 64],
     [("untag", "localhost/a:1"), ("untag", "localhost/b:2"), ("remove", "")]),
    (None, ["Deleted: " + "f" * 64], [("remove", "")]),
])
def test_a_removal_is_podman_s_untags_then_one_remove(by_name, lines, expected):
    from ferry.engine.images import removal_events
    assert removal_events(by_name, lines) == expected


@pytest.mark.parametrize("bad", ["bogus=x", "container"])
def test_bad_filters_are_refused(bad):
    from ferry.util.errors import UsageError
    with pytest.raises(UsageError):
        events.Filters.parse([bad])


def test_follow_yields_new_events_only_and_stops_at_its_end(layout, monkeypatch):
    monkeypatch.setattr(events, "FOLLOW_POLL", 0.01)
    events.record(layout, "create", id="e" * 64, name="old")
    stop_ns = time.time_ns() + 3_000_000_000
    seen = []
    following = events.follow(layout, stop_ns=stop_ns)
    reader = threading.Thread(target=lambda: seen.extend(following))
    reader.start()
    events.record(layout, "start", id="e" * 64, name="new")
    reader.join(5)
    assert not reader.is_alive()
    assert [e.name for e in seen] == ["new"]


def test_follow_reads_across_a_rotation(layout, monkeypatch):
    monkeypatch.setattr(events, "FOLLOW_POLL", 0.01)
    monkeypatch.setattr(events, "MAX_BYTES", 1200)   # one rotation among them
    events.record(layout, "create", id="f" * 64, name="first")
    stop_ns = time.time_ns() + 3_000_000_000
    seen = []
    following = events.follow(layout, stop_ns=stop_ns)
    reader = threading.Thread(target=lambda: seen.extend(following))
    reader.start()
    for number in range(10):
        events.record(layout, "start", id="f" * 64, name=f"n{number}")
    reader.join(5)
    assert [e.name for e in seen] == [f"n{number}" for number in range(10)]


def test_event_lines_are_compact_json(layout):
    events.record(layout, "start", id="g" * 64, name="x")
    with open(events.events_path(layout)) as f:
        text = f.read()
    assert text.endswith("\n") and text.count("\n") == 1
    assert json.loads(text)["status"] == "start"
