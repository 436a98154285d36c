"""`ferry ps`'s filters, sort keys, JSON and template fields, on summaries
made in memory (the integration suite compares them with podman's)."""

from __future__ import annotations

import pytest

from ferry.cli import ps
from ferry.engine.listing import ContainerSummary
from ferry.util import timefmt
from ferry.util.errors import UsageError

CONFIG = {"image": "localhost/busybox:latest", "rm": False, "network": "ferry",
          "volumes": [{"kind": "volume", "source": "v", "destination": "/data", "readonly": False}],
          "extras": {"labels": [["tier", "web"], ["team", "a"]]}}


IDS = {"up": "1", "done": "2", "failed": "3", "long": "4"}


def summary(name: str, state: str = "running", exit_code=None, labels=None, **changes) -> ContainerSummary:
    config = dict(CONFIG, extras={"labels": labels} if labels is not None else CONFIG["extras"])
    fields = dict(id=IDS[name] * 64, name=name, image_id="f" * 64,
                  image="localhost/busybox:latest", args=("sleep", "1000"), ports=(), state=state, pid=42,
                  exit_code=exit_code, created_at="2026-11-30T20:42:17.731665000Z",
                  started_at="2026-11-30T20:42:18.000000000Z",
                  finished_at="2026-11-30T20:43:00.500000000Z" if state == "exited" else None,
                  checkpointed_at=None, config=config)
    fields.update(changes)
    return ContainerSummary(**fields)


UP = summary("up")
DONE = summary("done", "exited", 0, labels=[["tier", "batch"]], args=("true",))
FAILED = summary("failed", "exited", 3, labels=[], args=("sh", "-c", "exit 3"))


@pytest.mark.parametrize("filters, names", [
    (["name=^d"], ["done"]),
    (["status=exited"], ["done", "failed"]),
    (["label=tier"], ["up", "done"]),
    (["label=tier=web"], ["up"]),
    (["label=tier=web", "label=tier=batch"], []),   # podman: every label named
    (["label=tier", "label=team"], ["up"]),
    (["name=up", "name=done"], ["up", "done"]),
    (["status=exited", "label=tier"], ["done"]),
    (["exited=3"], ["failed"]),
    (["ancestor=busybox"], ["up", "done", "failed"]),
    (["ancestor=localhost/busybox:latest"], ["up", "done", "failed"]),
    (["ancestor=fff"], ["up", "done", "failed"]),
    (["ancestor=alpine"], []),
    (["network=ferry"], ["up", "done", "failed"]),
    (["network=other"], []),
])
def test_filters_of_one_key_are_alternatives_except_labels_and_keys_all_apply(filters, names):
    parsed = ps.parse_filters(filters)
    assert [c.name for c in (UP, DONE, FAILED) if ps.matches(c, parsed, None)] == names


def test_an_id_filter_is_a_prefix():
    assert [c.name for c in (UP, DONE, FAILED) if ps.matches(c, ps.parse_filters(["id=222"]), None)] == ["done"]


@pytest.mark.parametrize("text, message", [
    ("bogus=1", "bogus is an invalid filter"),
    ("status=bogus", "unknown container state: bogus"),
    ("name", "has no value"),
    ("exited=x", "is not a number"),
    ("name=(", "not a regular expression"),
])
def test_a_bad_filter_is_one_line(text, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        ps.parse_filters([text])


def test_json_has_podman_s_keys_and_types():
    data = ps.ps_json(FAILED, set(), {})
    assert list(data) == ["AutoRemove", "Command", "CreatedAt", "Exited", "ExitedAt", "ExitCode", "Id", "Image",
                          "ImageID", "IsInfra", "Labels", "Mounts", "Names", "Namespaces", "Networks", "Pid", "Pod",
                          "PodName", "Ports", "Size", "StartedAt", "State", "Status", "Created"]
    assert data["Created"] == 1796071337 and data["ExitedAt"] == 1796071380 and data["StartedAt"] == 1796071338
    assert data["Labels"] is None and data["Ports"] is None and data["Size"] is None   # podman's nulls
    assert data["Mounts"] == ["/data"] and data["Networks"] == ["ferry"] and data["ExitCode"] == 3
    running = ps.ps_json(UP, set(), {UP.id: (2000, 12)})
    assert running["ExitedAt"] == -62135596800 and running["Exited"] is False
    assert running["Labels"] == {"tier": "web", "team": "a"}
    assert running["Size"] == {"rootFsSize": 2000, "rwSize": 12}


def test_template_fields_are_podman_s_psreporter():
    view = ps.ps_view(UP, set(), {UP.id: (1982618, 12)})
    assert view["ID"] == UP.id[:12] and view["Names"] == "up" and view["Networks"] == "ferry"
    assert view["CreatedAt"] == "2026-11-30 20:42:17.731665 +0000 UTC"
    assert view["Size"] == "12B (virtual 1.98MB)"
    assert view["Status"].startswith("Up ") and view["Status"].endswith(" ago")
    assert ps.ps_view(UP, set(), {}, no_trunc=True)["ID"] == UP.id
    long = summary("long", args=("sh", "-c", "echo a; sleep 1; echo b"))
    assert ps.ps_view(long, set(), {})["Command"] == "sh -c echo a; sle..."


def test_sort_keys():
    assert [c.name for c in ps.sort([UP, DONE, FAILED], "names", set(), {})] == ["done", "failed", "up"]
    assert [c.name for c in ps.sort([UP, DONE, FAILED], "command", set(), {})] == ["failed", "up", "done"]
    assert [c.name for c in ps.sort([UP, DONE, FAILED], "created", set(), {})] == ["up", "done", "failed"]


@pytest.mark.parametrize("seconds, text", [
    (0.2, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (119, "About a minute"), (120, "2 minutes"), (3600, "About an hour"), (7200, "2 hours"),
    (47 * 3600, "47 hours"), (48 * 3600, "2 days"), (14 * 86400, "2 weeks"), (60 * 86400, "2 months"),
    (730 * 86400, "2 years"),
])
def test_human_duration_is_go_units(seconds, text):
    assert timefmt.human_duration(seconds) == text


def test_go_time_and_unix_seconds():
    assert timefmt.go_time("2026-11-30T20:42:17.100000000Z") == "2026-11-30 20:42:17.1 +0000 UTC"
    assert timefmt.go_time("0001-01-01T00:00:00Z") == "0001-01-01 00:00:00 +0000 UTC"
    assert timefmt.unix_seconds(None) == -62135596800


def test_sizes_are_go_units_with_three_digits(tmp_path):
    assert [ps._size(n) for n in (12, 999, 1000, 1982618, 5 * 10**9)] == ["12B", "999B", "1kB", "1.98MB", "5GB"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 300)
    (tmp_path / "g").write_bytes(b"y" * 5)
    (tmp_path / "link").symlink_to("/nonexistent/long/target")
    assert ps.tree_size(str(tmp_path)) == 300 + 5 + len("/nonexistent/long/target")
