"""Images against real things: Debian's docker-registry on loopback (plain
http, https + htpasswd basic auth, bearer tokens), archives written by a real
podman, overlayfs stacking of pulled layers, and a debootstrap-built nginx
image. Every failure must be one line and leave nothing stored."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tarfile

import pytest

from ferry.engine.core import Engine
from tests.conftest import require
from bench.busybox import make_rootfs_tar
from tests.support.registry import LayerTar, Registry, TokenServer, free_port

pytestmark = pytest.mark.root

USERS = {"alice": "wonderland"}
TABLES = ("images", "image_names", "image_layers", "image_layer_refs")
PODMAN_TIMEOUT = 120
BUILD_TIMEOUT = 900


# ---- helpers -------------------------------------------------------------------

def stored(root: str) -> dict:
    """Everything a root's image store holds: row counts and file names."""
    found: dict = {}
    db = os.path.join(root, "ferry.db")
    if os.path.exists(db):
        with sqlite3.connect(db) as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            found = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES if t in names}
    for sub in ("l", "tmp", "blobs/sha256"):
        path = os.path.join(root, "images", sub)
        found[sub] = sorted(os.listdir(path)) if os.path.isdir(path) else []
    return found


def empty(found: dict) -> bool:
    return all(not v for v in found.values())


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tree(path: str) -> dict[str, tuple]:
    """A comparable listing of a directory: kind, mode, owner and content digest."""
    listing = {}
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(parent, name)
            info = os.lstat(full)
            rel = os.path.relpath(full, path)
            if os.path.islink(full):
                listing[rel] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                listing[rel] = ("dir", info.st_mode, info.st_uid)
            else:
                listing[rel] = ("file", info.st_mode, info.st_uid, file_digest(full))
    return listing


def tar_tree(tar_path: str, workdir: str) -> dict[str, tuple]:
    dest = os.path.join(workdir, "expected-" + os.path.basename(tar_path))
    if not os.path.isdir(dest):
        os.makedirs(dest)
        subprocess.run(["tar", "-xpf", tar_path, "--numeric-owner", "-C", dest], check=True)
    return tree(dest)


