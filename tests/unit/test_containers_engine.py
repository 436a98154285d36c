"""engine/containers.py without root: create, start, stop, kill, rm and cleanup
of containers on a fake host (tests/unit/fakehost.py: runc, ip, nft and mount
answered at the subprocess chokepoint, the monitor's launch faked at proc.spawn,
/proc and the mount table kept by the fake). Each failure part-way is undone:
the tests say what the host holds afterwards."""

from __future__ import annotations

import json
import os

import pytest

from ferry.engine import journal
from ferry.engine.containers import CRIU_OPTIONS, RestoreFrom, RunOptions, Undo, signal_name
from ferry.engine.listing import CREATED, EXITED, RUNNING
from ferry.store.layout import CHECKPOINTING, CRIU_CONFIG, CRIU_RESTORE_HOOK
from ferry.util.errors import Conflict, DamagedRecord, FerryError, NotFound, ToolError, UsageError
from ferry.util.locks import Busy, is_locked
from tests.unit.fakehost import containers, engine, hold_lock, host, meanwhile, release  # noqa: F401  (fixtures)


def container_dir(containers, container) -> str:
    return containers.dir(container.id)


def read(path) -> str:
    with open(path) as f:
        return f.read()


# ---- create ----------------------------------------------------------------------

def test_create_records_the_container_with_its_address_volume_and_directory(containers, engine, host):
    container = containers.create(RunOptions(image="busy:1", name="web", ports=("8080:80",),
                                             env=("A=1",), volumes=("data:/data",), hostname="h1"))
    assert (container.name, container.state, container.pid) == ("web", CREATED, None)
    config = container.config
    assert config.args == ("sh", "-c", "serve") and config.env == ("PATH=/bin", "A=1")
    assert config.ip == "10.90.0.2" and config.mac and config.hostname == "h1"
    assert [str(p) for p in config.ports] == ["8080->80/tcp"]
    assert engine.volumes.exists("data") and os.path.isdir(container_dir(containers, container))
    assert engine.networks.reservation(container.id).ip == "10.90.0.2"
    assert containers.get("web").id == container.id == containers.get(container.id[:5]).id
    # nothing is made on the host until start: a create only reads the host's routes
    assert host.calls and all(c[:3] == ["ip", "-j", "-4"] for c in host.calls)


def test_a_create_that_fails_at_its_last_step_leaves_nothing_it_made(containers, engine, host, tmp_path):
    engine.volumes.create("kept")
    os.makedirs(engine.layout.root, exist_ok=True)
    with open(engine.layout.containers, "w") as f:   # the container's directory cannot be made
        f.write("in the way")
    with pytest.raises(OSError):
        containers.create(RunOptions(image="busy:1", name="web", volumes=("fresh:/a", "kept:/b")))
    assert containers.list(all_states=True) == []
    assert engine.networks.reservations() == []
    assert [v["Name"] for v in engine.volumes.list()] == ["kept"]   # made before: kept


def test_a_name_in_use_or_a_taken_address_is_refused_with_nothing_made(containers, engine):
    first = containers.create(RunOptions(image="busy:1", name="web", ip="10.90.0.7"))
    with pytest.raises(Conflict, match="the container name 'web' is already in use"):
        containers.create(RunOptions(image="busy:1", name="web", volumes=("v:/v",)))
    with pytest.raises(Conflict, match="IP 10.90.0.7 is already leased"):
        containers.create(RunOptions(image="busy:1", name="other", ip="10.90.0.7", volumes=("v:/v",)))
    assert [c.name for c in containers.list(all_states=True)] == ["web"]
    assert [r.container_id for r in engine.networks.reservations()] == [first.id]
    assert not engine.volumes.exists("v")
    assert sorted(os.listdir(engine.layout.containers)) == [first.id]


def test_bad_requests_are_refused_before_anything_is_recorded(containers, tmp_path):
    with pytest.raises(NotFound, match="host path .* does not exist"):
        containers.create(RunOptions(image="busy:1", volumes=(f"{tmp_path}/absent:/x",)))
    with pytest.raises(UsageError, match="has no command"):
        containers.create(RunOptions(image="busy:1", entrypoint=""))
    with pytest.raises(NotFound):
        containers.create(RunOptions(image="nope:1"))
    assert containers.list(all_states=True) == []


