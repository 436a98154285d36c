"""`ferry container checkpoint|restore` on a stand-in engine: an archive written to
stdout leaves stdout to the archive alone, and `restore --file -` reads stdin."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ferry.cli import main as cli
from ferry.engine import core
from ferry.engine.checkpoints import Authenticity
from ferry.util import signals


@pytest.fixture
def engine(monkeypatch, tmp_path):
    """The engine the CLI gets, recording what it was asked."""
    asked = []

    def checkpoint(name, options, progress):
        asked.append(("checkpoint", name, options))
        return SimpleNamespace(name=name, kept_locally=False, stats=lambda raw: {
            "podman_checkpoint_duration": 7, "container_statistics": [{"RawInput": raw}]})

    def restore(name, options, progress):
        asked.append(("restore", name, options))
        return SimpleNamespace(id="f" * 64, granted_binds=(), authenticity=Authenticity.UNVERIFIED, host_differences=(),
                               stats=lambda raw: {"podman_restore_duration": 5,
                                                  "container_statistics": [{"RawInput": raw}]})

    class Engine:
        def __init__(self, root):
            self.checkpoints = SimpleNamespace(checkpoint=checkpoint, restore=restore)
    monkeypatch.setattr(core, "Engine", Engine)
    monkeypatch.setattr(signals, "install", lambda: None)   # leave pytest's own handlers
    return SimpleNamespace(asked=asked, root=str(tmp_path / "root"))


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
