"""Fuzz the parsers of every member a checkpoint archive carries besides CRIU's
images (config.dump, network.status, deleted.files, stats-dump, the rootfs
and volume diffs): on any input they return a valid record or raise ferry's
own error, never anything else.

Bounded to a few seconds per target in `make test`; for a longer run:
    FERRY_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/unit/test_member_fuzz.py
"""

from __future__ import annotations

import io
import json
import os
import tarfile

from hypothesis import HealthCheck, given, settings, strategies as st

from ferry.checkpoint.criu import read_restore_stats
from ferry.checkpoint.archive import treediff
from ferry.engine.config import ArchivedContainer, check_network_status, parse_deleted_files
from ferry.util.errors import BadArchive, FerryError, NotFound
from tests.unit.test_container_config import ARCHIVED, CONFIG

EXAMPLES = int(os.environ.get("FERRY_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="FERRY_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25)


def _paths(data, prefix=()):
    """Every (path to a value) in a JSON document."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _paths(value, prefix + (index,))


def _replaced(data, path, value):
    if not path:
        return value
    copy = json.loads(json.dumps(data))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


GENUINE = json.loads(ARCHIVED.to_json())
GENUINE_PATHS = list(_paths(GENUINE))


@st.composite
def mutated_config_dump(draw):
    """A genuine config.dump with one value anywhere replaced by arbitrary JSON."""
    path = draw(st.sampled_from(GENUINE_PATHS))
    return json.dumps(_replaced(GENUINE, path, draw(JSON)))


def _parse_or_refuse(parse, text):
    try:
        parse(text)
    except ValueError:
        pass


@FUZZ
@given(st.one_of(mutated_config_dump(), JSON.map(json.dumps), st.binary(max_size=200)))
def test_config_dump_parser(text):
    _parse_or_refuse(ArchivedContainer.from_json, text)


@FUZZ
@given(JSON.map(json.dumps) | st.binary(max_size=200))
def test_network_status_and_deleted_files_parsers(text):
    _parse_or_refuse(lambda t: check_network_status(t, CONFIG), text)
    _parse_or_refuse(parse_deleted_files, text)


@FUZZ
@given(st.binary(max_size=300))
def test_criu_stats_reader(tmp_path_factory, data):
    directory = tmp_path_factory.mktemp("stats")
    (directory / "stats-restore").write_bytes(data)
    try:
        stats = read_restore_stats(str(directory))
    except NotFound:
        return
    assert all(isinstance(value, int) for value in stats)


def _tar(entries) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.linkname = payload.decode("latin-1")
                tar.addfile(info)
    return buffer.getvalue()


NAMES = st.sampled_from(["a", "a/b", "../x", "/abs", "a/../../y", ".wh.a", "a/.wh..wh..opq", "dev/null",
                         "x" * 300, "", ".", "a//b", "lnk", "lnk/inner"])
ENTRIES = st.lists(st.tuples(NAMES, st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                                                     tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE]),
                             st.sampled_from([b"", b"data", b"/etc", b"../../etc", b"a", b"lnk"])), max_size=6)


@FUZZ
@given(ENTRIES, st.lists(NAMES, max_size=3), st.integers(0, 600), st.binary(max_size=8))
def test_rootfs_diff_unpacker(tmp_path_factory, entries, deleted, cut, noise):
    """The rootfs diff and volume tars go through the image layer's safe
    unpacker; a forged one is refused, and nothing lands outside the target."""
    base = tmp_path_factory.mktemp("diff")
    target, tar_path = base / "upper", base / "diff.tar"
    target.mkdir()
    data = _tar(entries)
    if cut:
        data = data[:cut] + noise
    tar_path.write_bytes(data)
    try:
        treediff.apply_tree_diff(str(tar_path), str(target), tuple(d for d in deleted if d))
    except (BadArchive, FerryError):
        pass
    assert sorted(os.listdir(base)) == ["diff.tar", "upper"]