def test_lookups(containers, engine):
    a = containers.create(RunOptions(image="busy:1", name="a"))
    with pytest.raises(NotFound, match="no such container 'zzz'"):
        containers.get("zzz")
    assert containers.users_of_image(engine.image.id) == ["a"]
    with engine.db.write() as conn:   # a record no ferry could have written
        conn.execute("UPDATE containers SET config = '{' WHERE id = ?", (a.id,))
    with pytest.raises(FerryError, match="the record of container 'a' is damaged") as damaged:
        containers.get("a")
    assert damaged.value.hint == f"remove it with 'ferry rm -f {a.id[:12]}'"


# ---- start -----------------------------------------------------------------------

def test_start_mounts_wires_publishes_and_launches_the_monitor(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="web", ports=("8080:80",), detach=True))
    directory = container_dir(containers, container)
    assert container.state == RUNNING and container.pid == host.runc[container.id]["pid"]
    assert container.started_at and container.restored_at is None
    # the rootfs: an overlay of the image's layer and the container's upper dir
    [overlay] = host.mounts
    assert (overlay.point, overlay.fstype) == (os.path.join(directory, "rootfs"), "overlay")
    assert overlay.options == (f"lowerdir={engine.images.layer_paths(engine.image)[0]},"
                               f"upperdir={directory}/upper,workdir={directory}/work")
    # its netns and veth, wired (not isolated), and its port
    short = container.id[:12]
    assert f"ferry-{short}" in host.netns and host.links[f"fv{short}"]["up"] is True
    assert host.published() == [f"pub {engine.networks.root_tag} {container.id} tcp 8080 * 80"]
    # the spec runc gets, and the files it mounts
    spec = json.loads(read(os.path.join(directory, "config.json")))
    assert spec["process"]["args"] == ["sh", "-c", "serve"]
    assert spec["annotations"]["org.criu.config"] == os.path.join(directory, CRIU_CONFIG)
    assert read(os.path.join(directory, CRIU_CONFIG)) == CRIU_OPTIONS
    assert read(os.path.join(directory, "hostname")) == short + "\n"
    assert "10.90.0.2" in read(os.path.join(directory, "hosts"))
    assert {m["destination"] for m in spec["mounts"]} >= {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}
    # the monitor: in its own session, told how to clean up after the exit
    [monitor] = [c for c in host.calls if c[1:3] == ["-m", "ferry.runtime.monitor"] and "--exit-command" in c]
    exit_command = json.loads(monitor[monitor.index("--exit-command") + 1])
    assert exit_command[-3:] == ["container", "cleanup", container.id] and exit_command[exit_command.index("--root") + 1] == \
        engine.layout.root
    assert "--wait-attach" not in monitor and "--restore-images" not in monitor
    assert host.ran("ferry.network.garp")   # neighbours learn the address at once
    assert not journal.exists(directory) and not is_locked(engine.layout.lock(f"container-{container.id}"))


def test_a_foreground_run_waits_for_its_attach_client(containers, host):
    containers.run(RunOptions(image="busy:1", name="fg", tty=True, interactive=True))
    [monitor] = [c for c in host.calls if c[1:3] == ["-m", "ferry.runtime.monitor"] and "--exit-command" in c]
    assert {"--wait-attach", "--terminal", "--interactive"} <= set(monitor)


def test_start_of_a_running_container_changes_nothing(containers, host):
    container = containers.run(RunOptions(image="busy:1", name="web", detach=True))
    calls = len(host.calls)
    assert containers.start("web").pid == container.pid
    assert len(host.calls) == calls


def started_then_failed(containers, engine, host, key, message, **options):
    """A start that fails where `key` says: the container stays created, and
    the host holds nothing of its start."""
    container = containers.create(RunOptions(image="busy:1", name="web", **options))
    host.fail[key] = (1, message)
    with pytest.raises(FerryError) as failure:
        containers.start("web")
    after = containers.get("web")
    assert (after.state, after.pid) == (CREATED, None)
    assert host.leftovers(container.id) == []
    assert not journal.exists(container_dir(containers, container))
    assert engine.networks.reservation(container.id) is not None   # the container keeps its address
    return container, failure.value


def test_a_monitor_that_cannot_create_the_container_undoes_the_start(containers, engine, host):
    container, error = started_then_failed(containers, engine, host, "create", "runc create: no such file",
                                           ports=("8080:80",))
    assert isinstance(error, ToolError) and str(error) == "starting the container failed (exit 1): " \
                                                           "runc create: no such file"
    assert host.published() == [] and host.mounts == []


