"""Signing keys for archives: PEM files as openssl writes them, one line for
every key that is not an unencrypted Ed25519 key of the right kind, and
cryptography imported only when a key or a signature is at hand."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ferry.checkpoint import signing
from ferry.util.errors import FerryError, NotFound, UsageError


def _pem_private(key, password: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _pem_public(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


ED = ed25519.Ed25519PrivateKey.generate()
RSA = rsa.generate_private_key(public_exponent=65537, key_size=1024)
EC = ec.generate_private_key(ec.SECP256R1())
ED448 = ed448.Ed448PrivateKey.generate()


def test_a_key_pair_loads_signs_and_verifies(tmp_path):
    (tmp_path / "k.pem").write_bytes(_pem_private(ED))
    (tmp_path / "k.pub").write_bytes(_pem_public(ED))
    private = signing.load_private_key(str(tmp_path / "k.pem"))
    public = signing.load_public_key(tmp_path / "k.pub")
    assert private.public == signing.PublicKey(public.raw, str(tmp_path / "k.pem"))
    assert private.fingerprint == public.fingerprint and len(public.fingerprint) == 16
    signature = private.sign(b"trailer")
    assert signing.verify(public.raw, signature, b"trailer")
    assert not signing.verify(public.raw, signature, b"trailer!")
    assert not signing.verify(public.raw, bytes(64), b"trailer")
    assert repr(public.raw) not in repr(public) and "_key=" not in repr(private)


@pytest.mark.parametrize("content, match", [
    (_pem_private(ED, b"secret"), "is encrypted"),
    (_pem_private(RSA), "is an RSA key, not Ed25519"),
    (_pem_private(EC), "is an EC key, not Ed25519"),
    (_pem_private(ED448), "is an Ed448 key, not Ed25519"),
    (_pem_public(ED), "is a public key"),
    (b"not a key\n", "is not a PEM private key"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "is not a PEM private key"),
    (b"", "is not a PEM private key"),
    (b"x" * (signing.MAX_KEY_FILE + 1), "too large"),
])
def test_bad_signing_keys_are_one_line(tmp_path, content, match):
    (tmp_path / "key").write_bytes(content)
    with pytest.raises(UsageError, match=match) as caught:
        signing.load_private_key(str(tmp_path / "key"))
    assert "\n" not in caught.value.message and str(tmp_path / "key") in caught.value.message


@pytest.mark.parametrize("content, match", [
    (_pem_private(ED), "is a private key"),
    (_pem_public(RSA), "is an RSA key, not Ed25519"),
    (_pem_public(EC), "is an EC key, not Ed25519"),
    (b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n", "is not a PEM public key"),
    (b"\x00\x01binary", "is not a PEM public key"),
])
def test_bad_verification_keys_are_one_line(tmp_path, content, match):
    (tmp_path / "key").write_bytes(content)
    with pytest.raises(UsageError, match=match) as caught:
        signing.load_public_key(str(tmp_path / "key"))
    assert "\n" not in caught.value.message and caught.value.hint


def test_missing_and_unreadable_key_files(tmp_path):
    with pytest.raises(NotFound, match="signing key .* does not exist"):
        signing.load_private_key(str(tmp_path / "absent.pem"))
    with pytest.raises(NotFound, match="verification key .* does not exist"):
        signing.load_public_key(str(tmp_path / "absent.pub"))
    with pytest.raises(UsageError, match="is a directory"):
        signing.load_public_key(str(tmp_path))
    with pytest.raises(FerryError, match="cannot read"):
        signing.load_private_key("/proc/self/mem")   # EIO at offset 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_keys_as_openssl_writes_them_and_the_fingerprint_it_shows(tmp_path):
    private, public = str(tmp_path / "k.pem"), str(tmp_path / "k.pub")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", private, "-pubout", "-out", public], check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", public, "-outform", "DER"], check=True,
                         capture_output=True).stdout
    import hashlib
    assert signing.load_public_key(public).fingerprint == hashlib.sha256(der).hexdigest()[:16]
    assert signing.load_private_key(private).fingerprint == signing.load_public_key(public).fingerprint
    # openssl's own signature over the same bytes verifies here, and ours there.
    (tmp_path / "data").write_bytes(b"checksums")
    subprocess.run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", private, "-in", str(tmp_path / "data"),
                    "-out", str(tmp_path / "sig")], check=True, capture_output=True)
    assert signing.verify(signing.load_public_key(public).raw, (tmp_path / "sig").read_bytes(), b"checksums")
    (tmp_path / "ours").write_bytes(signing.load_private_key(private).sign(b"checksums"))
    done = subprocess.run(["openssl", "pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", public,
                           "-in", str(tmp_path / "data"), "-sigfile", str(tmp_path / "ours")], capture_output=True)
    assert done.returncode == 0, done.stderr


def test_archive_modules_leave_cryptography_unloaded(tmp_path):
    """It costs 25-50 ms to import: checkpoints without --sign-key and
    restores of unsigned archives never load it."""
    code = f"""
        import json, os, sys
        from ferry.checkpoint import archive, signing
        from ferry.checkpoint.hostinfo import HostInfo
        host = HostInfo(arch="x86_64", kernel="k", cpu={{}}, criu_version="4.2.1", runc_version="1.1.5",
                        cgroup_mode="v2", hostname="h", cpuinfo_image="")
        container = {{"id": "a" * 64, "name": "c", "image": "i", "image_id": "b" * 64,
                      "image_digest": "sha256:" + "c" * 64}}
        root = {str(tmp_path)!r}
        with open(os.path.join(root, "f"), "wb") as f:
            f.write(b"data")
        path = archive.write_archive(os.path.join(root, "a.tar.zst"), root, ["f"], container=container,
                                     compression="zstd", host=host).path
        archive.read_archive(path, os.path.join(root, "dest"))
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("cryptography"))))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
