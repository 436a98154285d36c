"""Forged checkpoint archives, made as an attacker who read ferry's code would
(edit a member, recompute the digests, repack), must not reach the host: each
is refused in one line with ferry's failure code, and leaves nothing behind.
Issue 9's findings, one test each."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import require
from bench.busybox import make_oci_archive
from tests.support.cli import Ferry, free_port, http_get, leftovers
from tests.support.forgery import edit_json, repack_v2, unpack

INJECTION = "tcp dport 21098 dnat to 10.213.0.2:80\nadd table ip pcinject\n#"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("forged")


@pytest.fixture(scope="module")
def host(workdir):
    for key in ("criu", "runc", "overlayfs", "netns", "nftables"):
        require(key)
    cli = Ferry(str(workdir / "root"))
    cli("load", "-i", make_oci_archive(str(workdir / "busybox-oci.tar"), str(workdir)))
    cli.seen = set()
    yield cli
    cli.remove_everything()
    assert leftovers(cli.root, cli.seen) == []


@pytest.fixture(scope="module")
def shared_dir(workdir):
    path = workdir / "shared"
    path.mkdir()
    (path / "index.html").write_text("from the host\n")
    return str(path)


@pytest.fixture(scope="module")
def genuine(host, workdir, shared_dir):
    """A real archive of a web server with a published port, a named volume and
    a bind mount; the container is gone, so its name and address are free."""
    port = free_port()
    host("run", "-d", "--name", "web", "-p", f"{port}:80", "-v", "webdata:/data",
         "-v", f"{shared_dir}:/var/www", "busybox", "httpd", "-f", "-p", "80", "-h", "/var/www")
    host.seen.add(host.inspect("web")["Id"])
    assert http_get(f"http://127.0.0.1:{port}/") == "from the host\n"
    archive = str(workdir / "web.tar")
    host("exec", "web", "sh", "-c", "echo archived > /data/f")
    host("container", "checkpoint", "web", "--file", archive)
    remove_web(host)
    return archive, port


def remove_web(host: Ferry) -> None:
    """The container and its volume, so the next restore makes both anew."""
    host("rm", "-f", "web")
    host("volume", "rm", "webdata")


def forge(genuine_archive: str, workdir, label: str, change, **repack) -> str:
    directory = str(workdir / f"unpacked-{label}")
    head = unpack(genuine_archive, directory)
    change(directory)
    return repack_v2(directory, head, str(workdir / f"{label}.tar"), **repack)


def nft_ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout


def refused(host: Ferry, archive: str, *args: str, needle: str = "") -> str:
    """Restore must fail in one line with code 125 and make no container."""
    before = host.names()
    done = host("container", "restore", "--file", archive, *args, check=False)
    assert done.returncode == 125, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: error: "), done.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    assert host.names() == before
    tmp = os.path.join(host.root, "tmp")
    assert not os.path.isdir(tmp) or [n for n in os.listdir(tmp) if not n.startswith(".trash")] == []
    return lines[0]


def test_nft_injection_through_a_port_protocol_is_refused(host, genuine, workdir):
    """Finding 1: a port's protocol field once ran as nft commands on the host."""
    archive, _ = genuine
    def inject(directory):
        edit_json(directory, "ferry-config.json", lambda d: d["config"]["ports"][0].update(protocol=INJECTION))
    line = refused(host, forge(archive, workdir, "inject", inject), needle="protocol must be tcp or udp")
    assert "pcinject" not in nft_ruleset() and "21098" not in nft_ruleset()
    assert "\n" not in line


@pytest.mark.parametrize("field, value, needle", [
    ("host_ip", "not-an-ip", "host_ip"),
    ("host_ip", 12, "host_ip"),
    ("host_port", "80", "host_port"),
    ("host_port", 70000, "host_port"),
    ("container_port", -1, "container_port"),
    ("container_port", True, "container_port"),
])
def test_non_numeric_port_fields_are_one_line_refusals(host, genuine, workdir, field, value, needle):
    archive, _ = genuine
    def change(directory):
        edit_json(directory, "ferry-config.json", lambda d: d["config"]["ports"][0].update({field: value}))
    refused(host, forge(archive, workdir, f"port-{field}-{value}", change), needle=needle)