def test_a_mount_that_fails_undoes_nothing_it_did_not_do(containers, engine, host):
    container, error = started_then_failed(containers, engine, host, "mount", "mount: permission denied")
    assert "mount the container's root filesystem" in str(error)
    assert not host.ran("ip", "netns", "add")   # it failed before the network


def test_a_port_in_use_undoes_the_mount_and_the_network(containers, engine, host):
    other = containers.run(RunOptions(image="busy:1", name="other", ports=("8080:80",), detach=True))
    container = containers.create(RunOptions(image="busy:1", name="web", ports=("8080:81",)))
    with pytest.raises(Conflict, match=f"port 8080/tcp is already in use by container {other.id[:12]}"):
        containers.start("web")
    assert host.leftovers(container.id) == [] and containers.get("web").state == CREATED
    assert host.leftovers(other.id) != []   # the other one runs on


def test_a_monitor_that_never_answers_is_given_up_with_its_cgroups(containers, engine, host):
    container = containers.create(RunOptions(image="busy:1", name="web"))
    host.fail["monitor silent"] = (1, "")
    with pytest.raises(ToolError, match=r"it said nothing in 1 s and was stopped; see .*/monitor.log"):
        containers.start("web")
    assert host.cgroups_killed == [container.id]
    assert host.leftovers(container.id) == [] and containers.get("web").state == CREATED


def test_an_interrupted_start_is_undone(containers, engine, host, monkeypatch):
    container = containers.create(RunOptions(image="busy:1", name="web"))
    from ferry.runtime import launch

    def interrupted(**_):
        raise KeyboardInterrupt("SIGTERM")
    monkeypatch.setattr(launch, "start_monitor", interrupted)
    with pytest.raises(KeyboardInterrupt):
        containers.start("web")
    assert host.leftovers(container.id) == [] and not journal.exists(container_dir(containers, container))


def test_a_failed_run_removes_its_container(containers, engine, host):
    host.fail["create"] = (1, "exec: no such file")
    with pytest.raises(ToolError):
        containers.run(RunOptions(image="busy:1", name="web", volumes=("data:/data",), detach=True))
    assert containers.list(all_states=True) == [] and engine.networks.reservations() == []
    assert os.listdir(engine.layout.containers) == []
    assert engine.volumes.exists("data")   # a volume outlives its container, as in podman


def test_start_never_kills_a_process_the_record_missed(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="web", detach=True))
    with engine.db.write() as conn:   # a command died before it recorded the start
        conn.execute("UPDATE containers SET state = ?, pid = NULL WHERE id = ?", (EXITED, container.id))
    calls = len(host.calls)
    with pytest.raises(Conflict, match=rf"container 'web' already runs \(pid {container.pid}\), though "
                                       r"ferry's record says exited"):
        containers.start("web")
    assert host.alive(container.pid) and host.runc[container.id]["status"] == "running"
    assert [c[-2:] for c in host.calls[calls:]] == [["state", container.id]] or host.calls[calls:] == []
    # stop stops it all the same
    stopped = containers.stop("web")
    assert stopped.state == EXITED and not host.alive(container.pid)


def test_a_restart_after_an_exit_clears_the_old_exit(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="web", detach=True))
    containers.stop("web")
    directory = container_dir(containers, container)
    assert os.path.exists(os.path.join(directory, "exit.json"))
    again = containers.start("web")
    assert again.state == RUNNING and again.pid != container.pid and again.exit_code is None
    assert not os.path.exists(os.path.join(directory, "exit.json"))
    assert len(host.mounts) == 1


