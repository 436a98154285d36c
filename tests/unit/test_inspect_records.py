"""`ferry inspect` of containers from the records alone, as `ps` lists (issue 18):
the record it reads equals what the full Containers service would show, a record
that is behind is caught up through that service (which runs the cleanup), a
damaged record is a one-line error, and the command loads none of the runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ferry.cli import main as cli
from ferry.cli.containers import NEVER, inspect_container
from ferry.engine.config import PODMAN_PROFILE, ContainerConfig
from ferry.engine.containers import Container
from ferry.engine.listing import EXITED, RUNNING, ContainerRecord, Listing, stored_config
from ferry.engine.volumes import VolumeSpec, Volumes
from ferry.network.ports import PortMapping
from ferry.store.db import Database
from ferry.store.layout import Layout
from ferry.util.errors import FerryError, NotFound
from tests.unit.listing_fakes import FakeEngine, dead_pid, state_root

PLAIN = ContainerConfig(
    image="localhost/busybox:latest", image_digest="sha256:" + "d" * 64, args=("sleep", "100"),
    command=("100",), env=("PATH=/bin",), workdir="/", user="", hostname="h", network="ferry",
    ip="10.90.0.2", mac="02:00:00:00:00:02", ports=(), volumes=(), stop_signal="SIGTERM", rm=False,
    tty=False, interactive=False)
# Every field inspect shows set to something other than the plain one's, the
# optional keys of the stored form (profile, static_mac, nocopy) included.
FULL = ContainerConfig.from_dict({
    **PLAIN.to_dict(), "args": ["/bin/sh", "-c", "httpd -f"], "command": ["-c", "httpd -f"],
    "env": ["PATH=/bin", "A=b=c"], "workdir": "/srv", "user": "1000:1000", "hostname": "web",
    "ports": [PortMapping("", 8080, 80, "tcp").to_dict(), PortMapping("127.0.0.1", 5353, 53, "udp").to_dict(),
              PortMapping("", 8081, 80, "tcp").to_dict()],
    "volumes": [VolumeSpec("volume", "data", "/data", False, nocopy=True).to_dict(),
                VolumeSpec("bind", "/srv/www", "/www", True).to_dict()],
    "stop_signal": "SIGRTMIN+3", "rm": True, "tty": True, "interactive": True,
    "profile": PODMAN_PROFILE.to_dict(), "static_mac": True})
STAMP = "2026-01-01T00:00:00.000000000Z"


class FakeContainers:
    """Containers.get as a catch-up does it: the exit recorded, the cleanup run."""

    def __init__(self, db: Database, *, undone: bool = False):
        self.db, self.undone, self.caught_up = db, undone, []

    def get(self, container_id: str) -> Container:
        self.caught_up.append(container_id)
        with self.db.write() as conn:
            if self.undone:   # a `run` whose command died: its recovery removes the container
                conn.execute("DELETE FROM containers WHERE id = ?", (container_id,))
                raise NotFound(f"no such container {container_id!r}")
            conn.execute("UPDATE containers SET state = ?, exit_code = 9, pid = NULL, finished_at = ? WHERE id = ?",
                         (EXITED, STAMP, container_id))
        row = self.db.read().execute("SELECT * FROM containers WHERE id = ?", (container_id,)).fetchone()
        return Container.from_row(row)


@pytest.fixture
def root(tmp_path):
    layout, db = state_root(tmp_path, table=True)
    yield layout, db
    db.close()


def add(layout: Layout, db: Database, name: str, state: str, config: ContainerConfig = PLAIN, *,
        pid: int | None = None, checkpointed: str | None = None, restored: str | None = None,
        text: str | None = None) -> str:
    container_id = (name.encode().hex() * 64)[:64]
    with db.write() as conn:
        conn.execute("INSERT INTO containers (id, name, image_id, config, state, pid, exit_code, created_at, "
                     "started_at, finished_at, checkpointed_at, restored_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                     (container_id, name, "i" * 64, config.to_json() if text is None else text, state, pid,
                      3 if state == EXITED else None, STAMP, None if state == "created" else STAMP,
                      STAMP if state == EXITED else None, checkpointed, restored))
    os.makedirs(layout.container_dir(container_id))
    return container_id


# (name, state, config, pid, checkpointed_at, restored_at): the kinds of container inspect shows
KINDS = [("created", "created", PLAIN, None, None, None),
         ("running", RUNNING, PLAIN, "self", None, None),
         ("published", RUNNING, FULL, "self", None, None),
         ("exited", EXITED, FULL, None, None, None),
         ("checkpointed", EXITED, PLAIN, None, STAMP, None),
         ("restored", RUNNING, FULL, "self", None, STAMP)]


@pytest.mark.parametrize("name, state, config, pid, checkpointed, restored", KINDS)
def test_the_record_is_what_the_full_container_shows(root, name, state, config, pid, checkpointed, restored):
    """The record (its config the stored JSON object) equals the typed Container's,
    so inspect's JSON from either is the same; and Listing.record reads it
    without loading Containers."""
    layout, db = root
    add(layout, db, name, state, config, pid=os.getpid() if pid == "self" else None,
        checkpointed=checkpointed, restored=restored)
    row = db.read().execute("SELECT * FROM containers WHERE name = ?", (name,)).fetchone()
    record = Listing(layout, db, FakeEngine(layout=layout)).record(name)
    assert record == ContainerRecord.from_row(row) == ContainerRecord.from_container(Container.from_row(row))
    assert record.state == state and record.checkpointed_at == checkpointed and record.restored_at == restored


def test_inspect_json_of_a_full_record(root):
    layout, db = root
    container_id = add(layout, db, "web", RUNNING, FULL, pid=os.getpid(), restored=STAMP)
    work = layout.container_files(container_id).checkpoint_work
    os.makedirs(work)
    open(os.path.join(work, "restore.log"), "w").close()
    engine = FakeEngine(layout=layout)
    data = inspect_container(engine, Listing(layout, db, engine).record("web"))
    assert (data["Path"], data["Args"]) == ("/bin/sh", ["-c", "httpd -f"])
    assert data["State"] == {
        "OciVersion": "1.0.2", "Status": RUNNING, "Running": True, "Paused": False, "Restarting": False,
        "OOMKilled": False, "Dead": False, "Pid": os.getpid(), "ExitCode": 0, "StartedAt": STAMP,
        "FinishedAt": NEVER, "Checkpointed": False, "CheckpointedAt": NEVER, "CheckpointPath": "",
        "CheckpointInMemory": False, "Restored": True, "RestoredAt": STAMP,
        "RestoreLog": os.path.join(work, "restore.log")}
    ports = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "", "HostPort": "8081"}],
             "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}]}
    assert data["NetworkSettings"]["Ports"] == data["HostConfig"]["PortBindings"] == ports
    volumes = Volumes(layout, db, None)
    assert data["Mounts"] == [
        {"Type": "volume", "Name": "data", "Source": volumes.data_dir("data"), "Destination": "/data", "RW": True},
        {"Type": "bind", "Name": "", "Source": "/srv/www", "Destination": "/www", "RW": False}]
    assert data["HostConfig"]["Binds"] == ["data:/data", "/srv/www:/www:ro"]
    assert data["HostConfig"]["AutoRemove"] is True
    expected = {"Hostname": "web", "Env": ["PATH=/bin", "A=b=c"], "Cmd": ["-c", "httpd -f"],
                "WorkingDir": "/srv", "User": "1000:1000", "Tty": True, "OpenStdin": True, "StopSignal": 37,
                "Entrypoint": "/bin/sh", "Labels": {}, "StopTimeout": 10}
    assert {key: data["Config"][key] for key in expected} == expected
    assert data["NetworkSettings"]["Networks"] == {"ferry": {"IPAddress": "10.90.0.2",
                                                             "MacAddress": "02:00:00:00:00:02"}}


def test_inspect_of_a_checkpointed_container(root):
    layout, db = root
    container_id = add(layout, db, "parked", EXITED, checkpointed=STAMP)
    files = layout.container_files(container_id)
    os.makedirs(files.checkpoint_work)
    open(os.path.join(files.checkpoint_work, "dump.log"), "w").close()
    engine = FakeEngine(layout=layout)
    state = inspect_container(engine, Listing(layout, db, engine).record("parked"))["State"]
    assert state["Checkpointed"] is True and state["CheckpointedAt"] == STAMP
    assert state["CheckpointPath"] == files.checkpoint_images and state["CheckpointInMemory"] is False
    assert state["CheckpointLog"] == os.path.join(files.checkpoint_work, "dump.log")
    assert (state["Status"], state["ExitCode"], state["Pid"]) == (EXITED, 3, 0)


@pytest.mark.parametrize("how", ["process gone", "exit file written", "journal left"])
def test_a_record_that_is_behind_is_caught_up_through_containers(root, how):
    """As ps does, and as inspect always did through Containers.get: the exit is
    recorded and its cleanup runs before the record is shown."""
    layout, db = root
    containers = FakeContainers(db)
    listing = Listing(layout, db, FakeEngine(containers, layout))
    pid = dead_pid() if how == "process gone" else os.getpid()
    container_id = add(layout, db, "gone", RUNNING, pid=pid)
    files = layout.container_files(container_id)
    if how == "exit file written":
        with open(files.exit_record, "w") as f:
            json.dump({"exit_code": 9}, f)
    if how == "journal left":
        with open(files.journal, "w") as f:
            json.dump({}, f)
    record = listing.record("gone")
    assert containers.caught_up == [container_id]
    assert (record.state, record.exit_code, record.pid, record.finished_at) == (EXITED, 9, None, STAMP)


def test_a_container_its_catch_up_removes_is_not_found(root):
    layout, db = root
    containers = FakeContainers(db, undone=True)
    container_id = add(layout, db, "half-made", "created")
    with open(layout.container_files(container_id).journal, "w") as f:
        json.dump({}, f)
    with pytest.raises(NotFound):
        Listing(layout, db, FakeEngine(containers, layout)).record("half-made")
    assert containers.caught_up == [container_id]


@pytest.mark.parametrize("text, why", [
    ("{not json", "not valid JSON (Expecting property name"),
    ('{"image": 1, "image": 2}', "appears twice"),
    ("[]", "config is not a JSON object"),
    (json.dumps({**PLAIN.to_dict(), "args": []}), "args must not be empty"),
    (json.dumps({k: v for k, v in PLAIN.to_dict().items() if k != "image"}), "config.image is missing"),
    (json.dumps({**PLAIN.to_dict(), "env": ["A=1", 2]}), "env must be a list of strings"),
    (json.dumps({**PLAIN.to_dict(), "tty": "yes"}), "config.tty is missing or not a bool"),
    (json.dumps({**PLAIN.to_dict(), "ports": [{"host_ip": "", "host_port": True, "container_port": 80,
                                               "protocol": "tcp"}]}), "ports[0].host_port"),
    (json.dumps({**PLAIN.to_dict(), "volumes": ["data:/data"]}), "volumes[0] is not a JSON object"),
])
def test_a_damaged_record_is_a_one_line_error(root, text, why):
    layout, db = root
    add(layout, db, "odd", RUNNING, pid=os.getpid(), text=text)
    with pytest.raises(FerryError) as raised:
        Listing(layout, db, FakeEngine(layout=layout)).record("odd")
    assert raised.value.message.startswith("the record of container 'odd' is damaged: ")
    assert why in raised.value.message and "\n" not in raised.value.message


def test_stored_config_takes_what_ferry_writes():
    assert stored_config(FULL.to_json()) == FULL.to_dict()


def run_cli(monkeypatch, capsys, root: str, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    code = cli.main(["--root", root, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_several_names_templates_and_errors(root, monkeypatch, capsys):
    layout, db = root
    add(layout, db, "one", RUNNING, FULL, pid=os.getpid())
    add(layout, db, "two", EXITED)
    add(layout, db, "odd", EXITED, text="{")
    code, out, err = run_cli(monkeypatch, capsys, layout.root, "inspect", "one", "two")
    assert code == 0 and [i["Name"] for i in json.loads(out)] == ["one", "two"]
    code, out, _ = run_cli(monkeypatch, capsys, layout.root, "container", "inspect", "-f",
                           "{{.Name}} {{.State.Status}} {{.State.Running}} {{.Config.Cmd}}", "one", "two")
    assert (code, out) == (0, "one running true [-c httpd -f]\ntwo exited false [100]\n")   # Go's %v of a list
    code, out, err = run_cli(monkeypatch, capsys, layout.root, "inspect", "one", "nosuch")   # as podman
    assert code == 125 and [i["Name"] for i in json.loads(out)] == ["one"]
    assert err == "ferry: error: no such container 'nosuch' (hint: see 'ferry ps -a')\n"
    code, out, err = run_cli(monkeypatch, capsys, layout.root, "inspect", "odd")
    assert (code, out) == (125, "") and len(err.splitlines()) == 1
    assert err.startswith("ferry: error: the record of container 'odd' is damaged: not valid JSON")
    code, out, err = run_cli(monkeypatch, capsys, layout.root, "ps", "-a")   # ps reads the same record
    assert (code, out) == (125, "") and len(err.splitlines()) == 1
    assert err.startswith("ferry: error: the record of container 'odd' is damaged: not valid JSON")


# What inspect must not load: the runtime, the network, the typed config and
# the image store, and the slow standard modules (issue 18: as fast as podman's).
INSPECT_HEAVY = ("dataclasses", "typing", "logging", "_strptime", "hashlib", "rich", "ferry.engine.containers",
                 "ferry.engine.config", "ferry.engine.volumes", "ferry.engine.journal", "ferry.runtime",
                 "ferry.network", "ferry.image", "ferry.checkpoint", "ferry.cli.images")


@pytest.mark.parametrize("argv", [["inspect", "web"], ["container", "inspect", "web", "parked", "new"],
                                  ["inspect", "-f", "{{.State.Status}} {{.HostConfig.Binds}}", "web"]])
def test_inspect_loads_no_module_it_does_not_need(root, argv):
    layout, db = root
    add(layout, db, "web", RUNNING, FULL, pid=os.getpid())   # alive while the command looks
    add(layout, db, "parked", EXITED, checkpointed=STAMP)
    add(layout, db, "new", "created")
    code = f"""
        import contextlib, io, json, os, sys
        os.geteuid = lambda: 0  # Engine.db asks for root; reading records needs none
        from ferry.cli import main as cli
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["--root", {layout.root!r}, *{argv!r}])
        heavy = {INSPECT_HEAVY!r}
        print(json.dumps([code, sorted(m for m in sys.modules if m in heavy or m.startswith(
            tuple(h + "." for h in heavy)))]))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            check=True)
    assert json.loads(result.stdout) == [0, []], result.stderr
