"""engine.listing, the read path of `ferry ps`: summaries of the containers table,
and a catch-up through the full Containers service only for a container that
exited unobserved (a real table, a fake Containers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from ferry.engine.containers import Container, ContainerConfig
from ferry.network.ports import PortMapping
from ferry.engine.listing import EXITED, RUNNING, ContainerSummary, Listing, has_exited, process_alive
from ferry.store.db import Database
from ferry.store.layout import Layout
from ferry.util.errors import NotFound
from tests.unit.listing_fakes import FakeEngine, dead_pid, root  # noqa: F401  (root: a fixture)

CONFIG = ContainerConfig(
    image="localhost/busybox:latest", image_digest="sha256:" + "d" * 64, args=("sleep", "100"),
    command=("100",), env=("PATH=/bin",), workdir="/", user="", hostname="h", network="ferry",
    ip="10.90.0.2", mac="02:00:00:00:00:02",
    ports=(PortMapping("", 8080, 80, "tcp"),),
    volumes=(), stop_signal="SIGTERM", rm=False, tty=False, interactive=False)


class FakeContainers:
    """Containers.get's catch-up, as far as a listing sees it: the record says exited."""

    def __init__(self, db: Database, removed: set[str] = frozenset()):
        self.db, self.removed, self.caught_up = db, removed, []

    def get(self, container_id: str):
        self.caught_up.append(container_id)
        with self.db.write() as conn:
            if container_id in self.removed:  # an --rm container: its cleanup removes it
                conn.execute("DELETE FROM containers WHERE id = ?", (container_id,))
            else:
                conn.execute("UPDATE containers SET state = ?, exit_code = 0, pid = NULL WHERE id = ?",
                             (EXITED, container_id))
        if container_id in self.removed:
            raise NotFound(f"no such container {container_id!r}")


def add(layout: Layout, db: Database, name: str, state: str, pid: int | None, created: str) -> str:
    container_id = name * (64 // len(name)) + "0" * (64 % len(name))
    with db.write() as conn:
        conn.execute("INSERT INTO containers (id, name, image_id, config, state, pid, exit_code, created_at, "
                     "started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (container_id, name, "i" * 64, CONFIG.to_json(), state, pid,
                      None if state == RUNNING else 3, created, created if state != "created" else None,
                      created if state == EXITED else None))
    os.makedirs(layout.container_dir(container_id))
    return container_id


def test_summary_holds_what_the_full_record_holds(root):
    layout, db = root
    Listing(layout, db, FakeEngine())
    add(layout, db, "web", RUNNING, os.getpid(), "2026-01-01T00:00:00.000000000Z")
    row = db.read().execute("SELECT * FROM containers").fetchone()
    summary, full = ContainerSummary.from_row(row), Container.from_row(row)
    assert summary == (full.id, full.name, full.image_id, full.config.image, full.config.args,
                       tuple(p.to_dict() for p in full.config.ports), full.state, full.pid, full.exit_code,
                       full.created_at, full.started_at, full.finished_at, full.checkpointed_at,
                       full.config.to_dict())


def test_live_containers_are_listed_from_the_table_alone(root):
    layout, db = root
    listing = Listing(layout, db, FakeEngine())  # touching engine.containers would fail
    add(layout, db, "second", RUNNING, os.getpid(), "2026-01-01T00:00:02.000000000Z")
    add(layout, db, "first", RUNNING, os.getpid(), "2026-01-01T00:00:01.000000000Z")
    add(layout, db, "done", EXITED, None, "2026-01-01T00:00:03.000000000Z")
    add(layout, db, "new", "created", None, "2026-01-01T00:00:04.000000000Z")
    assert [c.name for c in listing.containers()] == ["first", "second"]
    everything = listing.containers(all_states=True)
    assert [(c.name, c.state) for c in everything] == [
        ("first", RUNNING), ("second", RUNNING), ("done", EXITED), ("new", "created")]
    assert everything[2].exit_code == 3
    assert everything[0].ports == tuple(p.to_dict() for p in CONFIG.ports) and everything[0].args == ("sleep", "100")