def test_a_start_from_a_checkpoint_keeps_the_wire_cut_until_criu_put_the_sockets_back(containers, engine, host,
                                                                                        tmp_path):
    container = containers.create(RunOptions(image="busy:1", name="web"))
    directory = container_dir(containers, container)
    images, work = tmp_path / "images", tmp_path / "work"
    images.mkdir()
    work.mkdir()
    (images / "inventory.img").write_bytes(b"x")
    seen = {}

    def at_restore(container_id, images_dir):
        seen["carrier"] = host.links[f"fv{container.id[:12]}"]["up"]
        seen["criu.conf"] = read(os.path.join(directory, CRIU_CONFIG))
        seen["hook"] = read(os.path.join(directory, CRIU_RESTORE_HOOK))
    original = host._monitor

    def monitor(argv):
        at_restore(container.id, str(images))
        return original(argv)
    host._monitor = monitor
    restored = containers.start("web", restore=RestoreFrom(str(images), str(work), tcp_established=True))
    assert seen["carrier"] is False   # isolated while CRIU restores
    hook = os.path.join(directory, CRIU_RESTORE_HOOK)
    assert seen["criu.conf"] == CRIU_OPTIONS + f"action-script {hook}\n"
    assert "post-restore" in seen["hook"] and f"link set fv{container.id[:12]} up" in seen["hook"]
    assert host.restores == [{"id": container.id, "images": str(images), "work": str(work),
                              "tcp_established": True}]
    # once it runs: the wire is up, and later dumps need no hook
    assert host.links[f"fv{container.id[:12]}"]["up"] is True
    assert read(os.path.join(directory, CRIU_CONFIG)) == CRIU_OPTIONS and not os.path.exists(hook)
    assert restored.state == RUNNING and restored.restored_at == restored.started_at


def test_a_restore_that_fails_leaves_no_restore_hook(containers, host, tmp_path):
    container = containers.create(RunOptions(image="busy:1", name="web"))
    directory = container_dir(containers, container)
    host.fail["restore"] = (1, "criu failed: type RESTORE errno 28")
    with pytest.raises(ToolError):
        containers.start("web", restore=RestoreFrom(str(tmp_path), str(tmp_path), False))
    assert not os.path.exists(os.path.join(directory, CRIU_RESTORE_HOOK))
    assert host.leftovers(container.id) == [] and containers.get("web").state == CREATED


def test_a_restore_of_a_running_container_is_refused(containers, tmp_path):
    containers.run(RunOptions(image="busy:1", name="web", detach=True))
    with pytest.raises(Conflict, match="container 'web' is running"):
        containers.start("web", restore=RestoreFrom(str(tmp_path), str(tmp_path), False))


# ---- stop, kill, cleanup --------------------------------------------------------------

def test_stop_sends_the_stop_signal_and_releases_what_the_run_held(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="web", ports=("8080:80",), detach=True))
    stopped = containers.stop("web")
    assert (stopped.state, stopped.exit_code, stopped.pid) == (EXITED, 128 + 15, None)
    assert stopped.finished_at == "2024-01-01T00:00:00.000000000Z"   # as the monitor saw it
    assert host.ran("kill", container.id, "TERM") and not host.ran("kill", "--all")
    assert host.leftovers(container.id) == []
    assert engine.networks.reservation(container.id).ip == container.config.ip   # kept for a restart
    assert containers.stop("web").state == EXITED   # a second stop has nothing to do


def test_stop_kills_what_ignores_its_stop_signal(containers, engine, host, tmp_path):
    engine.import_image(tmp_path, "quit:1", stop_signal="SIGQUIT")
    container = containers.run(RunOptions(image="quit:1", name="web", detach=True))
    host.ignored_signals.add(3)
    stopped = containers.stop("web", timeout=0)
    assert host.ran("kill", container.id, "QUIT") and host.ran("kill", "--all", container.id, "KILL")
    assert stopped.exit_code == 128 + 9 and host.leftovers(container.id) == []


def test_kill_sends_the_signal_it_is_given(containers, host):
    container = containers.run(RunOptions(image="busy:1", name="web", detach=True))
    host.ignored_signals.add(1)
    containers.kill("web", "hup")
    assert host.ran("kill", container.id, "HUP")
    with pytest.raises(UsageError, match="unknown signal 'SIGNOPE'"):
        containers.kill("web", "SIGNOPE")
    containers.kill("web", "9")
    assert containers.get("web").state == EXITED
    with pytest.raises(Conflict, match="cannot kill container 'web': it is exited"):
        containers.kill("web")
    assert signal_name("sigterm") == "TERM" and signal_name("15") == "15"


def test_an_exit_no_command_saw_is_recorded_by_the_next_look(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="web", ports=("8080:80",), detach=True))
    host.container_exits(container.id, 3, container_dir(containers, container))
    assert containers.list() == []
    seen = containers.get("web")
    assert (seen.state, seen.exit_code) == (EXITED, 3)
    assert host.leftovers(container.id) == []