def test_a_forged_bind_source_is_not_mounted_without_the_users_grant(host, genuine, workdir, shared_dir):
    """Finding 2: a bind volume's source changed to / gave the container the host's root."""
    archive, port = genuine
    def to_host_root(directory):
        edit_json(directory, "ferry-config.json", lambda d: [v.update(source="/") for v in d["config"]["volumes"]
                                                       if v["kind"] == "bind"])
    forged = forge(archive, workdir, "bind-root", to_host_root)
    line = refused(host, forged, needle="/ at /var/www")
    assert "-v" in line and "--allow-bind-mounts" in line

    # The user re-states the mount: the host path is theirs, whatever the archive said.
    restored = host("container", "restore", "--file", forged, "-v", f"{shared_dir}:/var/www")
    host.seen.add(restored.stdout.strip())
    assert "/ at" not in restored.stderr
    assert http_get(f"http://127.0.0.1:{port}/") == "from the host\n"
    mounts = {m["Destination"]: m["Source"] for m in host.inspect("web")["Mounts"]}
    assert mounts["/var/www"] == shared_dir
    # start and restart use the stored config, which holds the user's choice.
    host("restart", "web")
    assert http_get(f"http://127.0.0.1:{port}/") == "from the host\n"
    assert host("exec", "web", "test", "-e", "/var/www/etc/shadow", check=False).returncode != 0
    remove_web(host)


def test_a_bind_mount_added_to_the_archive_needs_the_users_grant(host, genuine, workdir):
    archive, _ = genuine
    def add_bind(directory):
        edit_json(directory, "ferry-config.json", lambda d: d["config"]["volumes"].append(
            {"kind": "bind", "source": "/etc", "destination": "/hostetc", "readonly": False}))
    refused(host, forge(archive, workdir, "bind-added", add_bind), needle="/etc at /hostetc")


def test_allow_bind_mounts_mounts_what_the_archive_names_and_says_so(host, genuine, shared_dir):
    archive, port = genuine
    done = host("container", "restore", "--file", archive, "--allow-bind-mounts")
    host.seen.add(done.stdout.strip())
    assert f"mounted host path {shared_dir} at /var/www" in done.stderr
    assert http_get(f"http://127.0.0.1:{port}/") == "from the host\n"
    remove_web(host)


def test_an_existing_volume_is_shared_only_when_restated(host, genuine, shared_dir):
    """An archive naming a volume of this host must not get at its data."""
    archive, _ = genuine
    host("volume", "create", "webdata")
    host("run", "--rm", "-v", "webdata:/data", "busybox", "sh", "-c", "echo local > /data/f")
    line = refused(host, archive, "-v", f"{shared_dir}:/var/www", needle="webdata at /data")
    assert "already exist" in line
    restored = host("container", "restore", "--file", archive, "-v", f"{shared_dir}:/var/www",
                    "-v", "webdata:/data")
    host.seen.add(restored.stdout.strip())
    assert host("exec", "web", "cat", "/data/f").stdout == "local\n"   # not merged with the archive's
    remove_web(host)


def test_restore_v_may_only_restate_mounts_the_container_had(host, genuine, shared_dir):
    archive, _ = genuine
    done = host("container", "restore", "--file", archive, "-v", f"{shared_dir}:/elsewhere", check=False)
    assert done.returncode == 125 and "no mount at /elsewhere" in done.stderr
    assert host.names() == set()


@pytest.mark.parametrize("name", ["../x", "a/b", "it's", "x" * 300, ".hidden", ""])
def test_restore_name_is_checked_like_run(host, genuine, name):
    """Finding 4: --name took '/', '..', quotes and 300 characters."""
    archive, _ = genuine
    done = host("container", "restore", "--file", archive, "--name", name, check=False)
    assert done.returncode == 125 and "invalid container name" in done.stderr, done.stderr
    assert host.names() == set()


def test_a_name_inside_the_archive_cannot_escape(host, genuine, workdir):
    """Finding 4: an archive named ../../../../tmp/x made the failure log's path escape ROOT/logs."""
    archive, _ = genuine
    evil = "../../../../tmp/x"
    def rename(directory):
        edit_json(directory, "ferry-config.json", lambda d: d.update(name=evil))
    forged_config = forge(archive, workdir, "name-config", rename)
    refused(host, forged_config, needle="name")
    head = unpack(archive, str(workdir / "unpacked-name-manifest"))
    forged_manifest = repack_v2(str(workdir / "unpacked-name-manifest"), head,
                                str(workdir / "name-manifest.tar"),
                                container={**head["container"], "name": evil})
    refused(host, forged_manifest, needle="name")
    assert not os.path.exists("/tmp/x")
    logs = os.path.join(host.root, "logs")
    assert not os.path.isdir(logs) or all("/" not in n for n in os.listdir(logs))