@pytest.mark.parametrize("how", ["process gone", "exit file written"])
def test_a_container_that_exited_unobserved_is_caught_up_first(root, how):
    layout, db = root
    containers = FakeContainers(db)
    listing = Listing(layout, db, FakeEngine(containers))
    alive = add(layout, db, "alive", RUNNING, os.getpid(), "2026-01-01T00:00:01.000000000Z")
    pid = dead_pid() if how == "process gone" else os.getpid()
    gone = add(layout, db, "gone", RUNNING, pid, "2026-01-01T00:00:02.000000000Z")
    if how == "exit file written":
        with open(os.path.join(layout.container_dir(gone), "exit.json"), "w") as f:
            json.dump({"exit_code": 0}, f)
    assert [c.id for c in listing.containers()] == [alive]
    assert containers.caught_up == [gone]
    assert [(c.name, c.state) for c in listing.containers(all_states=True)] == [
        ("alive", RUNNING), ("gone", EXITED)]


def test_a_container_removed_while_caught_up_is_not_listed(root):
    layout, db = root
    containers = FakeContainers(db)
    listing = Listing(layout, db, FakeEngine(containers))
    gone = add(layout, db, "gone", RUNNING, dead_pid(), "2026-01-01T00:00:01.000000000Z")
    containers.removed = {gone}
    assert listing.containers(all_states=True) == []
    assert containers.caught_up == [gone]


def test_has_exited(tmp_path):
    assert not has_exited(str(tmp_path), os.getpid())
    assert has_exited(str(tmp_path), dead_pid())
    assert has_exited(str(tmp_path), None)
    (tmp_path / "exit.json").write_text("{}")
    assert has_exited(str(tmp_path), os.getpid())


def test_a_zombie_is_not_alive():
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while process_alive(child.pid):  # until it has exited, unreaped
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        with open(f"/proc/{child.pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        child.wait()


HEAVY = ("dataclasses", "typing", "logging", "_strptime", "hashlib", "ferry.engine.containers", "ferry.runtime.runc",
         "ferry.network.manager", "ferry.image.store", "ferry.cli.images", "rich")


# `images` lists from its tables too (issue 18): none of the store's machinery.
IMAGES_HEAVY = tuple(m for m in HEAVY if m != "ferry.cli.images") + ("tarfile", "zstandard", "ferry.image.layers")


@pytest.mark.parametrize("argv, heavy", [(["ps"], HEAVY), (["ps", "-a", "--format", "json"], HEAVY),
                                         (["container", "ls", "-q"], HEAVY), (["images"], IMAGES_HEAVY),
                                         (["images", "--format", "json"], IMAGES_HEAVY)])
def test_ps_loads_no_module_it_does_not_need(tmp_path, argv, heavy):
    """`ferry ps` and `ferry images` must start as fast as podman's: they list from
    the tables, so they may load neither the runtime, the network, the image store
    nor the slow stdlib modules."""
    code = f"""
        import contextlib, io, json, os, sys
        os.geteuid = lambda: 0  # Engine.db asks for root; the listing itself needs none
        from ferry.cli import main as cli
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["--root", {str(tmp_path / "root")!r}, *{argv!r}])
        print(json.dumps([code, sorted(set({heavy!r}) & set(sys.modules))]))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            check=True)
    assert json.loads(result.stdout) == [0, []]


def test_a_container_being_created_lists_at_every_step(root):
    """ps during `run`: the record is readable from the moment it exists."""
    from types import SimpleNamespace

    from ferry.engine.containers import Containers, Undo
    layout, db = root
    listing = Listing(layout, db, FakeEngine())
    seen = []

    class Networks:
        def reserve(self, container_id, network, *, ip, mac, scoped=False):
            seen.append([(c.name, c.image, c.args) for c in listing.containers(all_states=True)])
            return "10.90.0.9", "02:00:00:00:00:09"

        def release(self, container_id):
            pass

    engine = SimpleNamespace(networks=Networks(), volumes=None)
    containers = Containers(layout, db, engine)
    draft = CONFIG._replace(ip="", mac="")
    made = containers.insert("making", SimpleNamespace(id="i" * 64), draft, Undo())
    assert seen == [[("making", CONFIG.image, CONFIG.args)]]
    assert (made.config.ip, made.config.mac) == ("10.90.0.9", "02:00:00:00:00:09")
