"""The checkpoint and restore orchestration of engine/checkpoints.py without
root, on the fake host of tests/unit/fakehost.py: `runc checkpoint` is faked
at proc.spawn (it writes a dump's images and CRIU's log, and ends the
container unless -R), the restore's monitor at proc.spawn too, and the host
probe an archive's manifest records (host_info: CRIU, runc, the CPU) returns
a fixed host. The archive itself is written and read by the real code."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from ferry.checkpoint.archive import ArchiveWriter, HostInfo, read_archive
from ferry.engine import journal
from ferry.engine import checkpoints as checkpoints_module
from ferry.engine.checkpoints import (Authenticity, CheckpointOptions, Checkpoints, RestoreOptions, mounts_for_target,
                                      read_members)
from ferry.checkpoint.podman_shape import podman_config_dump
from ferry.engine.config import ArchivedContainer
from ferry.engine.containers import RunOptions
from ferry.engine.listing import EXITED, RUNNING
from ferry.engine.volumes import VolumeSpec
from ferry.store.layout import CHECKPOINT_IMAGES, CHECKPOINT_WORK, CHECKPOINTING
from ferry.util import signals
from ferry.util.errors import BadArchive, Conflict, FerryError, NotFound, ToolError, UsageError
from ferry.util.fs import mounts_under
from ferry.util.locks import is_locked
from tests.unit.fakehost import containers, engine, hold_lock, host, release  # noqa: F401  (fixtures)

HOST = HostInfo(arch="x86_64", kernel="6.1.0-test", cpu={"x86_entry": [{"vendor_id": "INTEL", "model": 207}]},
                criu_version="4.2.1", runc_version="1.1.5", cgroup_mode="v1", hostname="source",
                cpuinfo_image="AAAA")
KEPT_HINT = "the checkpoint is kept: 'ferry container restore web' brings the container back here"


@pytest.fixture
def checkpoints(containers, monkeypatch):
    # What this host is, as the archive's manifest records it (a host probe: criu, runc, the CPU).
    monkeypatch.setattr(sys.modules[ArchiveWriter.__module__], "host_info", lambda: HOST)
    # ... and what a restore compares it with: the same host (CRIU's CPU check is the fake host's).
    monkeypatch.setattr("ferry.checkpoint.hostinfo.host_info", lambda: HOST)
    monkeypatch.setattr("ferry.checkpoint.hostinfo.criu_path", lambda: "criu")
    return Checkpoints(containers)


@pytest.fixture
def web(containers, host):
    container = containers.run(RunOptions(image="busy:1", name="web", ports=("8080:80",), detach=True))
    host.memory_use(container.id, 64 << 20)
    with open(os.path.join(containers.dir(container.id), "ctr.log"), "w") as f:
        f.write("2024-01-01T00:00:00.000000000Z stdout F ready\n")
    return container


def paths(containers, container) -> tuple[str, str, str]:
    directory = containers.dir(container.id)
    return directory, os.path.join(directory, CHECKPOINT_IMAGES), os.path.join(directory, CHECKPOINT_WORK)


def unpacked(path: str, tmp_path) -> tuple[dict, set[str]]:
    dest = tmp_path / f"unpacked-{len(os.listdir(tmp_path))}"
    contents = read_archive(str(path), str(dest))
    return contents.container, {m.name for m in contents.members}


# ---- checkpoint ---------------------------------------------------------------------

def test_a_local_checkpoint_is_journaled_dumped_recorded_and_releases_the_container(checkpoints, containers,
                                                                                    engine, host, web):
    directory, images, work = paths(containers, web)
    during = {}

    def at_dump(container_id, images_dir):
        entry = journal.read(directory)
        during.update(entry=entry, marker=os.path.exists(os.path.join(directory, CHECKPOINTING)),
                      locked=is_locked(engine.layout.lock(f"container-{web.id}")),
                      tool_locked=is_locked(os.path.join(directory, "tool.lock")))
    host.on_dump = at_dump
    result = checkpoints.checkpoint("web", CheckpointOptions())
    [dump] = host.ran("checkpoint")
    runc_root = os.path.join(engine.layout.root, "runc")
    assert dump == ["runc", "--root", runc_root, "--log", f"{work}/runc.log", "--log-format", "json",
                    "--criu", "/usr/local/sbin/criu", "checkpoint", "--image-path", images, "--work-path", work,
                    web.id]
    # the journal was there before runc ran, and the lock runc holds (it outlives a killed ferry)
    assert during["entry"].op == journal.CHECKPOINT and during["entry"].pid == os.getpid()
    assert during["tool_locked"] and during["marker"] and during["locked"]
    assert not is_locked(os.path.join(directory, "tool.lock"))
    assert (result.id, result.name, result.archive) == (web.id, "web", None)
    assert (result.criu.frozen_time_us, result.criu.pages_written) == (9000, 200)   # CRIU's stats, as it wrote them
    assert "runc_checkpoint" in result.phases and "sync" in result.phases
    seen = containers.get("web")
    assert (seen.state, seen.exit_code) == (EXITED, 0) and seen.checkpointed_at
    assert sorted(os.listdir(images)) == ["core-1.img", "inventory.img", "pagemap-1.img", "pages-1.img"]
    assert host.exits[-1]["exit_command"] is False   # the checkpoint cleaned up, not the monitor
    assert host.leftovers(web.id) == [] and host.mounts == []   # no tmpfs for a local checkpoint
    assert not journal.exists(directory) and not os.path.exists(os.path.join(directory, CHECKPOINTING))
    with open(os.path.join(host.procfs, "sys", "fs", "pipe-max-size")) as f:
        assert int(f.read()) >= 64 << 20   # CRIU's page pipes may grow


def test_checkpoint_R_leaves_the_container_running(checkpoints, containers, host, web):
    directory, images, _ = paths(containers, web)
    checkpoints.checkpoint("web", CheckpointOptions(leave_running=True, tcp_established=True))
    [dump] = host.ran("checkpoint")
    assert {"--leave-running", "--tcp-established"} <= set(dump)
    seen = containers.get("web")
    assert (seen.state, seen.pid, seen.checkpointed_at) == (RUNNING, web.pid, None)
    # Its checkpoint is a whole archive in the root (test_checkpoint_store.py), not images in place.
    [kept] = checkpoints.store.entries()
    assert host.alive(web.pid) and not os.path.exists(images) and os.path.isfile(kept.path)
    assert not journal.exists(directory) and host.leftovers(web.id) != []


def test_a_dump_that_fails_leaves_the_container_running_and_quotes_criu(checkpoints, containers, host, web):
    directory, images, work = paths(containers, web)
    host.fail["dump"] = (1, "Can't dump socket: In-flight connection")
    with pytest.raises(ToolError) as failure:
        checkpoints.checkpoint("web", CheckpointOptions())
    error = failure.value
    assert str(error) == (f"checkpoint of {web.id[:12]} failed (exit 1): Can't dump socket: In-flight connection "
                          "| Dumping FAILED.")
    assert error.hint == f"CRIU's log is kept at {work}/dump.log"
    seen = containers.get("web")
    assert (seen.state, seen.pid, seen.checkpointed_at) == (RUNNING, web.pid, None)
    assert not os.path.exists(images) and os.path.exists(f"{work}/dump.log")
    assert not journal.exists(directory) and not os.path.exists(os.path.join(directory, CHECKPOINTING))


def test_only_a_running_container_is_checkpointed(checkpoints, containers, host):
    container = containers.create(RunOptions(image="busy:1", name="idle"))
    with pytest.raises(Conflict, match="cannot checkpoint container 'idle': it is created"):
        checkpoints.checkpoint("idle", CheckpointOptions())
    with pytest.raises(UsageError, match="--sign-key needs --export"):
        checkpoints.checkpoint("idle", CheckpointOptions(sign_key="/k.pem"))
    assert not journal.exists(containers.dir(container.id)) and not host.ran("checkpoint")


def test_an_export_writes_the_archive_and_keeps_nothing_local(checkpoints, containers, engine, host, web, tmp_path):
    directory, images, _ = paths(containers, web)
    export = tmp_path / "web.tar.zst"
    during = {}
    host.on_dump = lambda *_: during.update(tmpfs=host.mounted(images), journal=journal.read(directory))
    result = checkpoints.checkpoint("web", CheckpointOptions(export=str(export)))
    assert during["tmpfs"] == [images]   # the images only pass through memory on their way
    assert during["journal"].export == str(export) and during["journal"].archive_temp.startswith(
        f"{tmp_path}/.web.tar.zst.")
    assert result.archive == str(export) and result.archive_size == export.stat().st_size
    assert export.stat().st_mode & 0o777 == 0o600
    container, members = unpacked(export, tmp_path)
    assert container["id"] == web.id and container["name"] == "web"
    assert {"config.dump", "ferry-config.json", "spec.dump", "rootfs-diff.tar", "deleted.files", "ctr.log",
            "checkpoint/inventory.img", "checkpoint/pages-1.img"} <= members
    assert "network.status" not in members   # podman would ask its network for ferry's address
    seen = containers.get("web")
    assert (seen.state, seen.checkpointed_at) == (EXITED, None)   # restorable from its archive only
    assert not os.path.exists(images) and host.mounts == [] and host.leftovers(web.id) == []
    assert [p for p in os.listdir(tmp_path) if p.startswith(".web.tar.zst")] == []


def test_an_export_with_R_archives_the_log_as_it_was_and_runs_on(checkpoints, containers, host, web, tmp_path):
    directory, images, _ = paths(containers, web)
    export = tmp_path / "web.tar"
    checkpoints.checkpoint("web", CheckpointOptions(export=str(export), leave_running=True))
    _, members = unpacked(export, tmp_path)
    assert "ctr.log" in members and not os.path.exists(os.path.join(directory, ".ctr.log.archived"))
    assert containers.get("web").state == RUNNING and host.alive(web.pid)
    assert not os.path.exists(images) and host.mounted(images) == []


def test_the_checkpoint_is_recorded_before_the_archive_is_written(checkpoints, containers, engine, host, web,
                                                                  tmp_path, monkeypatch):
    directory, images, _ = paths(containers, web)
    export = tmp_path / "web.tar.zst"
    seen = at_phase(monkeypatch, tmp_path, "checkpoint:recorded", lambda: (
        containers.get(web.id, refresh=False).checkpointed_at, journal.read(directory).phase, export.exists()))
    checkpoints.checkpoint("web", CheckpointOptions(export=str(export)))
    seen.thread.join()
    checkpointed_at, phase, archived = seen.result
    assert checkpointed_at and phase == "dumped" and not archived


def at_phase(monkeypatch, tmp_path, name: str, inspect) -> SimpleNamespace:
    """Run `inspect` while the command waits at phase `name` (util/phases.py)."""
    marker = tmp_path / "phase"
    monkeypatch.setenv("FERRY_TEST_PHASE", name)
    monkeypatch.setenv("FERRY_TEST_PHASE_FILE", str(marker))
    seen = SimpleNamespace(result=None)

    def watch():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (marker.exists() and marker.read_text().strip()):
            time.sleep(0.01)
        try:
            seen.result = inspect()
        finally:
            marker.unlink()
    watcher = threading.Thread(target=watch)
    watcher.start()
    seen.thread = watcher
    return seen


def test_an_export_that_fails_keeps_the_checkpoint_on_disk_with_its_hint(checkpoints, containers, engine, host,
                                                                        web, tmp_path):
    directory, images, _ = paths(containers, web)
    export = tmp_path / "web.tar.zst"

    def in_the_way(*_):   # the archive's place is taken while CRIU dumps: its rename will fail
        export.mkdir()
        (export / "something").write_text("x")
    host.on_dump = in_the_way
    with pytest.raises(FerryError) as failure:
        checkpoints.checkpoint("web", CheckpointOptions(export=str(export)))
    assert failure.value.message == f"cannot write {export}: Is a directory"
    assert failure.value.hint == KEPT_HINT
    seen = containers.get("web")
    assert (seen.state, seen.exit_code) == (EXITED, 0) and seen.checkpointed_at
    assert host.mounts == [] and not mounts_under(containers.files(seen.id).checkpoint_images)   # off its tmpfs
    assert os.path.exists(os.path.join(images, "inventory.img"))
    assert not journal.exists(directory) and host.leftovers(web.id) == []
    # ... and the hint is right
    restored = checkpoints.restore("web", RestoreOptions())
    assert restored.authenticity == Authenticity.LOCAL and containers.get("web").state == RUNNING


def test_an_export_whose_rename_fails_leaves_no_temp_archive(checkpoints, containers, host, web, tmp_path):
    export = tmp_path / "web.tar.zst"
    host.on_dump = lambda *_: (export.mkdir(), (export / "x").write_text("x"))
    with pytest.raises(FerryError):
        checkpoints.checkpoint("web", CheckpointOptions(export=str(export)))
    assert [p for p in os.listdir(tmp_path) if p.startswith(".web.tar.zst")] == []


def test_an_export_with_R_that_fails_changes_nothing(checkpoints, containers, host, web, tmp_path):
    export = tmp_path / "web.tar.zst"
    host.on_dump = lambda *_: (export.mkdir(), (export / "x").write_text("x"))
    with pytest.raises(FerryError) as failure:
        checkpoints.checkpoint("web", CheckpointOptions(export=str(export), leave_running=True))
    assert failure.value.hint is None
    seen = containers.get("web")
    assert (seen.state, seen.pid, seen.checkpointed_at) == (RUNNING, web.pid, None)
    images = paths(containers, web)[1]
    assert host.mounted(images) == [] and not os.path.exists(images)


@pytest.fixture
def handled_signals():
    signals.install()
    yield
    for number in signals.HANDLED:
        signal.signal(number, signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL)


def test_a_signal_during_the_dump_waits_until_the_checkpoint_is_recorded(checkpoints, containers, host, web,
                                                                         handled_signals):
    directory, images, _ = paths(containers, web)
    host.on_dump = lambda *_: os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        checkpoints.checkpoint("web", CheckpointOptions())
    seen = containers.get("web")
    assert seen.state == EXITED and seen.checkpointed_at   # restorable: nothing of the dump was lost
    assert os.path.exists(os.path.join(images, "inventory.img")) and not journal.exists(directory)


# ---- restore in place ------------------------------------------------------------------

def test_a_local_checkpoint_restores_in_place(checkpoints, containers, host, web):
    directory, images, work = paths(containers, web)
    checkpoints.checkpoint("web", CheckpointOptions())
    result = checkpoints.restore("web", RestoreOptions(tcp_established=True))
    assert host.restores == [{"id": web.id, "images": images, "work": work, "tcp_established": True}]
    seen = containers.get("web")
    assert (seen.state, seen.checkpointed_at) == (RUNNING, None) and seen.restored_at
    assert (result.id, result.name, result.authenticity) == (web.id, "web", Authenticity.LOCAL)
    assert result.criu == {"forking_time": 700, "restore_time": 8000, "pages_restored": 200}
    assert not os.path.exists(images) and not journal.exists(directory)
    assert host.published() and host.links[f"fv{web.id[:12]}"]["up"] is True


def test_a_failed_restore_keeps_the_checkpoint(checkpoints, containers, host, web):
    directory, images, _ = paths(containers, web)
    checkpoints.checkpoint("web", CheckpointOptions())
    host.fail["restore"] = (1, "criu failed: type RESTORE errno 0")
    with pytest.raises(ToolError, match="criu failed"):
        checkpoints.restore("web", RestoreOptions())
    seen = containers.get("web")
    assert seen.state == EXITED and seen.checkpointed_at and os.path.exists(os.path.join(images, "inventory.img"))
    assert host.leftovers(web.id) == [] and not journal.exists(directory)
    del host.fail["restore"]
    assert checkpoints.restore("web", RestoreOptions()).id == web.id


def test_what_an_in_place_restore_refuses(checkpoints, containers, host, web):
    with pytest.raises(Conflict, match="container 'web' is running"):
        checkpoints.restore("web", RestoreOptions())
    containers.stop("web")
    with pytest.raises(NotFound, match="container 'web' has no local checkpoint"):
        checkpoints.restore("web", RestoreOptions())
    containers.set_checkpointed(web.id, "2024-01-01T00:00:00Z")   # kept in memory, and the host restarted
    with pytest.raises(NotFound, match="the local checkpoint of container 'web' is gone"):
        checkpoints.restore("web", RestoreOptions())
    for options in (RestoreOptions(name="x"), RestoreOptions(volumes=("/a:/b",)),
                    RestoreOptions(allow_bind_mounts=True)):
        with pytest.raises(UsageError, match="can only be used with a checkpoint image or --import"):
            checkpoints.restore("web", options)
    with pytest.raises(UsageError, match="restore needs a container name"):
        checkpoints.restore(None, RestoreOptions())
    assert not host.restores


# ---- restore from an archive ---------------------------------------------------------

def exported(checkpoints, containers, tmp_path, name: str = "web", **run) -> str:
    containers.run(RunOptions(image="busy:1", name=name, detach=True, **run))
    export = tmp_path / f"{name}.tar.zst"
    checkpoints.checkpoint(name, CheckpointOptions(export=str(export)))
    return str(export)


def nothing_made(engine, host, before: set[str]) -> None:
    """A refused restore leaves no container, address, directory or staging dir."""
    assert {c.id for c in engine.containers.list(all_states=True)} == before
    assert {r.container_id for r in engine.networks.reservations()} <= before
    assert set(os.listdir(engine.layout.containers)) == before
    assert not os.path.exists(engine.layout.tmp) or os.listdir(engine.layout.tmp) == []
    assert host.restores == []


def test_an_archive_too_large_for_this_host_is_refused_up_front_with_the_numbers(checkpoints, containers, engine,
                                                                                 host, tmp_path, monkeypatch):
    archive = exported(checkpoints, containers, tmp_path)
    before = {c.id for c in containers.list(all_states=True)}
    host.memory = 100 << 20
    monkeypatch.setattr(checkpoints_module, "disk_free", lambda path: 10 << 20)   # the host probe of free disk
    with pytest.raises(FerryError) as refused:
        checkpoints.restore(None, RestoreOptions(import_path=archive, name="copy"))
    message = refused.value.message
    assert message.startswith(f"cannot restore {archive}: its members take ")
    assert message.endswith(f", more than this host can stage (100.0 MiB of memory and 10.0 MiB of disk free "
                            f"under {engine.layout.tmp}, less a margin)")
    assert refused.value.hint == "free memory or disk, or restore on a larger host"
    assert host.mounted(engine.layout.root) == []
    nothing_made(engine, host, before)


def test_an_archive_whose_image_is_not_here_is_refused(checkpoints, containers, engine, host, tmp_path):
    archive = exported(checkpoints, containers, tmp_path)
    containers.remove("web")
    engine.images.remove("busy:1")
    with pytest.raises(NotFound, match=r"image localhost/busy:1 \(sha256:[0-9a-f]{64}\) is not in this root") as \
            refused:
        checkpoints.restore(None, RestoreOptions(import_path=archive))
    assert refused.value.hint == "load it with 'ferry load -i FILE', or pass --image-archive FILE"
    nothing_made(engine, host, set())


def test_host_paths_an_archive_mounts_need_this_host_s_grant(checkpoints, containers, engine, host, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    archive = exported(checkpoints, containers, tmp_path, volumes=(f"{shared}:/data:ro",))
    before = {c.id for c in containers.list(all_states=True)}
    with pytest.raises(FerryError) as refused:
        checkpoints.restore(None, RestoreOptions(import_path=archive, name="copy"))
    assert refused.value.message == (f"the checkpoint mounts host paths, which only this host's user may grant: "
                                     f"{shared} at /data")
    nothing_made(engine, host, before)
    with pytest.raises(UsageError, match=f"-v {shared}:/elsewhere: the checkpoint has no mount at /elsewhere"):
        checkpoints.restore(None, RestoreOptions(import_path=archive, name="copy", volumes=(f"{shared}:/elsewhere",)))
    nothing_made(engine, host, before)


def test_a_volume_that_exists_here_is_shared_only_when_re_stated(checkpoints, containers, engine, host, tmp_path):
    archive = exported(checkpoints, containers, tmp_path, volumes=("data:/data",))
    before = {c.id for c in containers.list(all_states=True)}
    with pytest.raises(Conflict) as refused:
        checkpoints.restore(None, RestoreOptions(import_path=archive, name="copy"))
    assert refused.value.message == "the checkpoint mounts volumes that already exist here: data at /data"
    nothing_made(engine, host, before)


def test_images_the_check_refuses_leave_nothing_behind(checkpoints, containers, engine, host, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    archive = exported(checkpoints, containers, tmp_path, volumes=("data:/data", f"{shared}:/etc/app"))
    containers.remove("web")
    engine.volumes.remove("data", [])
    # Granted, the bind mount passes; the fake dump's images are no CRIU images, and the restore is
    # undone after it made the container, its address and its volume. Without pycriu the check cannot
    # read them at all (imagecheck then raises pycriu's ImportError as it is, not Incompatible).
    try:
        import pycriu  # noqa: F401
        refusal = BadArchive
    except ImportError:
        refusal = Exception
    with pytest.raises(refusal):
        checkpoints.restore(None, RestoreOptions(import_path=archive, name="copy", allow_bind_mounts=True))
    nothing_made(engine, host, set())
    assert not engine.volumes.exists("data")   # the volume this restore made goes with it
    assert host.mounts == [] and host.netns == set() and host.published() == []


def test_stale_staging_dirs_are_swept_unless_their_restore_still_runs(checkpoints, engine):
    stale, busy = "a" * 64, "b" * 64
    for container_id in (stale, busy):
        os.makedirs(os.path.join(engine.layout.tmp, f"import-{container_id}", "archive"))
    os.makedirs(os.path.join(engine.layout.tmp, "import-not-an-id"))
    holder = hold_lock(engine.layout.lock(f"container-{busy}"), "ferry container restore")
    try:
        assert checkpoints.sweep_stale_imports() == [f"staging dir import-{stale}"]
    finally:
        release(holder)
    assert sorted(os.listdir(engine.layout.tmp)) == [f"import-{busy}", "import-not-an-id"]


# ---- what a restore makes of an archive's records -------------------------------------

IMAGE = "d" * 64


def staged(tmp_path, config, members: dict[str, int] | None = None, **files):
    """A staging dir holding config.dump (and `files`), and what read_archive would say of it."""
    staging = tmp_path / f"staging-{len(os.listdir(tmp_path))}"
    staging.mkdir()
    saved = ArchivedContainer("c" * 64, "cache", IMAGE, "2026-01-01T00:00:00.000000000Z", config)
    files.setdefault("config.dump", saved.to_json())
    for name, text in files.items():
        (staging / name).write_text(text)
    sizes = {name: len(text) for name, text in files.items()}
    sizes.update({"checkpoint/inventory.img": 9}, **(members or {}))
    contents = SimpleNamespace(members=[SimpleNamespace(name=n, size=s) for n, s in sizes.items()],
                               container={"id": saved.id, "name": saved.name, "image_id": IMAGE})
    return str(staging), contents


@pytest.fixture
def config(containers, engine):
    """A container's config as an archive would carry it from another root."""
    template = containers.create(RunOptions(image="busy:1", name="template", volumes=("data:/data",)))
    containers.remove("template")
    engine.volumes.remove("data", [])
    return template.config