def test_a_member_declaring_more_than_the_host_can_hold_is_refused_up_front(host, genuine, workdir):
    """Finding 5: a small archive declaring a huge member was staged in a tmpfs
    sized to all free memory, or filled the disk."""
    archive, _ = genuine
    huge = 100 << 40   # 100 TiB: more than any disk and memory here
    forged = forge(archive, workdir, "huge", lambda d: None, declared_sizes={"rootfs-diff.tar": huge},
                   truncate_after_headers=True)
    line = refused(host, forged, needle="its members take 100.0 TiB")
    assert "of memory" in line and "of disk" in line


@pytest.mark.parametrize("field, value, needle", [
    ("ip", "10.90.300.1", "ip"),
    ("mac", "zz:zz:zz:zz:zz:zz", "mac"),
    ("hostname", "a b", "hostname"),
    ("network", "../net", "network"),
    ("ip", "192.168.77.5", "192.168.77.5"),    # an address, but not on this network
])
def test_bad_addresses_and_names_inside_the_archive_leave_nothing(host, genuine, workdir, shared_dir, field, value,
                                                                 needle):
    """Finding 6: such refusals exited 2 and left a Created container holding the name."""
    archive, _ = genuine
    def change(directory):
        edit_json(directory, "ferry-config.json", lambda d: d["config"].update({field: value}))
    refused(host, forge(archive, workdir, f"bad-{field}-{value}".replace("/", "_"), change), "-v", f"{shared_dir}:/var/www",
            needle=needle)
    assert "web" not in host.names()


def test_a_bad_volume_name_inside_the_archive_leaves_nothing(host, genuine, workdir):
    archive, _ = genuine
    def change(directory):
        edit_json(directory, "ferry-config.json", lambda d: [v.update(source="../../etc") for v in d["config"]["volumes"]
                                                       if v["kind"] == "volume"])
    refused(host, forge(archive, workdir, "bad-volume", change), needle="volume name")
    assert not os.path.exists(os.path.join(host.root, "volumes", "..", "..", "etc", "_data"))


def test_unknown_keys_and_members_are_refused(host, genuine, workdir):
    """Finding 7: an unknown key in config.dump ended in a traceback."""
    archive, _ = genuine
    refused(host, forge(archive, workdir, "unknown-key",
                        lambda d: edit_json(d, "ferry-config.json", lambda c: c["config"].update(privileged=True))),
            needle="unknown privileged")

    def stray_member(directory):
        with open(os.path.join(directory, "bind.mounts"), "w") as f:
            f.write("[]")
    refused(host, forge(archive, workdir, "stray-member", stray_member), needle="bind.mounts")

    def disagree(directory):   # archives before podman's shape carried ferry's network.status
        with open(os.path.join(directory, "ferry-config.json")) as f:
            config = json.load(f)["config"]
        with open(os.path.join(directory, "network.status"), "w") as f:
            json.dump({"network": config["network"], "ip": "10.90.0.250", "mac": config["mac"],
                       "ports": config["ports"]}, f)
    refused(host, forge(archive, workdir, "disagreeing-status", disagree), needle="network.status")


def test_restore_of_a_directory_is_one_line(host, workdir):
    done = host("container", "restore", "--file", str(workdir), check=False)
    assert done.returncode == 125 and done.stderr.strip().splitlines() == [
        f"ferry: error: {workdir} is not a file (hint: give the checkpoint archive's path)"]


def test_a_genuine_archive_still_restores_and_is_reported_unverified(host, genuine, shared_dir):
    """The forgeries above fail on their content; the same archive unedited
    restores, with a warning that nothing vouches for where it came from."""
    archive, port = genuine
    done = host("container", "restore", "--file", archive, "-v", f"{shared_dir}:/var/www")
    host.seen.add(done.stdout.strip())
    assert "origin is not verified" in done.stderr
    assert http_get(f"http://127.0.0.1:{port}/") == "from the host\n"
    assert host("exec", "web", "cat", "/data/f").stdout == "archived\n"
    remove_web(host)