def test_an_exit_under_another_commands_lock_is_left_to_that_command(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="web", detach=True))
    host.container_exits(container.id, 0, container_dir(containers, container))
    holder = hold_lock(engine.layout.lock(f"container-{container.id}"), "ferry stop")
    try:
        assert containers.get("web").state == RUNNING   # as recorded: the holder records the exit
        with pytest.raises(Busy, match=rf"container 'web' is busy: ferry stop \(pid {holder.pid}\) is working "
                                       r"on it"):
            containers.cleanup("web", wait=0)
    finally:
        release(holder)
    assert containers.get("web").state == EXITED   # the kernel dropped the dead holder's lock


def test_cleanup_is_idempotent_and_leaves_a_running_container_alone(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="web", detach=True))
    assert containers.cleanup("web").state == RUNNING and host.leftovers(container.id) != []
    host.container_exits(container.id, 5, container_dir(containers, container))
    first = containers.cleanup("web")
    second = containers.cleanup("web")
    assert first == second and (first.state, first.exit_code) == (EXITED, 5)


def test_an_exit_with_no_exit_file_is_unknown(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="web", detach=True))
    host.crash(container.id)   # the monitor died with it: no exit.json
    assert containers.get("web").exit_code == -1


def test_a_checkpointed_container_exited_zero_and_is_kept_despite_rm(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="web", rm=True, detach=True))
    containers.set_checkpointed(container.id, "2024-01-01T00:00:00Z")
    host.container_exits(container.id, 137, container_dir(containers, container))
    seen = containers.cleanup("web")
    assert (seen.state, seen.exit_code) == (EXITED, 0)   # ended by its checkpoint, as podman records it


def test_rm_containers_go_after_their_exit_but_not_during_a_checkpoint(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="gone", rm=True, detach=True))
    host.container_exits(container.id, 0, container_dir(containers, container))
    containers.cleanup(container.id)
    with pytest.raises(NotFound):
        containers.get("gone")
    kept = containers.run(RunOptions(image="busy:1", name="kept", rm=True, detach=True))
    with open(os.path.join(container_dir(containers, kept), CHECKPOINTING), "w"):
        pass
    host.container_exits(kept.id, 0, container_dir(containers, kept))
    assert containers.cleanup("kept").state == EXITED


def test_stop_of_an_rm_container_returns_it_exited(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="web", rm=True, detach=True))
    stopped = containers.stop("web")
    assert stopped.state == EXITED and containers.list(all_states=True) == []
    assert host.leftovers(container.id) == []


# ---- rm -------------------------------------------------------------------------

def test_rm_refuses_a_running_container_and_rm_f_removes_everything(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="web", ports=("8080:80",),
                                          volumes=("data:/data",), detach=True))
    with pytest.raises(Conflict, match="container 'web' is running") as refused:
        containers.remove("web")
    assert refused.value.hint == "stop it first, or use 'ferry rm -f'"
    assert containers.remove("web", force=True) == container.id
    assert containers.list(all_states=True) == [] and engine.networks.reservations() == []
    assert host.leftovers(container.id) == [] and host.published() == []
    assert not os.path.exists(container_dir(containers, container))
    assert not os.path.exists(engine.layout.lock(f"container-{container.id}"))
    assert engine.volumes.exists("data")


def test_rm_f_removes_a_running_container_whose_record_cannot_be_read(containers, engine, host):
    container = containers.run(RunOptions(image="busy:1", name="web", ports=("8080:80",), detach=True))
    with engine.db.write() as conn:   # a record no ferry could have written
        conn.execute("UPDATE containers SET config = '{' WHERE id = ?", (container.id,))
    with pytest.raises(DamagedRecord, match="the record of container 'web' is damaged") as refused:
        containers.remove("web")
    assert refused.value.hint == f"remove it with 'ferry rm -f {container.id[:12]}'"
    assert host.alive(container.pid)   # without -f, nothing is touched
    assert containers.remove(container.id[:12], force=True) == container.id
    assert not host.alive(container.pid)
    assert host.leftovers(container.id) == [] and host.published() == []
    assert engine.networks.reservations() == []
    assert engine.db.read().execute("SELECT count(*) FROM containers").fetchone()[0] == 0
    assert not os.path.exists(container_dir(containers, container))
    assert not os.path.exists(engine.layout.lock(f"container-{container.id}"))


