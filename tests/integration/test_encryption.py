"""Archives encrypted at rest (issue 19): age, with a passphrase or to
recipients, into files and through pipes; a wrong key restores nothing; no
byte of the process's memory is in the clear."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from tests.support.cli import Ferry, busybox_root, wait_for

# Joined only in the shell's memory: its command line holds the two halves apart.
MARKER = b"ferrymarker-7f3a9c2e1b"
HOLDER = 'm=$(printf "%s-%s" ferrymarker 7f3a9c2e1b); while true; do sleep 1; done'


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with busybox_root(tmp_path_factory.mktemp("encryption")) as ferry:
        yield ferry


def _run(host: Ferry, name: str) -> str:
    container_id = host("run", "-d", "--name", name, "busybox", "sh", "-c", HOLDER).stdout.strip()
    host.seen.add(container_id)
    wait_for(lambda: host("exec", name, "sh", "-c", "ps | grep -c 'sleep 1'", check=False).returncode == 0,
             f"{name} to hold its marker")
    return container_id


def _one_error(done, needle: str) -> None:
    assert done.returncode == 125, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: error:") and needle in lines[0], done.stderr


def _no_staging_left(host: Ferry) -> None:
    tmp = os.path.join(host.root, "tmp")
    assert not os.path.isdir(tmp) or [n for n in os.listdir(tmp) if not n.startswith(".trash")] == []


def test_a_passphrase_archive_holds_no_plaintext_and_restores_only_with_it(host, tmp_path):
    _run(host, "secret")
    plain, sealed = str(tmp_path / "plain.tar"), str(tmp_path / "sealed.tar")
    phrase, wrong = tmp_path / "phrase", tmp_path / "wrong"
    phrase.write_text("correct horse battery staple\n")
    wrong.write_text("incorrect horse\n")
    # Uncompressed, so that a plaintext page would show: the check can fail.
    host("container", "checkpoint", "secret", "-R", "--compress", "none", "--file", plain)
    assert MARKER in open(plain, "rb").read()
    host("container", "checkpoint", "secret", "--compress", "none", "--file", sealed,
         "--encrypt-passphrase-file", str(phrase))
    data = open(sealed, "rb").read()
    assert MARKER not in data and b"ferrymarker" not in data and b"ferry-config.json" not in data
    assert os.stat(sealed).st_mode & 0o777 == 0o600
    assert not any(n.endswith(".tmp") for n in os.listdir(tmp_path))
    [listed] = [e for e in host.json("checkpoint", "ls", "--format", "json") if e["Path"] == sealed]
    assert listed["Encrypted"] is True and listed["Kind"] == "archive"
    host("rm", "secret")
    names = host.names()
    _one_error(host("container", "restore", "--file", sealed, check=False), "is encrypted")
    _one_error(host("container", "restore", "--file", sealed, "--decrypt-passphrase-file", str(wrong),
                    check=False), "the passphrase is wrong")
    _one_error(host("checkpoint", "verify", sealed, check=False), "is encrypted")
    assert host.names() == names
    _no_staging_left(host)
    assert "OK" in host("checkpoint", "verify", sealed, "--decrypt-passphrase-file", str(phrase)).stdout
    host("container", "restore", "--file", sealed, "--decrypt-passphrase-file", str(phrase))
    assert host.inspect("secret")["State"]["Status"] == "running"
    host("rm", "-f", "secret")


def test_an_archive_for_recipients_opens_with_their_identity_only(host, tmp_path):
    from pyrage import x25519
    mine, other = x25519.Identity.generate(), x25519.Identity.generate()
    (tmp_path / "mine.key").write_text(f"# ferry test\n{mine}\n")
    (tmp_path / "other.key").write_text(f"{other}\n")
    (tmp_path / "recipients").write_text(f"{other.to_public()}\n{mine.to_public()}\n")
    _run(host, "recipient")
    sealed = str(tmp_path / "r.tar.zst")
    host("container", "checkpoint", "recipient", "--file", sealed, "--encrypt-to", str(mine.to_public()))
    assert open(sealed, "rb").read(22) == b"age-encryption.org/v1\n"
    host("rm", "recipient")
    _one_error(host("container", "restore", "--file", sealed, "--decrypt-key", str(tmp_path / "other.key"),
                    check=False), "none of the keys given opens it")
    _no_staging_left(host)
    tree = host("checkpoint", "inspect", sealed, "--decrypt-key", str(tmp_path / "mine.key")).stdout
    assert "recipient" in tree
    host("container", "restore", "--file", sealed, "--decrypt-key", str(tmp_path / "mine.key"))
    assert host.inspect("recipient")["State"]["Status"] == "running"
    # A recipients file, and a local -R checkpoint kept encrypted: restore NAME needs the key too.
    host("container", "checkpoint", "recipient", "-R", "--encrypt-to", str(tmp_path / "recipients"))
    host("kill", "-s", "KILL", "recipient")
    wait_for(lambda: host.inspect("recipient")["State"]["Status"] == "exited", "recipient to exit")
    _one_error(host("container", "restore", "recipient", check=False), "is encrypted")
    assert host.inspect("recipient")["State"]["Status"] == "exited"   # untouched by the refusal
    host("container", "restore", "recipient", "--decrypt-key", str(tmp_path / "other.key"))
    assert host.inspect("recipient")["State"]["Status"] == "running"
    host("rm", "-f", "recipient")


def test_what_encryption_refuses(host, tmp_path):
    _run(host, "refusals")
    phrase = tmp_path / "phrase"
    phrase.write_text("\n")
    _one_error(host("container", "checkpoint", "refusals", "--file", str(tmp_path / "x.tar"),
                    "--encrypt-passphrase-file", str(phrase), check=False), "holds an empty first line")
    _one_error(host("container", "checkpoint", "refusals", "--encrypt-to", "age1notakey", check=False),
               "only an archive can be encrypted")
    _one_error(host("container", "checkpoint", "refusals", "-R", "--file", str(tmp_path / "x.tar"),
                    "--encrypt-to", "age1notakey", check=False), "not an age or SSH public key")
    _one_error(host("container", "checkpoint", "refusals", "-R", "--file", "-", "--encrypt-to", "age1x",
                    check=False), "not an age or SSH public key")
    assert host.inspect("refusals")["State"]["Status"] == "running" and "x.tar" not in os.listdir(tmp_path)
    host("rm", "-f", "refusals")


def _piped(host: Ferry, first: list[str], second: list[str], tee: str):
    """`ferry FIRST | tee TEE | ferry SECOND`, failing if either fails."""
    base = [sys.executable, "-m", "ferry", "--root", host.root]
    line = f"set -o pipefail; {shlex.join(base + first)} | tee {shlex.quote(tee)} | {shlex.join(base + second)}"
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=300)


def test_an_encrypted_archive_goes_through_a_pipe(host, tmp_path):
    from pyrage import x25519
    mine = x25519.Identity.generate()
    key = tmp_path / "mine.key"
    key.write_text(f"{mine}\n")
    phrase = tmp_path / "phrase"
    phrase.write_text("pipe phrase\n")
    _run(host, "piped")
    seen = str(tmp_path / "seen")
    for name, sealing, opening in (("piped-r", ["--encrypt-to", str(mine.to_public())], ["--decrypt-key", str(key)]),
                                   ("piped-p", ["--encrypt-passphrase-file", str(phrase)],
                                    ["--decrypt-passphrase-file", str(phrase)])):
        done = _piped(host, ["container", "checkpoint", "piped", "-R", "--compress", "none", "--file", "-", *sealing],
                      ["container", "restore", "--file", "-", "--name", name, "--ignore-static-ip", *opening], seen)
        assert done.returncode == 0, done.stderr
        data = open(seen, "rb").read()
        assert data.startswith((b"age-encryption.org/v1\n", b"ferry-age-passphrase/v1\n")) and MARKER not in data
        assert host.inspect(name)["State"]["Status"] == "running"
        host.seen.add(host.inspect(name)["Id"])
    # Without a key, the restore says what the stream is, and makes nothing.
    names = host.names()
    done = _piped(host, ["container", "checkpoint", "piped", "-R", "--file", "-", "--encrypt-to", str(mine.to_public())],
                  ["container", "restore", "--file", "-", "--name", "piped-none", "--ignore-static-ip"], seen)
    assert done.returncode != 0 and "the archive is encrypted (age recipients)" in done.stderr, done.stderr
    assert host.names() == names
    _no_staging_left(host)
    for name in ("piped", "piped-r", "piped-p"):
        host("rm", "-f", name)
