"""`ferry container checkpoint|restore` on a stand-in engine: an archive written to
stdout leaves stdout to the archive alone, and `restore --file -` reads stdin;
--all and --latest choose as podman's do, and one container's failure does not
stop the others."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ferry.cli import main as cli
from ferry.engine import core
from ferry.engine.checkpoints import Authenticity
from ferry.util import signals
from ferry.util.errors import Conflict, NotFound


@pytest.fixture
def engine(monkeypatch, tmp_path):
    """The engine the CLI gets, recording what it was asked. Its containers:
    `running` and `stopped` lists of IDs (oldest first); a name in `failing` fails."""
    asked = []
    state = SimpleNamespace(running=["a" * 64, "b" * 64], stopped=["c" * 64], failing=set())

    def checkpoint(name, options, progress):
        asked.append(("checkpoint", name, options))
        if name in state.failing:
            raise Conflict(f"cannot checkpoint container {name!r}: it is created")
        return SimpleNamespace(name=name, kept_locally=False, stats=lambda raw: {
            "podman_checkpoint_duration": 7, "container_statistics": [{"RawInput": raw}]})

    def restore(name, options, progress):
        asked.append(("restore", name, options))
        if name in state.failing:
            raise NotFound(f"container {name!r} has no local checkpoint")
        return SimpleNamespace(id="f" * 64, granted_binds=(), authenticity=Authenticity.UNVERIFIED, host_differences=(),
                               in_place=name is not None,
                               stats=lambda raw: {"podman_restore_duration": 5,
                                                  "container_statistics": [{"RawInput": raw}]})

    def latest():
        if not state.running + state.stopped:
            raise NotFound("no such container")
        return SimpleNamespace(id=(state.running + state.stopped)[-1])

    def check_names(names):
        for name in names:
            if name == "nosuch":
                raise NotFound("no such container 'nosuch'")

    def check_restore_names(names):
        for name in names:
            if name == "nosuch":
                raise NotFound("no such container or image: nosuch")

    class Engine:
        def __init__(self, root):
            self.checkpoints = SimpleNamespace(
                checkpoint=checkpoint, restore=restore, latest=latest, check_names=check_names,
                check_restore_names=check_restore_names,
                checkpointable=lambda: [SimpleNamespace(id=i) for i in state.running],
                restorable=lambda: [SimpleNamespace(id=i) for i in state.stopped])
    monkeypatch.setattr(core, "Engine", Engine)
    monkeypatch.setattr(signals, "install", lambda: None)   # leave pytest's own handlers
    return SimpleNamespace(asked=asked, root=str(tmp_path / "root"), state=state)


@pytest.mark.parametrize("target", ["-", "/dev/stdout"])
@pytest.mark.parametrize("flags, printed", [
    ([], "web\n"),
    (["--print-stats"], json.dumps({"podman_checkpoint_duration": 7, "container_statistics": [
        {"RawInput": "web"}]}, indent=2) + "\n"),
    (["--format", "json"], json.dumps([{"podman_checkpoint_duration": 7, "container_statistics": [
        {"RawInput": "web"}]}], indent=2) + "\n"),
])
def test_an_archive_on_stdout_moves_the_result_lines_to_stderr(capfd, engine, target, flags, printed):
    code = cli.main(["--root", engine.root, "container", "checkpoint", "web", "--file", target, *flags])
    out, err = capfd.readouterr()
    assert (code, out, err) == (0, "", printed)
    [(_, name, options)] = engine.asked
    assert (name, options.export) == ("web", target)


def test_an_archive_in_a_file_leaves_the_result_lines_on_stdout(capfd, engine, tmp_path):
    code = cli.main(["--root", engine.root, "container", "checkpoint", "web", "--file",
                     str(tmp_path / "web.tar.zst"), "--print-stats"])
    out, err = capfd.readouterr()
    assert (code, json.loads(out), err) == (0, {"podman_checkpoint_duration": 7,
                                                 "container_statistics": [{"RawInput": "web"}]}, "")


def test_restore_from_stdin_passes_dash_to_the_engine(capfd, engine):
    code = cli.main(["--root", engine.root, "container", "restore", "--file", "-", "--name", "web2"])
    out, err = capfd.readouterr()
    assert (code, out) == (0, "f" * 64 + "\n")
    assert err.startswith("ferry: warning: restored from stdin, whose origin is not verified")
    [(verb, name, options)] = engine.asked
    assert (verb, name, options.import_path, options.name) == ("restore", None, "-", "web2")


def test_print_stats_is_one_document_for_all_containers_as_podman_prints_it(capfd, engine):
    code = cli.main(["--root", engine.root, "container", "checkpoint", "web", "db", "--print-stats"])
    out, _ = capfd.readouterr()
    assert (code, json.loads(out)) == (0, {"podman_checkpoint_duration": 14, "container_statistics": [
        {"RawInput": "web"}, {"RawInput": "db"}]})


def _run(engine, capfd, *args):
    code = cli.main(["--root", engine.root, "container", *args])
    out, err = capfd.readouterr()
    return code, out, err


def test_checkpoint_all_takes_every_running_container_and_prints_their_ids(capfd, engine):
    assert _run(engine, capfd, "checkpoint", "--all") == (0, "a" * 64 + "\n" + "b" * 64 + "\n", "")
    assert [name for _, name, _ in engine.asked] == ["a" * 64, "b" * 64]


def test_checkpoint_all_with_nothing_running_prints_nothing(capfd, engine):
    engine.state.running = []
    assert _run(engine, capfd, "checkpoint", "-a") == (0, "", "")
    assert engine.asked == []


def test_checkpoint_latest_takes_the_container_created_last(capfd, engine):
    assert _run(engine, capfd, "checkpoint", "-l", "--file-locks") == (0, "c" * 64 + "\n", "")
    [(_, name, options)] = engine.asked
    assert (name, options.file_locks) == ("c" * 64, True)


def test_latest_without_containers_is_podmans_no_such_container(capfd, engine):
    engine.state.running, engine.state.stopped = [], []
    for verb in ("checkpoint", "restore"):
        code, out, err = _run(engine, capfd, verb, "--latest")
        assert (code, out, err.splitlines()[0]) == (125, "", "ferry: error: no such container")


@pytest.mark.parametrize("args, message", [
    (["checkpoint"], "you must provide at least one name or id"),
    (["checkpoint", "-a", "web"], "no arguments are needed with --all"),
    (["checkpoint", "-l", "web"], "--latest and containers cannot be used together"),
    (["checkpoint", "-a", "-l"], "--all and --latest cannot be used together"),
    (["restore", "-a", "web"], "no arguments are needed with --all"),
    (["restore", "-l", "web"], "--all or --latest and containers cannot be used together"),
    (["restore", "-a", "-l"], "--all and --latest cannot be used together"),
    (["restore", "--all", "--import", "x.tar.gz"], "cannot use --import with --all or --latest"),
    (["restore", "-l", "-i", "x.tar.gz"], "cannot use --import with --all or --latest"),
    (["checkpoint", "-a", "-e", "x.tar.gz"], "--export takes one container, not 2"),
    (["checkpoint", "web", "db", "--create-image", "ck"], "--create-image takes one container, not 2"),
])
def test_podmans_refusals_of_all_and_latest(capfd, engine, args, message):
    code, out, err = _run(engine, capfd, *args)
    assert (code, out) == (125, "")
    assert err.startswith(f"ferry: error: {message}")
    assert engine.asked == []


def test_checkpoint_all_with_export_of_one_container_is_that_container(capfd, engine, tmp_path):
    engine.state.running = ["a" * 64]
    assert _run(engine, capfd, "checkpoint", "-a", "-e", str(tmp_path / "x.tar.gz"))[:2] == (0, "a" * 64 + "\n")


@pytest.mark.parametrize("verb, message", [("checkpoint", "no such container 'nosuch'"),
                                           ("restore", "no such container or image: nosuch")])
def test_a_missing_name_stops_all_before_any_is_touched(capfd, engine, verb, message):
    code, out, err = _run(engine, capfd, verb, "web", "nosuch", "db")
    assert (code, out, err.splitlines()[0]) == (125, "", f"ferry: error: {message}")
    assert engine.asked == []


def test_one_failure_does_not_stop_the_others_and_each_gets_its_line(capfd, engine):
    engine.state.failing = {"c1", "c2"}
    code, out, err = _run(engine, capfd, "checkpoint", "web", "c1", "db", "c2")
    assert (code, out) == (125, "web\ndb\n")
    assert [line for line in err.splitlines() if line.startswith("ferry: error:")] == [
        "ferry: error: cannot checkpoint container 'c1': it is created",
        "ferry: error: cannot checkpoint container 'c2': it is created"]
    assert [name for _, name, _ in engine.asked] == ["web", "c1", "db", "c2"]


def test_restore_all_takes_the_stopped_checkpointed_ones_and_prints_their_ids(capfd, engine):
    engine.state.stopped = ["c" * 64, "d" * 64]
    code, out, _ = _run(engine, capfd, "restore", "--all", "--keep")
    assert (code, out) == (0, "c" * 64 + "\n" + "d" * 64 + "\n")
    assert [(name, options.keep) for _, name, options in engine.asked] == [("c" * 64, True), ("d" * 64, True)]


def test_restore_all_with_nothing_to_restore_prints_nothing(capfd, engine):
    engine.state.stopped = []
    assert _run(engine, capfd, "restore", "-a") == (0, "", "")
    assert engine.asked == []


def test_restore_by_name_prints_the_name_as_given_and_goes_on_past_a_failure(capfd, engine):
    """`gone` is a container, whose restore fails: the others are still restored."""
    engine.state.failing = {"gone"}
    code, out, err = _run(engine, capfd, "restore", "web", "gone", "db", "--file-locks")
    assert (code, out) == (125, "web\ndb\n")
    assert "ferry: error: container 'gone' has no local checkpoint" in err
    assert [name for _, name, _ in engine.asked] == ["web", "gone", "db"]


@pytest.mark.parametrize("verb, key", [("checkpoint", "podman_checkpoint_duration"),
                                       ("restore", "podman_restore_duration")])
def test_all_choosing_none_prints_podmans_empty_stats(capfd, engine, verb, key):
    engine.state.running = engine.state.stopped = []
    code, out, _ = _run(engine, capfd, verb, "--all", "--print-stats")
    assert (code, json.loads(out)) == (0, {key: 0, "container_statistics": None})