def one_line_error(done: subprocess.CompletedProcess, needle: str, code: int = 125) -> str:
    """The error is the last line of stderr (progress lines may come before it), and the only one."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    errors = [line for line in lines if line.startswith("ferry: error: ")]
    assert errors == lines[-1:] and "(hint: " in errors[0], done.stderr
    assert needle in errors[0], errors[0]
    return errors[0]


# ---- fixtures ----------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def busybox_tar(workdir) -> str:
    return make_rootfs_tar(os.path.join(workdir, "busybox.tar"), workdir)


@pytest.fixture(scope="module")
def layers(busybox_tar) -> dict[str, bytes]:
    """busybox plus a data dir, and an upper layer that deletes a file and makes a dir opaque."""
    base = (LayerTar().add_tree(busybox_tar).dir("data").file("data/keep", b"keep\n")
            .file("data/gone", b"gone\n").dir("opq").file("opq/old1", b"1").file("opq/old2", b"2").bytes())
    top = (LayerTar().dir("data").whiteout("data/gone").dir("opq").opaque("opq")
           .file("opq/new", b"new\n").bytes())
    return {"base": base, "top": top}


def _push_standard_images(registry: Registry, layers: dict[str, bytes]) -> dict:
    pushed = {"busybox": registry.push_image("test/busybox", "latest", [layers["base"], layers["top"]])}
    return pushed


@pytest.fixture(scope="module")
def http_registry(workdir, layers):
    registry = Registry(os.path.join(workdir, "registry-http")).start()
    try:
        pushed = _push_standard_images(registry, layers)
        pushed["zstd"] = registry.push_image("test/zstd", "v1", [layers["base"], layers["top"]],
                                             oci=True, compression="zstd", cmd=["zstd-image"])
        arches = {arch: registry.push_image("test/multi", None,
                                            [LayerTar().file("arch", arch.encode()).bytes()],
                                            architecture=arch)
                  for arch in ("arm64", "amd64")}
        pushed["multi"] = arches
        registry.push_index("test/multi", "latest", [arches["arm64"], arches["amd64"]])
        yield registry, pushed
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def basic_registry(workdir, layers):
    registry = Registry(os.path.join(workdir, "registry-basic"), tls=True, users=USERS).start()
    try:
        yield registry, _push_standard_images(registry, layers)
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def token_registry(workdir, layers):
    os.makedirs(os.path.join(workdir, "token"), exist_ok=True)
    tokens = TokenServer(os.path.join(workdir, "token"), USERS, forbidden=frozenset({"test/secret"})).start()
    registry = Registry(os.path.join(workdir, "registry-token"), token_server=tokens)
    try:
        registry.start()
        yield registry, _push_standard_images(registry, layers), tokens
    finally:
        registry.stop()
        tokens.stop()


@pytest.fixture
def root(tmp_path) -> str:
    return str(tmp_path / "root")


@pytest.fixture
def ferry(ferry_cli, root):
    def run(*args: str, check: bool = True):
        return ferry_cli("--root", root, *args, check=check)
    return run


# ---- pulling -----------------------------------------------------------------

def test_pull_images_inspect_rmi_over_http(ferry, root, http_registry, busybox_tar, workdir):
    registry, pushed = http_registry
    image = pushed["busybox"]
    ref = f"{registry.host}/test/busybox"
    done = ferry("pull", ref, "--tls-verify=false")
    assert done.stdout.strip() == image.image_id
    assert "Copying blob" in done.stderr

    listed = ferry("images", "--format", "json").stdout
    assert [(i["Id"], i["Names"]) for i in json.loads(listed)] == [(image.image_id, [f"{ref}:latest"])]
    table = ferry("images").stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert table[1].split()[:3] == [ref, "latest", image.image_id[:12]]
    assert ferry("images", "-q").stdout.split() == [image.image_id[:12]]

    [inspected] = json.loads(ferry("image", "inspect", "busybox").stdout)   # a short name
    assert inspected["Id"] == image.image_id and inspected["Digest"] == image.digest
    assert inspected["RootFS"]["Layers"] == image.diff_ids
    assert inspected["Architecture"] == "amd64" and inspected["Config"]["Cmd"] == ["sh"]
    assert inspected["RepoDigests"] == [f"{ref}@{image.digest}"]

    store = Engine(root).images
    base_dir = store.layer_paths(store.get(image.image_id))[0]
    expected = tar_tree(busybox_tar, workdir)
    assert {k: v for k, v in tree(base_dir).items() if k in expected} == expected

    done = ferry("rmi", ref)
    assert done.stdout.splitlines() == [f"Untagged: {ref}:latest", f"Deleted: {image.image_id}"]
    assert empty(stored(root))


def test_whiteouts_stack_in_overlay(root, http_registry, tmp_path):
    require("overlayfs")
    registry, _ = http_registry
    store = Engine(root).images
    image = store.pull(f"{registry.host}/test/busybox:latest", tls_verify=False)
    lower, upper = store.layer_paths(image)
    merged = tmp_path / "merged"
    merged.mkdir()
    # overlayfs lists lowerdirs top first
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={upper}:{lower}", str(merged)],
                   check=True, capture_output=True)
    try:
        assert sorted(os.listdir(merged / "data")) == ["keep"]
        assert sorted(os.listdir(merged / "opq")) == ["new"]
        assert (merged / "opq" / "new").read_bytes() == b"new\n"
        assert (merged / "bin" / "busybox").is_file()
        assert oct((merged).stat().st_mode & 0o777) == oct(0o755)
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    # the layers themselves hold overlay-form whiteouts
    assert os.stat(os.path.join(upper, "data", "gone"), follow_symlinks=False).st_rdev == os.makedev(0, 0)
    assert os.getxattr(os.path.join(upper, "opq"), "trusted.overlay.opaque") == b"y"


def test_manifest_list_picks_amd64(ferry, root, http_registry):
    registry, pushed = http_registry
    amd64 = pushed["multi"]["amd64"]
    assert ferry("pull", "--tls-verify=false", f"{registry.host}/test/multi").stdout.strip() == amd64.image_id
    store = Engine(root).images
    image = store.get("multi")
    [layer] = store.layer_paths(image)
    with open(os.path.join(layer, "arch")) as f:
        assert f.read() == "amd64"
    assert store.inspect("multi")["Architecture"] == "amd64"
    assert image.digest == amd64.digest


def test_zstd_oci_image_and_pull_by_digest(root, http_registry):
    registry, pushed = http_registry
    store = Engine(root).images
    image = store.pull(f"{registry.host}/test/zstd:v1", tls_verify=False)
    assert image.config.cmd == ("zstd-image",) and image.layers == tuple(pushed["zstd"].diff_ids)
    by_digest = pushed["busybox"]
    pinned = store.pull(f"{registry.host}/test/busybox@{by_digest.digest}", tls_verify=False)
    assert pinned.names == () and pinned.id == by_digest.image_id
    assert store.get(f"{registry.host}/test/busybox@{by_digest.digest}").id == pinned.id
    # both images share their two layers, unpacked once
    assert store.layer_paths(image) == store.layer_paths(pinned)
    assert len(os.listdir(os.path.join(root, "images", "l"))) == 2


def _corrupt_blob(registry: Registry) -> str:
    pushed = registry.push_image("test/corrupt", "latest",
                                 [LayerTar().file("payload", os.urandom(64 * 1024)).bytes()])
    path = registry.blob_file(pushed.blob_digests[0])
    with open(path, "r+b") as f:
        f.seek(2000)
        byte = f.read(1)
        f.seek(2000)
        f.write(bytes([byte[0] ^ 0xFF]))
    return f"{registry.host}/test/corrupt"


@pytest.mark.parametrize("case,needle,code", [
    ("unknown-tag", "not found in registry", 125),
    ("unknown-repo", "not found in registry", 125),
    ("tls-required", "TLS handshake failed", 125),
    ("unreachable", "is unreachable: connection refused", 125),
    ("corrupt-blob", "layer is not a readable tar stream", 125),
    ("bad-reference", "invalid image reference", 125),
])
def test_failed_pulls_are_one_line_and_store_nothing(ferry, root, http_registry, busybox_tar,
                                                     case, needle, code):
    registry, _ = http_registry
    ferry("image", "import", busybox_tar, "keep")
    before = stored(root)
    args = {
        "unknown-tag": [f"{registry.host}/test/busybox:nope", "--tls-verify=false"],
        "unknown-repo": [f"{registry.host}/test/nothing", "--tls-verify=false"],
        "tls-required": [f"{registry.host}/test/busybox"],
        "unreachable": [f"127.0.0.1:{free_port()}/test/busybox", "--tls-verify=false"],
        "corrupt-blob": [_corrupt_blob(registry) if case == "corrupt-blob" else "", "--tls-verify=false"],
        "bad-reference": [f"{registry.host}/Test/Busybox", "--tls-verify=false"],
    }[case]
    one_line_error(ferry("pull", *args, check=False), needle, code)
    assert stored(root) == before
    assert [i["Names"] for i in json.loads(ferry("images", "--format", "json").stdout)] == [["localhost/keep:latest"]]


def test_https_with_basic_auth(ferry, root, basic_registry):
    registry, pushed = basic_registry
    ref = f"{registry.host}/test/busybox:latest"
    one_line_error(ferry("pull", "--tls-verify", ref, "--creds", "alice:wonderland", check=False),
                   "TLS certificate not trusted")
    one_line_error(ferry("pull", ref, "--tls-verify=false", check=False), "requires authentication")
    one_line_error(ferry("pull", ref, "--tls-verify=false", "--creds", "alice:rabbit", check=False),
                   "refused the credentials")
    assert empty(stored(root))
    done = ferry("pull", ref, "--tls-verify=false", "--creds", "alice:wonderland")
    assert done.stdout.strip() == pushed["busybox"].image_id


def test_bearer_token_auth(ferry, root, token_registry):
    registry, pushed, tokens = token_registry
    ref = f"{registry.host}/test/busybox:latest"
    one_line_error(ferry("pull", ref, "--tls-verify=false", check=False), "requires authentication")
    one_line_error(ferry("pull", ref, "--tls-verify=false", "--creds", "alice:rabbit", check=False),
                   "refused the credentials")
    one_line_error(ferry("pull", f"{registry.host}/test/secret", "--tls-verify=false",
                         "--creds", "alice:wonderland", check=False), "denied access")
    assert empty(stored(root))
    tokens.requests.clear()
    done = ferry("pull", ref, "--tls-verify=false", "--creds", "alice:wonderland")
    assert done.stdout.strip() == pushed["busybox"].image_id
    assert any("scope=repository%3Atest%2Fbusybox%3Apull" in r for r in tokens.requests), tokens.requests


# ---- pushing -----------------------------------------------------------------

def test_push_then_pull_on_another_root_gives_the_same_image(ferry, ferry_cli, root, tmp_path, http_registry):
    registry, pushed = http_registry
    source = f"{registry.host}/test/busybox:latest"
    ferry("pull", "--tls-verify=false", source)
    dest = f"{registry.host}/pushed/busybox:v2"
    one_line_error(ferry("push", source, dest, check=False), "TLS handshake failed")
    one_line_error(ferry("push", "--tls-verify=false", source, "pushed/busybox", check=False), "names no registry")
    one_line_error(ferry("push", "--tls-verify=false", "nothing-here", dest, check=False), "not found")
    done = ferry("push", "--tls-verify=false", source, dest, "--digestfile", str(tmp_path / "digest"))
    assert done.stdout == "" and "Writing manifest to image destination" in done.stderr
    digest = (tmp_path / "digest").read_text()
    answer = registry.http.get(f"{registry.url}/v2/pushed/busybox/manifests/v2",
                               headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert answer.headers["docker-content-digest"] == digest
    manifest = answer.json()
    assert manifest["config"]["digest"] == f"sha256:{pushed['busybox'].image_id}"
    assert [layer["mediaType"] for layer in manifest["layers"]] == \
        ["application/vnd.oci.image.layer.v1.tar+gzip"] * 2
    # Again: the registry has every blob, and the manifest is the same.
    ferry("push", "--tls-verify=false", source, dest, "--digestfile", str(tmp_path / "again"))
    assert (tmp_path / "again").read_text() == digest
    other = str(tmp_path / "other")
    pulled = ferry_cli("--root", other, "pull", "--tls-verify=false", dest, check=True)
    assert pulled.stdout.strip() == pushed["busybox"].image_id
    assert stored(other)["image_layers"] == 2


def test_push_with_basic_and_token_auth(ferry, root, basic_registry, token_registry, tmp_path):
    registry, _ = basic_registry
    image = str(tmp_path / "rootfs.tar")
    with open(image, "wb") as f:
        f.write(LayerTar().dir("etc").file("etc/pushed", b"yes\n").bytes())
    ferry("image", "import", image, "pushme")
    dest = f"{registry.host}/pushed/basic:v1"
    one_line_error(ferry("push", "--tls-verify=false", "pushme", dest, check=False), "requires authentication")
    one_line_error(ferry("push", "--tls-verify=false", "--creds", "alice:rabbit", "pushme", dest, check=False),
                   "refused the credentials")
    ferry("push", "--tls-verify=false", "--creds", "alice:wonderland", "pushme", dest)
    ferry("rmi", "pushme")
    ferry("pull", "--tls-verify=false", "--creds", "alice:wonderland", dest)

    registry, _, tokens = token_registry
    one_line_error(ferry("push", "--tls-verify=false", "--creds", "alice:wonderland", dest,
                         f"{registry.host}/test/secret:v1", check=False), "denied access")
    tokens.requests.clear()
    ferry("push", "--tls-verify=false", "--creds", "alice:wonderland", dest, f"{registry.host}/pushed/token:v1")
    assert any("pull%2Cpush" in r for r in tokens.requests), tokens.requests


# ---- archives from a real podman -------------------------------------------------

def podman(scratch: str, *args: str) -> None:
    """podman on private storage. A tmpfs over /var/lib in a private mount
    namespace keeps even its blob-info cache off the machine's real store."""
    base = ["podman", "--root", f"{scratch}/root", "--runroot", f"{scratch}/run", "--tmpdir", f"{scratch}/tmp",
            "--storage-driver", "vfs", "--events-backend", "none", "--cgroup-manager", "cgroupfs"]
    script = 'mount -t tmpfs ferry-test-podman /var/lib && exec "$@"'
    subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *base, *args],
                   check=True, capture_output=True, timeout=PODMAN_TIMEOUT)