def test_rm_waits_for_no_one_but_refuses_while_another_command_holds_the_container(containers, engine, host,
                                                                                    monkeypatch):
    container = containers.create(RunOptions(image="busy:1", name="web"))
    holder = hold_lock(engine.layout.lock(f"container-{container.id}"), "ferry container checkpoint")
    try:
        with pytest.raises(Busy, match="ferry container checkpoint"):
            with containers.locked(container, "rm", wait=0.1):
                pass
    finally:
        release(holder)
    with containers.locked(container, "rm", wait=0):
        with containers.locked(container, "rm", wait=0):   # re-entrant within one command
            containers.remove("web")
    assert containers.list(all_states=True) == []


# ---- exec, logs, live process ---------------------------------------------------------

def test_exec_runs_in_a_running_container_only(containers, engine, host):
    container = containers.create(RunOptions(image="busy:1", name="web", env=("A=1",)))
    with pytest.raises(Conflict, match="cannot exec into container 'web': it is created"):
        containers.exec_argv("web", ["ls"], tty=False, env=[], workdir=None, user=None)
    containers.start("web")
    argv = containers.exec_argv("web", ["ls", "/"], tty=True, env=["B=2"], workdir="/tmp", user="33")
    root = os.path.join(engine.layout.root, "runc")
    assert argv == ["runc", "--root", root, "--criu", "/usr/local/sbin/criu", "exec", "--tty",
                    "--env", "PATH=/bin", "--env", "A=1", "--env", "B=2", "--cwd", "/tmp", "--user", "33:0",
                    container.id, "ls", "/"]
    with pytest.raises(UsageError, match="exec needs a command"):
        containers.exec_argv("web", [], tty=False, env=[], workdir=None, user=None)
    assert containers.log_path("web") == (containers.get("web"), os.path.join(container_dir(containers, container),
                                                                              "ctr.log"))


def test_a_live_process_is_the_pid_runc_wrote_in_the_containers_cgroup(containers, engine, host):
    container = containers.create(RunOptions(image="busy:1", name="web"))
    pid_file = os.path.join(container_dir(containers, container), "container.pid")
    assert containers.live_process(container) is None   # no pid file
    mine = host.process("sh", cgroup=f"/ferry/{container.id}")
    host.write(pid_file, f"{mine}\n")
    assert containers.live_process(container) == mine
    reused = host.process("bash", cgroup="/user.slice/session-1.scope")   # the pid went to someone else
    host.write(pid_file, str(reused))
    assert containers.live_process(container) is None
    zombie = host.process("sh", cgroup=f"/ferry/{container.id}", state="Z")
    host.write(pid_file, str(zombie))
    assert containers.live_process(container) is None
    other = host.process("sh", cgroup=f"/ferry/{container.id}0")   # another container's, by prefix
    host.write(pid_file, str(other))
    assert containers.live_process(container) is None
    host.write(pid_file, "garbage")
    assert containers.live_process(container) is None


def test_a_live_process_may_be_in_its_root_s_parent_cgroup_or_the_one_ferry_used_before(containers, engine,
                                                                                        host, monkeypatch):
    container = containers.create(RunOptions(image="busy:1", name="web"))
    pid_file = os.path.join(container_dir(containers, container), "container.pid")
    monkeypatch.setattr(containers.runc, "cgroup_parent", "ferry-0123456789ab")
    for cgroup, live in ((f"/ferry-0123456789ab/{container.id}", True), (f"/ferry/{container.id}", True),
                         (f"/ferry-ba9876543210/{container.id}", False)):
        pid = host.process("sh", cgroup=cgroup)
        host.write(pid_file, f"{pid}\n")
        assert (containers.live_process(container) == pid) is live, cgroup


# ---- prune ---------------------------------------------------------------------------

def test_prune_removes_what_a_crash_left(containers, engine, host, tmp_path):
    running = containers.run(RunOptions(image="busy:1", name="up", ports=("8080:80",), detach=True))
    exited = containers.run(RunOptions(image="busy:1", name="down", detach=True))
    host.container_exits(exited.id, 0, container_dir(containers, exited))
    containers.get("down")
    # a crash left the exited one's rootfs mounted, and a dir no record knows
    from ferry.runtime import rootfs
    rootfs.mount_overlay(engine.images.layer_paths(engine.image), f"{container_dir(containers, exited)}/upper",
                         f"{container_dir(containers, exited)}/work", f"{container_dir(containers, exited)}/rootfs")
    stray = os.path.join(engine.layout.containers, "f" * 64)
    os.makedirs(stray)
    removed = containers.prune_leftovers()
    assert f"mount {container_dir(containers, exited)}/rootfs" in removed
    assert f"container dir {'f' * 12}" in removed and not os.path.exists(stray)
    assert host.leftovers(exited.id) == []
    assert host.leftovers(running.id) != [] and containers.get("up").state == RUNNING