def test_an_archive_s_records_are_read_strictly(tmp_path, config):
    """As ferry wrote them before podman's shape: its record in config.dump, and network.status."""
    status = json.dumps({"network": config.network, "ip": config.ip, "mac": config.mac,
                         "ports": [p.to_dict() for p in config.ports]})
    staging, contents = staged(tmp_path, config, **{"network.status": status, "deleted.files": '["etc/gone"]'})
    saved, deleted = read_members(staging, contents)
    assert (saved.name, saved.config, deleted) == ("cache", config, ("etc/gone",))

    def refusal(**changes) -> str:
        staging, contents = staged(tmp_path, config, changes.pop("members", None), **changes.pop("files", {}))
        contents.container.update(changes)
        with pytest.raises(BadArchive) as refused:
            read_members(staging, contents)
        assert refused.value.hint == "the archive is damaged or forged; do not restore from it"
        return refused.value.message
    assert refusal(name="other") == "config.dump names another container than the archive's manifest"
    assert refusal(members={"etc/passwd": 10}) == "member etc/passwd has no place in a ferry checkpoint"
    assert refusal(members={"volumes/other.tar": 10}) == "member volumes/other.tar has no place in a ferry checkpoint"
    assert refusal(members={"big.dump": 17 << 20}) == f"big.dump in the archive is too large ({17 << 20} bytes)"
    assert refusal(files={"config.dump": "{}"}).startswith("config.dump in the archive is invalid: ")