@pytest.fixture(scope="module")
def podman_archives(workdir, busybox_tar) -> dict[str, str]:
    scratch = os.path.join(workdir, "podman")
    podman(scratch, "import", "-q", busybox_tar, "localhost/podbox:v1")
    archives = {}
    for fmt in ("docker-archive", "oci-archive"):
        archives[fmt] = os.path.join(workdir, f"podbox-{fmt}.tar")
        podman(scratch, "save", "-q", "--format", fmt, "-o", archives[fmt], "localhost/podbox:v1")
    subprocess.run(["rm", "-rf", "--one-file-system", scratch], check=True)
    return archives


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_load_podman_save_output(ferry, root, podman_archives, busybox_tar, workdir, fmt):
    done = ferry("load", "-i", podman_archives[fmt])
    assert done.stdout.splitlines() == ["Loaded image: localhost/podbox:v1"]
    store = Engine(root).images
    image = store.get("podbox:v1")
    [layer] = store.layer_paths(image)
    assert tree(layer) == tar_tree(busybox_tar, workdir)
    # podman's image ID is the config digest too
    with tarfile.open(podman_archives[fmt]) as tar:
        names = tar.getnames()
    assert any(image.id in name for name in names)


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_damaged_podman_archive_is_refused(ferry, root, podman_archives, tmp_path, fmt, damage):
    with open(podman_archives[fmt], "rb") as f:
        data = bytearray(f.read())
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        middle = len(data) // 2      # inside the layer, the bulk of the archive
        data[middle] ^= 0xFF
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    line = one_line_error(ferry("load", "-i", str(bad), check=False), "", 125)
    assert "damaged" in line or "corrupted" in line or "not a readable tar stream" in line
    assert empty(stored(root))
    one_line_error(ferry("load", "-i", str(tmp_path / "missing.tar"), check=False), "not found")