# ---- Undo ----------------------------------------------------------------------------

def test_undo_runs_newest_first_and_once_past_failing_steps():
    done = []
    undo = Undo()
    undo.push(done.append, "first")
    undo.push(lambda: (_ for _ in ()).throw(OSError("busy")))
    undo.push(done.append, "last")
    undo.run()
    undo.run()
    assert done == ["last", "first"]


def test_exec_gives_the_command_no_stdin_without_i_and_returns_its_code(containers, host):
    containers.run(RunOptions(image="busy:1", name="web", detach=True))
    before = os.fstat(0)
    assert containers.exec("web", ["true"], tty=False, interactive=False, env=[], workdir=None, user=None) == 3
    assert host.foreground_stdin == ["/dev/null"]
    after = os.fstat(0)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)   # ours came back
    if not os.isatty(0):
        with pytest.raises(UsageError, match="-t needs a terminal on stdin"):
            containers.exec("web", ["sh"], tty=True, interactive=True, env=[], workdir=None, user=None)


# ---- the last run's monitor --------------------------------------------------------

def ended_unrecorded(containers, engine, host):
    """A container whose run ended and was cleaned up (a recovery that waited
    its while), but whose monitor is still at work and has not written the exit:
    a record it writes later would end the next run."""
    container = containers.run(RunOptions(image="busy:1", name="svc", detach=True))
    state = host.runc[container.id]
    host.end(state["pid"])
    state["status"] = "stopped"
    with engine.db.write() as conn:
        conn.execute("UPDATE containers SET state = ?, pid = NULL WHERE id = ?", (EXITED, container.id))
    return container, state["monitor"]


def test_a_start_waits_for_the_last_run_s_monitor_to_record_its_exit(containers, engine, host):
    container, monitor = ended_unrecorded(containers, engine, host)
    exit_record = os.path.join(containers.dir(container.id), "exit.json")

    def the_monitor_records():
        with open(exit_record, "w") as f:
            json.dump({"exit_code": 137, "finished_at": "2024-01-01T00:00:00.000000000Z"}, f)
        host.end(monitor)
    started = meanwhile(0.3, the_monitor_records, lambda: containers.start("svc"))
    assert started.state == RUNNING and host.runc[container.id]["monitor"] != monitor
    assert not os.path.exists(exit_record)   # that run's record went before this run began


def test_a_start_or_rm_is_refused_while_the_last_run_s_monitor_has_not_recorded_its_exit(containers, engine, host,
                                                                                        monkeypatch):
    from ferry.engine import containers as containers_module
    monkeypatch.setattr(containers_module, "MONITOR_WAIT", 0.2)
    container, monitor = ended_unrecorded(containers, engine, host)
    for attempt in (lambda: containers.start("svc"), lambda: containers.remove("svc")):
        with pytest.raises(Conflict, match=f"its monitor \\(pid {monitor}\\) has not recorded it yet"):
            attempt()
    assert containers.get("svc").state == EXITED and host.runc[container.id]["monitor"] == monitor
    assert os.path.isdir(containers.dir(container.id))
    host.end(monitor)   # it ended without a word: nothing holds the container now
    containers.remove("svc")
    assert not os.path.exists(containers.dir(container.id))


def test_a_process_that_reused_the_monitor_s_pid_is_not_waited_for(containers, engine, host, monkeypatch):
    from ferry.engine import containers as containers_module
    monkeypatch.setattr(containers_module, "MONITOR_WAIT", 30.0)
    container, monitor = ended_unrecorded(containers, engine, host)
    host.end(monitor)
    stranger = host.process("nginx", cmdline=["nginx", "-g", "daemon off;"])
    with open(os.path.join(containers.dir(container.id), "monitor.pid"), "w") as f:
        f.write(str(stranger))
    assert containers.start("svc").state == RUNNING   # at once, or this test times out
