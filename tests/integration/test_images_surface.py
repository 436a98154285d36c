"""Issue 21's image verbs against the real podman on this machine: `image
history`, `images --filter` and IMAGE, `image prune` and `rmi -a`, compared on
exit codes and output (the same bytes where both print the same facts)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile

import pytest

from tests.support.podman import Sides, busybox_sides

HISTORY = [
    {"created": "2026-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:0123456789abcdef in / ",
     "comment": "base"},
    {"created": "2026-01-02T00:00:00Z", "created_by": "/bin/sh -c #(nop) LABEL tier=web", "empty_layer": True},
    {"created": "2026-01-03T00:00:00Z",
     "created_by": "/bin/sh -c echo hello > /etc/greeting && echo a long line to see the column cut"},
    {"created": "2026-01-04T00:00:00Z", "created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]", "empty_layer": True},
]


def _tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def make_history_archive(path: str, workdir: str, name: str = "localhost/hist:latest") -> str:
    """A two-layer oci-archive whose config has a history (empty layers among
    it), labelled tier=web: what `podman build` would have made."""
    from bench.busybox import make_rootfs_tar
    base = make_rootfs_tar(os.path.join(workdir, "hist-layer.tar"), workdir)
    with open(base, "rb") as f:
        layers = [f.read(), _tar_of({"etc/greeting": b"hello\n"})]
    os.unlink(base)
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2026-01-04T00:00:00Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "Labels": {"tier": "web"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": HISTORY}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(b)}
                   for d, b in zip(diff_ids, layers)]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": name}}]}).encode()
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index}
    for blob in (*layers, config, manifest):
        files["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
    with open(path, "wb") as out:
        out.write(_tar_of(files))
    return path


def make_base_archive(hist_path: str, path: str, name: str = "localhost/base:latest") -> str:
    """An image of hist's lowest layer alone: podman's history of hist then shows
    its ID where that layer begins."""
    with tarfile.open(hist_path) as archive:
        blobs = {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}
    index = json.loads(blobs["index.json"])
    manifest = json.loads(blobs["blobs/sha256/" + index["manifests"][0]["digest"][7:]])
    hist_config = json.loads(blobs["blobs/sha256/" + manifest["config"]["digest"][7:]])
    layer = manifest["layers"][0]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2025-12-01T00:00:00Z", "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": hist_config["rootfs"]["diff_ids"][:1]},
        "history": [{"created": "2025-12-01T00:00:00Z", "created_by": "BASE ADD"},
                    {"created": "2025-12-01T00:00:01Z", "created_by": "BASE CMD", "empty_layer": True}]}).encode()
    base_manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [layer]}).encode()
    base_index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + hashlib.sha256(base_manifest).hexdigest(), "size": len(base_manifest),
        "annotations": {"org.opencontainers.image.ref.name": name}}]}).encode()
    files = {"oci-layout": blobs["oci-layout"], "index.json": base_index,
             "blobs/sha256/" + layer["digest"][7:]: blobs["blobs/sha256/" + layer["digest"][7:]]}
    for blob in (config, base_manifest):
        files["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
    with open(path, "wb") as out:
        out.write(_tar_of(files))
    return path


@pytest.fixture(scope="module")
def sides():
    """Both engines hold: hist (two names, used by container `user`), base (hist's
    lowest layer), a newer busybox (label v=2) under busybox's name, and so the
    first busybox dangling."""
    from bench.busybox import make_oci_archive
    workdir = tempfile.mkdtemp(prefix="ferry-imgs-", dir="/tmp")
    try:
        hist = make_history_archive(os.path.join(workdir, "hist.tar"), workdir)
        newer = make_oci_archive(os.path.join(workdir, "bb2.tar"), workdir, extra_config={"Labels": {"v": "2"}})
        base = make_base_archive(hist, os.path.join(workdir, "base.tar"))
        setup = [("load", "-i", hist), ("load", "-i", base), ("load", "-i", newer), ("tag", "localhost/hist", "localhost/hist:two"),
                 ("run", "--name", "user", "localhost/hist:latest", "true")]
        with busybox_sides("ferry-imgs-", *setup) as pair:
            yield pair
    finally:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)


def same(sides: Sides, *args: str) -> str:
    theirs, ours = sides.both(*args)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), (theirs.stderr, ours.stderr)
    return ours.stdout


def ids(sides: Sides, *args: str) -> list[str]:
    """Full image IDs (without podman's sha256:) of `images ARGS`, ferry's."""
    return [line.removeprefix("sha256:") for line in sides.ferry("images", "-q", "--no-trunc", *args).stdout.split()]


def same_code(sides: Sides, *args: str, code: int, failures: int = 1) -> None:
    """Both exit `code`; ferry says each of its `failures` in one line."""
    theirs, ours = sides.both(*args)
    assert ours.returncode == theirs.returncode == code, (theirs.stderr, ours.stderr)
    if code:
        assert len(ours.stderr.strip().splitlines()) == failures, ours.stderr


# ---- history -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("--format", "json"),
    ("-q",),
    ("-q", "--no-trunc"),
    ("--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}|{{.Size}}|{{.Comment}}"),
    ("--format", "{{.ID}} {{.CreatedBy}} {{.Size}} {{.CreatedAt}} {{.Tags}}"),
    ("-H=false", "--format", "{{.Created}}"),
    ("--format", "table {{.ID}} {{.Size}}"),
], ids=" ".join)
def test_history_prints_what_podman_s_prints(sides, args):
    same(sides, "image", "history", *args, "localhost/hist")


def test_history_table_is_podman_s_to_the_byte(sides):
    out = same(sides, "history", "hist")
    assert out.splitlines()[0].split() == ["ID", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert "e..." in out and "<missing>" in out   # the cut CREATED BY, the lower entries
    base = sides.ferry("images", "-q", "localhost/base").stdout.strip()
    # base's ID where its layer begins: on the newest entry at that layer (an empty one)
    assert [line.split()[0] for line in out.splitlines()[1:]] == [
        sides.ferry("images", "-q", "localhost/hist").stdout.split()[0], "<missing>", base, "<missing>"]
    same(sides, "history", "base")


def test_history_of_an_image_without_one_and_of_none(sides):
    same(sides, "history", "-q", "localhost/busybox")
    same(sides, "history", "localhost/busybox")
    same_code(sides, "history", "nope", code=125)


# ---- images --filter, images IMAGE -----------------------------------------------------

@pytest.mark.parametrize("filters", [
    ("dangling=true",), ("dangling=false",), ("label=tier",), ("label=tier=web",), ("label!=tier=web",),
    ("label=v=2", "label=tier"), ("label=tier", "dangling=false"), ("reference=busybox",), ("reference=hist:two",),
    ("reference=localhost/*",), ("reference=h*",), ("reference=*:latest",), ("before=localhost/hist",),
    ("since=localhost/busybox",), ("until=2026-01-02T00:00:00Z",), ("until=1h",), ("containers=true",),
    ("containers=false",), ("readonly=false",),
], ids=repr)
def test_images_filters_choose_what_podman_s_choose(sides, filters):
    args = [arg for f in filters for arg in ("--filter", f)]
    theirs, ours = sides.both("images", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}", *args)
    assert ours.returncode == theirs.returncode == 0, (theirs.stderr, ours.stderr)
    # two images were made at the same second: their order is no one's
    assert sorted(ours.stdout.splitlines()) == sorted(theirs.stdout.splitlines())


def test_images_filter_by_full_id(sides):
    [image_id] = ids(sides, "localhost/hist")
    assert same(sides, "images", "-q", "--filter", f"id={image_id}") == image_id[:12] + "\n"
    assert same(sides, "images", "-q", "--filter", f"id={image_id[:12]}") == ""


@pytest.mark.parametrize("args", [("-q", "--no-trunc"), ("--no-trunc", "--format", "{{.ID}} {{.Id}}"),
                                  ("--no-trunc", "--format", "table {{.ID}} {{.Tag}}")], ids=" ".join)
def test_images_full_ids_as_podman_s(sides, args):
    out = same(sides, "images", *args, "localhost/hist")
    assert "sha256:" in out


def test_images_of_one_reference(sides):
    assert sorted(same(sides, "images", "--format", "{{.Tag}}", "localhost/hist").split()) == ["latest", "two"]


@pytest.mark.parametrize("args", [
    ("images", "--filter", "bogus=1"),
    ("images", "--filter", "dangling=maybe"),
    ("images", "--filter", "since"),
    ("images", "--filter", "before=nope"),
    ("images", "--filter", "dangling=true", "busybox"),
    ("image", "prune", "-f", "--filter", "bogus=1"),
    ("image", "prune", "-f", "--filter", "until=x"),
    ("rmi", "-a", "busybox"),
    ("rmi",),
], ids=" ".join)
def test_bad_image_command_lines_fail_as_podman_s(sides, args):
    same_code(sides, *args, code=125)
    assert sides.ferry(*args, check=False).stdout == ""


def test_rmi_of_no_such_image_exits_1(sides):
    same_code(sides, "rmi", "nope", code=1)
    same_code(sides, "image", "rm", "nope", code=1)
    same_code(sides, "rmi", "nope", "nope2", code=1, failures=2)


def test_untag_takes_names_off_an_image_as_podman_s_does(sides):
    """untag IMAGE NAME... takes those names (a name the image lacks is refused);
    untag IMAGE alone takes every name, and the image stays, nameless. On hist,
    which container `user` keeps from the prune tests."""
    names = same(sides, "image", "inspect", "--format", "{{range .RepoTags}}{{.}} {{end}}", "localhost/hist").split()
    image_ids = [done.stdout.strip().removeprefix("sha256:")
                 for done in sides.both("image", "inspect", "--format", "{{.Id}}", "localhost/hist")]
    assert all(len(image_id) == 64 for image_id in image_ids) and names, (image_ids, names)
    same(sides, "tag", "localhost/hist", "un1", "un2:v2")
    try:
        assert same(sides, "untag", "localhost/hist", "un1") == ""
        same_code(sides, "untag", "un2:v2", "nosuch", code=125)
        same_code(sides, "image", "untag", "nosuch", code=125)
        same(sides, "image", "inspect", "--format", "{{.RepoTags}}", "un2:v2")
        assert same(sides, "image", "untag", "un2:v2", "localhost/un2:v2") == ""
        same_code(sides, "untag", "un2:v2", code=125)   # no image has that name now
        assert same(sides, "untag", "localhost/hist") == ""   # every name
        # the image stays, nameless (podman 4.3.1's inspect of it by ID fails: listed instead)
        for image_id, done in zip(image_ids, sides.both("images", "-q", "--no-trunc", "--filter", "dangling=true")):
            assert image_id in done.stdout.replace("sha256:", "").split(), (image_id, done.stdout)
    finally:
        subprocess.run(sides.podman.argv("tag", image_ids[0], *names), capture_output=True)
        sides.ferry("tag", image_ids[1], *names, check=False)
        sides.both("untag", "localhost/hist", "un1", "un2:v2")
    assert same(sides, "image", "inspect", "--format", "{{.RepoTags}}", "localhost/hist") != ""


def test_image_inspect_takes_a_template_and_reports_each_missing_image(sides):
    assert same(sides, "image", "inspect", "--format", "{{.Id}} {{.Created}} {{.RepoTags}} {{.Config.Cmd}} {{.Digest}}",
                "localhost/hist") != ""
    theirs, ours = sides.both("image", "inspect", "-f", "{{.RepoTags}}", "nosuch", "localhost/hist")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), (theirs.stderr, ours.stderr)
    assert ours.returncode == 125 and "localhost/hist:latest" in ours.stdout
    assert len(ours.stderr.strip().splitlines()) == 1


def test_load_prints_the_names_in_the_archive_not_every_name_the_image_has(sides, tmp_path):
    """hist is hist:latest and hist:two on both; an archive of hist:latest alone loads as that name."""
    archive = str(tmp_path / "one-name.tar")
    saved = subprocess.run(sides.podman.argv("save", "-o", archive, "localhost/hist:latest"), capture_output=True,
                           text=True)
    assert saved.returncode == 0, saved.stderr
    assert same(sides, "load", "-i", archive) == "Loaded image: localhost/hist:latest\n"


# ---- prune, rmi -a (these change what both hold: last) ----------------------------------

def test_image_prune_asks_and_an_empty_answer_fails(sides):
    theirs, ours = sides.both("image", "prune")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (
        125, "WARNING! This command removes all dangling images.\nAre you sure you want to continue? [y/N] ")


def test_image_prune_removes_dangling_then_every_unused_image(sides):
    dangling = ids(sides, "--filter", "dangling=true")
    assert len(dangling) == 1
    assert same(sides, "image", "prune", "-f", "--filter", "label=v") == ""   # the dangling one has no label
    assert same(sides, "image", "prune", "-f").split() == dangling
    assert same(sides, "image", "prune", "-f") == ""
    loaded = ids(sides, "localhost/base") + ids(sides, "localhost/busybox")   # in this order
    assert sorted(ids(sides, "--filter", "containers=false")) == sorted(loaded)
    # every image no container uses (hist is `user`'s), in the order they were loaded, as podman
    assert same(sides, "image", "prune", "-a", "-f").split() == loaded
    assert sorted(same(sides, "images", "--format", "{{.Repository}}:{{.Tag}}").split()) == [
        "localhost/hist:latest", "localhost/hist:two"]


def test_rmi_exit_codes_and_rmi_all_as_podman_s(sides):
    # one of two names goes (exit 1 for the other word); then an image in use wins: 2
    theirs, ours = sides.both("rmi", "nope", "localhost/hist:two")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (1, "Untagged: localhost/hist:two\n")
    same_code(sides, "rmi", "localhost/hist:latest", code=2)
    theirs, ours = sides.both("rmi", "nope", "localhost/hist:latest")
    assert ours.returncode == theirs.returncode == 2, (theirs.stderr, ours.stderr)
    same_code(sides, "rmi", "-a", code=2)
    out = same(sides, "rmi", "-a", "-f")
    assert out.splitlines()[0] == "Untagged: localhost/hist:latest"
    assert out.splitlines()[1].startswith("Deleted: ") and len(out.splitlines()) == 2
    assert same(sides, "ps", "-a", "--format", "{{.Names}}") == ""   # -f took the container with it
    assert same(sides, "rmi", "-a") == ""   # nothing left: no error
