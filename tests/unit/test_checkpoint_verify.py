"""`ferry checkpoint verify` and `ferry checkpoint show` (issue 17): the
whole archive read and checked as a restore would, nothing of it written,
and the first bad member named."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pytest

from ferry.checkpoint.archive import write_archive
from tests.unit.test_archive import CONTAINER, HOST, source  # noqa: F401  (source: a fixture)
from tests.unit.test_archive_v3 import keypair
from tests.unit.test_cli import run
from tests.unit.test_image_store import archive as tar_of


@pytest.fixture
def archives(tmp_path, source):
    root, names, _ = source
    owner, owner_pub = keypair(str(tmp_path), "owner")
    _, other_pub = keypair(str(tmp_path), "other")
    signed = write_archive(str(tmp_path / "signed.tar.zst"), root, names, container=CONTAINER, compression="zstd",
                           host=HOST, signer=owner).path
    plain = write_archive(str(tmp_path / "plain.tar"), root, names, container=CONTAINER, compression="none",
                          host=HOST).path
    return {"signed": signed, "plain": plain, "owner": owner_pub.path, "other": other_pub.path, "names": names}


def _flipped(path: str, member: str, dest: str) -> str:
    """The archive with one byte of `member` changed, in place."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        offset = tar.getmember(member).offset_data
    data[offset + 3] ^= 0x40
    with open(dest, "wb") as f:
        f.write(bytes(data))
    return dest


def test_a_good_archive_verifies_and_nothing_is_written(capsys, archives, tmp_path):
    before = set(os.listdir("/tmp"))
    code, out, err = run(capsys, "checkpoint", "verify", archives["signed"], "--verify-key", archives["owner"])
    assert code == 0, err
    assert out.startswith(f"{archives['signed']}: OK, format 3, {len(archives['names'])} members") and \
        "the key given" in out
    assert not [n for n in set(os.listdir("/tmp")) - before if n.startswith("ferry-verify-")]
    code, out, _ = run(capsys, "checkpoint", "verify", archives["plain"])
    assert code == 0 and "not signed" in out


def test_a_flipped_byte_fails_naming_the_member(capsys, archives, tmp_path):
    bad = _flipped(archives["plain"], "checkpoint/core-1.img", str(tmp_path / "bad.tar"))
    code, out, err = run(capsys, "checkpoint", "verify", bad)
    assert code == 125 and out == ""
    assert err.strip().splitlines() == [err.strip()] and "member checkpoint/core-1.img: checksum mismatch" in err


def test_the_wrong_key_fails(capsys, archives):
    code, _, err = run(capsys, "checkpoint", "verify", archives["signed"], "--verify-key", archives["other"])
    assert code == 125 and "is signed by key" in err
    code, _, err = run(capsys, "checkpoint", "verify", archives["plain"], "--verify-key", archives["owner"])
    assert code == 125 and "carries no signature" in err


def test_show_gives_one_line_per_archive(capsys, archives):
    code, out, err = run(capsys, "checkpoint", "show", archives["signed"], archives["plain"])
    assert code == 0, err
    header, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["ARCHIVE", "CONTAINER", "IMAGE", "ENGINE"] and len(rows) == 2
    assert rows[0].split()[:4] == [archives["signed"], "my-redis", "docker.io/library/redis:7", "ferry"]
    assert "zstd" in rows[0].split() and "4.2.1" in rows[0].split()
    assert "none" in rows[1].split() and rows[1].split()[-1] == "no"
    code, out, _ = run(capsys, "checkpoint", "show", "--format", "json", archives["signed"])
    [shown] = json.loads(out)
    assert shown["Signed"] is True and shown["Verified"] is False and shown["Signer"]
    assert shown["FormatVersion"] == 3 and shown["Compression"] == "zstd" and shown["TcpEstablished"] is False


def test_another_engine_s_archive_is_shown_from_its_config_dump(capsys, tmp_path):
    config = json.dumps({"id": "d" * 64, "name": "pm-web", "rootfsImageID": "e" * 64,
                         "rootfsImageName": "localhost/busybox:latest"}).encode()
    members = {"config.dump": config, "spec.dump": b"{}", "checkpoint/inventory.img": b"inv",
               "checkpoint/tcp-stream-1234.img": b"queues"}
    path = tmp_path / "podman.tar.gz"
    path.write_bytes(gzip.compress(tar_of(members)))
    code, out, err = run(capsys, "checkpoint", "show", "--format", "json", str(path))
    assert code == 0, err
    [shown] = json.loads(out)
    assert (shown["Engine"], shown["Container"], shown["Image"]) == ("podman", "pm-web", "localhost/busybox:latest")
    assert shown["Compression"] == "gzip" and shown["TcpEstablished"] is True and shown["Signed"] is False
    code, out, _ = run(capsys, "checkpoint", "verify", str(path))
    assert code == 0 and "podman's archive" in out


def test_what_is_not_a_checkpoint_archive_is_refused(capsys, tmp_path):
    path = tmp_path / "junk.tar"
    path.write_bytes(b"not a tar at all" * 100)
    code, _, err = run(capsys, "checkpoint", "show", str(path))
    assert code == 125 and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "checkpoint", "verify", str(tmp_path / "missing.tar"))
    assert code != 0 and "does not exist" in err