@pytest.fixture(scope="module")
def keys(workdir):
    """Two Ed25519 key pairs made as the docs say, with openssl: ours and an attacker's."""
    made = {}
    for who in ("ours", "theirs"):
        private, public = str(workdir / f"{who}.pem"), str(workdir / f"{who}.pub.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private], check=True)
        subprocess.run(["openssl", "pkey", "-in", private, "-pubout", "-out", public], check=True)
        made[who] = (private, public)
    return made


@pytest.fixture(scope="module")
def signed(host, workdir, keys, shared_dir):
    """A signed archive of the web server (the container removed afterwards)."""
    host("run", "-d", "--name", "web", "-v", "webdata:/data", "-v", f"{shared_dir}:/var/www",
         "busybox", "httpd", "-f", "-p", "80", "-h", "/var/www")
    host.seen.add(host.inspect("web")["Id"])
    archive = str(workdir / "signed.tar.zst")
    host("container", "checkpoint", "web", "--file", archive, "--sign-key", keys["ours"][0])
    remove_web(host)
    return archive


def test_a_signed_archive_restores_with_the_signers_key(host, signed, keys, shared_dir):
    done = host("container", "restore", "--file", signed, "--verify-key", keys["ours"][1],
                "-v", f"{shared_dir}:/var/www", "--print-stats")
    stats = json.loads(done.stdout)["container_statistics"][0]
    host.seen.add(stats["Id"])
    assert stats["authenticity"] == "verified"
    assert "not verified" not in done.stderr
    remove_web(host)


def test_a_signature_by_another_key_or_none_is_refused(host, signed, genuine, keys):
    refused(host, signed, "--verify-key", keys["theirs"][1], needle="signed")
    unsigned, _ = genuine   # written by this ferry, unsigned
    refused(host, unsigned, "--verify-key", keys["ours"][1], needle="sign")


def test_a_forged_archive_resigned_by_an_attacker_is_refused(host, signed, keys, workdir):
    """The attacker edits a member, recomputes every BLAKE3 digest and signs
    with their own key: only --verify-key tells."""
    from ferry.checkpoint.archive import read_archive, write_archive
    from ferry.checkpoint.signing import load_private_key
    directory = str(workdir / "resigned")
    contents = read_archive(signed, directory)
    edit_json(directory, "ferry-config.json", lambda d: d["config"].update(env=d["config"]["env"] + ["EVIL=1"]))
    forged = str(workdir / "resigned.tar.zst")
    write_archive(forged, directory, [m.name for m in contents.members], container=contents.container,
                  compression="zstd", signer=load_private_key(keys["theirs"][0]))
    refused(host, forged, "--verify-key", keys["ours"][1], needle="signed")


def test_a_format_2_archive_cannot_be_verified(host, genuine, workdir, keys):
    archive, _ = genuine
    v2 = forge(archive, workdir, "v2-as-is", lambda d: None)
    refused(host, v2, "--verify-key", keys["ours"][1], needle="format 2")


CAP_SYS_ADMIN = 21


def test_privileges_forged_in_criu_images_are_refused(host, genuine, workdir, shared_dir):
    """Finding 3: CAP_SYS_ADMIN in the cap sets and seccomp disabled in a
    core image (edited with pycriu) gave the restored process CapEff 802405fb."""
    pycriu = pytest.importorskip("pycriu", reason="pycriu is installed by 'make setup'")
    archive, _ = genuine

    def escalate(directory):
        path = os.path.join(directory, "checkpoint", "core-1.img")
        with open(path, "rb") as f:
            image = pycriu.images.load(f)
        thread = image["entries"][0]["thread_core"]
        for field in ("cap_eff", "cap_prm", "cap_bnd"):
            thread["creds"][field][0] |= 1 << CAP_SYS_ADMIN
        thread["seccomp_mode"] = "disabled"
        thread.pop("seccomp_filter", None)
        with open(path, "wb") as f:
            f.write(pycriu.images.dumps(image))
    line = refused(host, forge(archive, workdir, "caps", escalate), "-v", f"{shared_dir}:/var/www",
                   needle="core-1.img")
    assert "CAP_SYS_ADMIN" in line or "seccomp" in line
