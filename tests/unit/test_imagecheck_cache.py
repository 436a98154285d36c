"""The seccomp check's cache of libseccomp's syscall names (imagecheck.syscall_tables).

The first check resolves the names with libseccomp and writes the cache; later
checks read it. A cache that is corrupt, forged, stale, too big or not private
to root is ignored and rewritten, and never changes or fails the check.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from ferry.checkpoint import imagecheck
from ferry.util.errors import BadArchive

pytestmark = pytest.mark.skipif(os.uname().machine not in imagecheck.ABIS, reason="no ABI table for this machine")

PROFILE = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
           "syscalls": [{"names": ["read", "write", "futex"], "action": "SCMP_ACT_ALLOW", "args": []},
                        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}
ALLOW_ALL_BUT = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                 "syscalls": [{"names": ["reboot", "kexec_load"], "action": "SCMP_ACT_ERRNO", "args": []}]}


class CachePath(type(pathlib.Path())):
    calls: list   # the resolutions through libseccomp so far


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The cache's path, in a private directory; counts the resolutions through libseccomp."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    path = CachePath(directory / "seccomp-names.json")
    monkeypatch.setattr(imagecheck, "SECCOMP_NAMES_CACHE", str(path))
    resolve = imagecheck._resolve_tables
    calls = []

    def counted(abis):
        calls.append(abis)
        return resolve(abis)

    monkeypatch.setattr(imagecheck, "_resolve_tables", counted)
    path.calls = calls
    return path


def denied(profile: dict) -> tuple:
    """What the check compares filters with: each ABI's denied set, and a few names."""
    result = imagecheck._Denied(profile)
    return tuple((run, result.name(run, run.base), result.name(run, run.base + 1), result.name(run, run.base + 767))
                 for run in result.runs)


def without_cache(profile: dict, monkeypatch) -> tuple:
    with monkeypatch.context() as patch:
        patch.setattr(imagecheck, "_cached_tables", lambda abis: None)
        patch.setattr(imagecheck, "_remember_tables", lambda library, key, tables: None)
        return denied(profile)


def test_the_first_check_writes_the_cache_and_the_next_reads_it(cache, monkeypatch):
    expected = {"deny": without_cache(PROFILE, monkeypatch), "allow": without_cache(ALLOW_ALL_BUT, monkeypatch)}
    calls = len(cache.calls)
    assert not cache.exists()
    assert denied(PROFILE) == expected["deny"]
    assert len(cache.calls) == calls + 1 and cache.exists()
    info = cache.stat()
    assert oct(info.st_mode & 0o777) == "0o600" and info.st_uid == os.geteuid()
    assert denied(PROFILE) == expected["deny"]
    assert denied(ALLOW_ALL_BUT) == expected["allow"]   # the names hold for any profile
    assert len(cache.calls) == calls + 1
    if os.uname().machine == "x86_64":
        assert imagecheck.syscall_tables()["x86_64"][1][:3] == ("read", "write", "open")


def test_ferrys_own_profile_is_denied_the_same_with_the_cache(cache, monkeypatch):
    from ferry.runtime import spec
    if not os.path.exists(spec.SECCOMP_PROFILE):
        pytest.skip(f"{spec.SECCOMP_PROFILE} is installed by 'make setup'")
    profile = spec.seccomp_profile(spec.DEFAULT_CAPABILITIES)
    expected = without_cache(profile, monkeypatch)
    calls = len(cache.calls)
    assert denied(profile) == expected and cache.exists()
    assert denied(profile) == expected and len(cache.calls) == calls + 1


def test_the_denied_sets_come_from_the_names(cache):
    runs = {run.label: run for run in imagecheck._Denied(PROFILE).runs}
    tables = imagecheck.syscall_tables()
    for label, run in runs.items():
        names = tables[label][1]
        covered = label in ("x86_64", "x86")
        for index, name in enumerate(names):
            allowed = covered and name in ("read", "write", "futex", "personality")   # not compared by args
            assert bool(run.denied >> index & 1) == (not allowed), (label, index, name)


def valid_cache(cache) -> dict:
    imagecheck.syscall_tables()
    return json.loads(cache.read_text())


def forged(data: dict, change) -> dict:
    data = json.loads(json.dumps(data))
    change(data)
    return data


