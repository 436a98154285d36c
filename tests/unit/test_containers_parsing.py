"""Pure parts of the container engine: -v, -e, --entrypoint, signals, templates, logs, frames."""

from __future__ import annotations

import pytest

from ferry.cli import render
from ferry.engine import containers
from ferry.engine.volumes import VolumeSpec, parse_volume
from ferry.runtime import attach
from ferry.runtime.monitor import LogWriter
from ferry.util.errors import UsageError


@pytest.mark.parametrize("text,expected", [
    ("data:/var/lib/data", VolumeSpec("volume", "data", "/var/lib/data", False)),
    ("/srv/www:/usr/share/nginx/html:ro", VolumeSpec("bind", "/srv/www", "/usr/share/nginx/html", True)),
    ("/srv//x/:/y/:rw", VolumeSpec("bind", "/srv/x", "/y", False)),
])
def test_parse_volume(text, expected):
    assert parse_volume(text) == expected


@pytest.mark.parametrize("text", ["data", "data:relative", ":/x", "data:/x:rx", "./here:/x",
                                  "bad name:/x", "data:/x/../y", "a:b:c:d"])
def test_parse_volume_refuses(text):
    with pytest.raises(UsageError):
        parse_volume(text)


def test_merge_env(monkeypatch):
    monkeypatch.setenv("FROM_HOST", "yes")
    monkeypatch.delenv("NOT_SET", raising=False)
    merged = containers._merge_env(("PATH=/bin", "A=1"), ("A=2", "B=x=y", "FROM_HOST", "NOT_SET"))
    assert merged == ("PATH=/bin", "A=2", "B=x=y", "FROM_HOST=yes")
    with pytest.raises(UsageError):
        containers._merge_env((), ("=oops",))


def test_entrypoint_forms():
    assert containers._parse_entrypoint("/bin/sh") == ("/bin/sh",)
    assert containers._parse_entrypoint('["/bin/sh", "-c"]') == ("/bin/sh", "-c")
    assert containers._parse_entrypoint("") == ()
    with pytest.raises(UsageError):
        containers._parse_entrypoint("[not json")


def test_signal_names():
    assert containers.signal_name("SIGTERM") == "TERM"
    assert containers.signal_name("hup") == "HUP"
    assert containers.signal_name("9") == "9"
    with pytest.raises(UsageError):
        containers.signal_name("SIGNOPE")


def test_inspect_templates_render_through_go_templates(capsys):
    data = {"State": {"Status": "running", "Running": True}, "Ports": {"80/tcp": []}}
    render.template("{{.State.Status}} {{ .State.Running }} {{json .State}}", [data], heading=False, name="inspect")
    assert capsys.readouterr().out == 'running true {"Status":"running","Running":true}\n'
    with pytest.raises(UsageError, match="can't evaluate field Nope"):
        render.template("{{.State.Nope}}", [data], heading=False, name="inspect")


def test_log_writer_k8s_format(tmp_path):
    path = tmp_path / "ctr.log"
    writer = LogWriter(str(path))
    writer.write("stdout", b"hello\nwor")
    writer.write("stderr", b"oops\n")
    writer.write("stdout", b"ld\n")
    writer.write("stdout", b"partial")
    writer.flush()
    lines = path.read_bytes().splitlines()
    assert [line.split(b" ", 1)[1] for line in lines] == [
        b"stdout F hello", b"stderr F oops", b"stdout F world", b"stdout P partial"]


def test_attach_frames_reassemble():
    stream = attach.frame(attach.STDOUT, b"abc") + attach.frame(attach.EXIT, b"3")
    reader = attach.FrameReader()
    got = []
    for i in range(len(stream)):
        got += reader.feed(stream[i:i + 1])
    assert got == [(attach.STDOUT, b"abc"), (attach.EXIT, b"3")]


def test_generated_names_are_valid():
    from ferry.store.ids import check_name, new_id
    for _ in range(20):
        assert check_name(containers._generated_name(new_id()))