def _podman_dump(config, **changes) -> str:
    fields = dict(container_id="c" * 64, name="cache", image_id=IMAGE, image_name=config.image,
                  created="2026-01-01T00:00:00Z", spec={})
    fields.update(changes)
    return podman_config_dump(**fields).decode()


def test_ferry_s_record_beside_podman_s_config_dump_must_name_the_same_container(tmp_path, config):
    saved = ArchivedContainer("c" * 64, "cache", IMAGE, "2026-01-01T00:00:00.000000000Z", config)
    staging, contents = staged(tmp_path, config, **{"ferry-config.json": saved.to_json(),
                                                    "config.dump": _podman_dump(config)})
    assert read_members(staging, contents)[0] == saved
    for forged in (dict(name="other"), dict(image_id="e" * 64)):
        staging, contents = staged(tmp_path, config, **{"ferry-config.json": saved.to_json(),
                                                        "config.dump": _podman_dump(config, **forged)})
        with pytest.raises(BadArchive, match="^config.dump names another container than ferry-config.json$"):
            read_members(staging, contents)


def test_mounts_for_the_target_host(tmp_path):
    bind = VolumeSpec("bind", "/srv/conf", "/etc/app", True)
    volume, other = VolumeSpec("volume", "data", "/data"), VolumeSpec("volume", "logs", "/logs")
    here = {"logs"}.__contains__
    with pytest.raises(FerryError, match="mounts host paths, which only this host's user may grant: /srv/conf at "
                                         "/etc/app"):
        mounts_for_target((bind, volume), (), False, here)
    assert mounts_for_target((bind, volume), (), True, here) == ((bind, volume), (bind,))
    restated = VolumeSpec("bind", str(tmp_path), "/etc/app")
    assert mounts_for_target((bind, volume), (restated,), False, here) == ((restated, volume), ())
    with pytest.raises(Conflict, match="mounts volumes that already exist here: logs at /logs"):
        mounts_for_target((other,), (), False, here)
    shared = VolumeSpec("volume", "logs", "/logs")
    assert mounts_for_target((other,), (shared,), False, here) == ((shared,), ())
    with pytest.raises(UsageError, match="two -v options name the same container path"):
        mounts_for_target((other,), (shared, shared), False, here)
    with pytest.raises(UsageError) as unknown:
        mounts_for_target((other,), (VolumeSpec("volume", "x", "/x"),), False, here)
    assert unknown.value.hint == "a restore can only re-state the mounts the container had: /logs"