def set_name(data, value, abi=0, index=1):
    data["abis"][abi]["names"][index] = value


FORGERIES = {
    "a name with a space": lambda d: set_name(d, "read write"),
    "an empty name": lambda d: set_name(d, ""),
    "a path for a name": lambda d: set_name(d, "../etc"),
    "a non-ASCII name": lambda d: set_name(d, "wr\u00efte"),
    "a long name": lambda d: set_name(d, "x" * 65),
    "a number for a name": lambda d: set_name(d, 1),
    "a list for a name": lambda d: set_name(d, ["write"]),
    "a name list too short": lambda d: d["abis"][0]["names"].pop(),
    "a name list too long": lambda d: d["abis"][0]["names"].append(None),
    "a token as a string": lambda d: d["abis"][0].update(token=str(d["abis"][0]["token"])),
    "a token as a float": lambda d: d["abis"][0].update(token=float(d["abis"][0]["token"])),
    "a negative token": lambda d: d["abis"][0].update(token=-1),
    "a token too big": lambda d: d["abis"][0].update(token=1 << 32),
    "names without a token": lambda d: d["abis"][0].update(token=0),
    "another ABI's label": lambda d: d["abis"][0].update(label=d["abis"][1]["label"]),
    "an ABI missing": lambda d: d["abis"].pop(),
    "an ABI twice": lambda d: d["abis"].append(d["abis"][0]),
    "an unknown field": lambda d: d.update(extra=1),
    "an unknown ABI field": lambda d: d["abis"][0].update(extra=1),
    "no key": lambda d: d.pop("key"),
    "another machine": lambda d: d["key"].__setitem__(1, "riscv64"),
    "another format": lambda d: d["key"].__setitem__(0, 2),
    "another window": lambda d: d["key"].__setitem__(2, 512),
    "another library file": lambda d: d["key"][-1].__setitem__(1, d["key"][-1][1] + 1),
    "a library changed in place": lambda d: d["key"][-1].__setitem__(3, d["key"][-1][3] + 1),
    "another linker cache": lambda d: d["key"][5].__setitem__(3, d["key"][5][3] + 1),
    "LD_LIBRARY_PATH set then": lambda d: d["key"].__setitem__(3, "/tmp/evil"),
    "a key with true for 1": lambda d: d["key"].__setitem__(0, True),
    "a key with a float mtime": lambda d: d["key"][-1].__setitem__(3, float(d["key"][-1][3])),
    "another library path": lambda d: d.update(library="/tmp/libseccomp.so.2"),
    "a relative library path": lambda d: d.update(library="libseccomp.so.2"),
    "a library path that is a number": lambda d: d.update(library=7),
    "other fields": lambda d: (d.clear(), d.update(x=[])),
}


@pytest.mark.parametrize("change", FORGERIES.values(), ids=FORGERIES.keys())
def test_a_forged_cache_is_ignored_and_rewritten(cache, monkeypatch, change):
    expected = without_cache(PROFILE, monkeypatch)
    good = valid_cache(cache)
    cache.write_text(json.dumps(forged(good, change)))
    calls = len(cache.calls)
    assert denied(PROFILE) == expected
    assert len(cache.calls) == calls + 1
    assert json.loads(cache.read_text()) == good   # rewritten, and read from then on
    assert denied(PROFILE) == expected and len(cache.calls) == calls + 1


RAW = {
    "not JSON": b"{\"library\": ",
    "not UTF-8": b"\xff\xfe{}",
    "empty": b"",
    "NaN": b"NaN",
    "deeply nested": b"[" * 100000 + b"]" * 100000,
    "a list": b"[]",
}


@pytest.mark.parametrize("text", RAW.values(), ids=RAW.keys())
def test_a_corrupt_cache_is_ignored(cache, monkeypatch, text):
    expected = without_cache(PROFILE, monkeypatch)
    valid_cache(cache)
    cache.write_bytes(text)
    assert denied(PROFILE) == expected
    assert imagecheck._cached_tables(imagecheck.ABIS[os.uname().machine]) is not None


def test_duplicate_keys_are_refused(cache):
    good = valid_cache(cache)
    text = json.dumps(good)
    cache.write_text(text[:-1] + ', "abis": ' + json.dumps(good["abis"]) + "}")
    assert imagecheck._cached_tables(imagecheck.ABIS[os.uname().machine]) is None