# ---- Debian images -------------------------------------------------------------

def test_build_debian_nginx(root, tmp_path):
    done = subprocess.run([sys.executable, "-m", "ferry", "--root", root, "image", "build-debian",
                           "nginx:test", "--include", "nginx-light"],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert done.returncode == 0, done.stderr
    store = Engine(root).images
    image = store.get("localhost/nginx:test")
    assert done.stdout.strip() == image.id
    assert image.config.cmd == ("nginx", "-g", "daemon off;")
    assert image.config.exposed_ports == ("80/tcp",)
    [layer] = store.layer_paths(image)
    assert os.access(os.path.join(layer, "usr/sbin/nginx"), os.X_OK)
    assert os.readlink(os.path.join(layer, "var/log/nginx/access.log")) == "/dev/stdout"
    assert os.listdir(os.path.join(layer, "var/lib/apt/lists")) == ["partial"]
    assert not [n for n in os.listdir(os.path.join(layer, "var/cache/apt/archives")) if n.endswith(".deb")]
    assert os.listdir(os.path.join(layer, "dev")) == []
    # The cache makes the next build (another tag, same packages) cheap: its
    # root filesystem is the cached one, not built again.
    from ferry.image import debian
    tar = os.path.join(debian.CACHE_DIR, f"bookworm-{debian.Recipe.make('bookworm', ['nginx-light']).key}.tar")
    cached = os.stat(tar)
    again = store.build_debian("nginx:again", ["nginx-light"], cmd=["nginx", "-v"])
    now = os.stat(tar)
    assert (now.st_ino, now.st_mtime_ns) == (cached.st_ino, cached.st_mtime_ns)
    assert again.layers == image.layers and again.config.cmd == ("nginx", "-v")
    assert len(os.listdir(os.path.join(root, "images", "l"))) == 1


def test_build_debian_with_an_unknown_package_stores_nothing(ferry, root):
    done = ferry("image", "build-debian", "bad:pkg", "--include", "ferry-no-such-package", "-q", check=False)
    one_line_error(done, "has no package(s) ferry-no-such-package")
    assert empty(stored(root))
    cache = os.listdir("/var/cache/ferry/debian")
    assert not [n for n in cache if n.startswith(".build-") or n.endswith(".log")], cache