def test_the_archived_config_is_made_this_host_s(checkpoints, containers, engine, config, tmp_path):
    from ferry.network.ports import parse_port
    elsewhere = config._replace(network="lan", ip="192.168.7.7", mac="02:00:00:00:07:07",
                                ports=(parse_port("80:80"),))
    made, granted = checkpoints._config_for_target(elsewhere, RestoreOptions(ports=("9090:80",)), ())
    assert (made.network, made.ip, made.mac) == ("ferry", "", "")   # no such network here: a new address
    assert [str(p) for p in made.ports] == ["9090->80/tcp"] and granted == ()
    same, _ = checkpoints._config_for_target(config, RestoreOptions(ignore_static_mac=True), ())
    assert (same.ip, same.mac) == (config.ip, "")
    bind = config._replace(volumes=(VolumeSpec("bind", str(tmp_path / "absent"), "/etc/app"),))
    with pytest.raises(NotFound, match=r"host path '.*/absent' mounted at /etc/app does not exist here"):
        checkpoints._config_for_target(bind, RestoreOptions(allow_bind_mounts=True), ())
    no_volumes, _ = checkpoints._config_for_target(config, RestoreOptions(ignore_volumes=True), ())
    assert no_volumes.volumes == ()


def test_an_archive_from_another_cpu_is_refused_and_restored_with_force(checkpoints, containers, web, host,
                                                                       tmp_path, monkeypatch):
    archive = str(tmp_path / "web.tar.zst")
    checkpoints.checkpoint("web", CheckpointOptions(export=archive))
    containers.remove(web.id)
    # Another CPU record here than the archive's, so CRIU's check runs (the same record passes at once).
    monkeypatch.setattr("ferry.checkpoint.hostinfo.host_info", lambda: HOST._replace(cpuinfo_image="BBBB"))
    host.fail["cpuinfo"] = (1, "Error (criu/arch/x86/cpu.c:223): cpu: CPU instruction capabilities do not match "
                               "run time")
    with pytest.raises(FerryError) as refused:
        checkpoints.restore(None, RestoreOptions(import_path=archive))
    assert "the checkpoint may not restore on this host" in refused.value.message
    assert "CPU instruction capabilities do not match run time" in refused.value.message
    assert "SIGILL" in refused.value.message and "--force" in refused.value.hint
    assert containers.list() == []
    # --force lets the host's difference pass, never the archive's own checks: the fake
    # dump's images are no CRIU images, which the image check refuses next.
    with pytest.raises(Exception) as checked:
        checkpoints.restore(None, RestoreOptions(import_path=archive, force=True))
    assert "may not restore on this host" not in str(checked.value)
    assert containers.list() == []