def test_a_cache_too_big_is_not_read(cache, monkeypatch):
    good = valid_cache(cache)
    text = json.dumps(good, indent=1)
    padded = text[:-1] + " " * (imagecheck.SECCOMP_NAMES_MAX_BYTES + 1 - len(text)) + "}"   # valid, 1 byte over
    assert len(padded) == imagecheck.SECCOMP_NAMES_MAX_BYTES + 1
    cache.write_text(padded)
    assert imagecheck._cached_tables(imagecheck.ABIS[os.uname().machine]) is None
    cache.write_text(padded.replace(" ", "", 1))   # at the bound, read
    assert imagecheck._cached_tables(imagecheck.ABIS[os.uname().machine]) is not None
    with open(cache, "wb") as f:
        f.truncate(64 << 20)   # a sparse 64 MiB file: refused by its size, not read
    expected = without_cache(PROFILE, monkeypatch)
    calls = len(cache.calls)
    assert denied(PROFILE) == expected
    assert len(cache.calls) == calls + 1 and cache.stat().st_size < imagecheck.SECCOMP_NAMES_MAX_BYTES


def test_a_cache_others_could_write_is_ignored(cache, monkeypatch):
    valid_cache(cache)
    abis = imagecheck.ABIS[os.uname().machine]
    cache.chmod(0o622)
    assert imagecheck._cached_tables(abis) is None
    cache.chmod(0o600)
    assert imagecheck._cached_tables(abis) is not None
    if os.geteuid() == 0:   # a file of another user's
        os.chown(cache, 65534, 65534)
        assert imagecheck._cached_tables(abis) is None
        os.chown(cache, 0, 0)
    cache.parent.chmod(0o777)   # a directory anyone may write: neither read nor written
    assert imagecheck._cached_tables(abis) is None
    cache.unlink()
    imagecheck.syscall_tables()
    assert not cache.exists()
    cache.parent.chmod(0o700)


def test_a_symlinked_cache_is_not_followed(cache, tmp_path):
    valid_cache(cache)
    target = tmp_path / "elsewhere.json"
    os.rename(cache, target)
    cache.symlink_to(target)
    assert imagecheck._cached_tables(imagecheck.ABIS[os.uname().machine]) is None
    cache.unlink()
    cache.parent.rmdir()
    cache.parent.parent.joinpath("real").mkdir(mode=0o700)
    cache.parent.symlink_to(cache.parent.parent / "real")
    imagecheck.syscall_tables()
    os.rename(target, cache.parent.parent / "real" / cache.name)
    assert imagecheck._cached_tables(imagecheck.ABIS[os.uname().machine]) is None


def test_a_changed_environment_invalidates_the_cache(cache, monkeypatch, tmp_path):
    valid_cache(cache)
    abis = imagecheck.ABIS[os.uname().machine]
    assert imagecheck._cached_tables(abis) is not None
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    assert imagecheck._cached_tables(abis) is None
    monkeypatch.delenv("LD_LIBRARY_PATH")
    linker = tmp_path / "ld.so.cache"
    linker.write_bytes(b"one")
    monkeypatch.setattr(imagecheck, "LD_SO_CACHE", str(linker))
    assert imagecheck._cached_tables(abis) is None   # ldconfig ran (a libseccomp upgrade runs it)
    imagecheck.syscall_tables()
    assert imagecheck._cached_tables(abis) is not None
    os.utime(linker, ns=(0, 1))
    assert imagecheck._cached_tables(abis) is None


def test_an_unwritable_cache_directory_changes_nothing(monkeypatch):
    monkeypatch.setattr(imagecheck, "SECCOMP_NAMES_CACHE", "/proc/self/ferry/seccomp-names.json")
    assert denied(PROFILE) == without_cache(PROFILE, monkeypatch)


def test_without_libseccomp_the_check_still_refuses(cache, monkeypatch):
    monkeypatch.setattr(imagecheck, "LIBSECCOMP", "libseccomp-none.so.0")
    with pytest.raises(BadArchive, match="libseccomp-none.so.0 cannot be loaded"):
        imagecheck._Denied(PROFILE)
    assert not cache.exists()
