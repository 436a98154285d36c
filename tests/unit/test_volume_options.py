"""`volume create -o/--label`, `volume ls/prune --filter`, and the volume
metadata a container's record (and so a checkpoint archive) carries: parsing
only, no root needed."""

from __future__ import annotations

import pytest

from ferry.engine.volumes import (PRUNE_FILTERS, VOLUME_FILTERS, Volumes, VolumeSpec, labels_match,
                                  parse_filters, parse_labels, parse_options)
from ferry.store.db import Database
from ferry.store.layout import Layout
from ferry.util.errors import UsageError


def test_tmpfs_options_as_podman_shows_them():
    options = parse_options(["type=tmpfs", "device=tmpfs", "o=uid=1000,mode=0700,size=10m"])
    assert options.tmpfs == ("uid=1000", "mode=0700", "size=10m")
    assert options.shown == {"type": "tmpfs", "device": "tmpfs", "o": "uid=1000,mode=0700,size=10m", "UID": "1000"}
    assert parse_options(["type=tmpfs"]).tmpfs == ()


def test_a_directory_volume_takes_an_owner_only():
    options = parse_options(["o=uid=1000,gid=2000"])
    assert (options.tmpfs, options.uid, options.gid) == (None, 1000, 2000)
    assert options.shown == {"o": "uid=1000,gid=2000", "UID": "1000", "GID": "2000"}
    assert parse_options([]) == parse_options(())


@pytest.mark.parametrize("texts, needle", [
    (["device=/etc"], "a volume never mounts host storage"),
    (["type=tmpfs", "device=/dev/sda"], "a volume never mounts host storage"),
    (["o=bind", "device=/tmp"], "a volume never mounts host storage"),
    (["type=ext4", "device=/dev/vda"], "volume type 'ext4' is not supported"),
    (["type=tmpfs", "o=bind"], "bad tmpfs volume option"),
    (["type=tmpfs", "o=size=1m;rm"], "bad tmpfs volume option"),
    (["o=mode=0700"], "needs -o type=tmpfs"),
    (["o=uid=x"], "cannot convert UID x to integer"),
    (["o=uid=99999999999"], "cannot convert UID"),
    (["bogus=1"], "invalid mount option bogus for driver 'local'"),
    (["type"], "invalid mount option type"),
])
def test_refused_options(texts, needle):
    with pytest.raises(UsageError, match=needle):
        parse_options(texts)


def test_labels_as_podman_takes_them():
    assert parse_labels(["a=b", "c", "a=z", "e=x=y"]) == {"a": "z", "c": "", "e": "x=y"}
    with pytest.raises(UsageError, match="invalid label format: '=y'"):
        parse_labels(["=y"])


def test_filters_group_by_key_and_refuse_unknown_keys():
    assert parse_filters(["name=a", "label=x", "name=b"], VOLUME_FILTERS, "volume") == \
        {"name": ["a", "b"], "label": ["x"]}
    with pytest.raises(UsageError, match='"bogus" is an invalid volume filter'):
        parse_filters(["bogus=1"], VOLUME_FILTERS, "volume")
    with pytest.raises(UsageError, match='"name" is an invalid volume filter'):
        parse_filters(["name=a"], PRUNE_FILTERS, "volume")
    labels = {"a": "b", "c": ""}
    assert labels_match(labels, ["a"]) and labels_match(labels, ["a=b"]) and labels_match(labels, ["c="])
    assert not labels_match(labels, ["a=z"]) and not labels_match(labels, ["d"])
    assert labels_match(labels, ["d", "a=b"])   # one key's values are alternatives


def test_a_record_carries_the_volume_s_options_and_labels_through_json():
    spec = VolumeSpec("volume", "scratch", "/data", volume_options=("type=tmpfs", "o=size=5m,mode=0750"),
                      volume_labels=("k=v", "bare="))
    again = VolumeSpec.from_dict(spec.to_dict())
    assert again == spec and again.tmpfs == ("size=5m", "mode=0750")
    assert "nosuid" in again.tmpfs_mount_options() and "size=5m" in again.tmpfs_mount_options()
    plain = VolumeSpec("volume", "data", "/data")
    assert "volume_options" not in plain.to_dict() and plain.tmpfs is None   # older ferry reads it


@pytest.mark.parametrize("entry", [
    {"volume_options": ["device=/etc"]},
    {"volume_options": ["type=tmpfs", "o=bind"]},
    {"volume_options": "type=tmpfs"},
    {"volume_options": ["o=uid=1"] * 17},
    {"volume_labels": ["=x"]},
    {"volume_labels": [1]},
])
def test_an_archive_s_record_cannot_ask_for_more_than_volume_create_may(entry):
    data = {"kind": "volume", "source": "scratch", "destination": "/data", "readonly": False, **entry}
    with pytest.raises(ValueError):
        VolumeSpec.from_dict(data)


def test_a_bind_entry_carries_no_volume_options():
    with pytest.raises(ValueError, match="named volumes only"):
        VolumeSpec("bind", "/srv", "/data", volume_options=("type=tmpfs",))


def test_created_volumes_show_their_labels_and_options(tmp_path):
    layout = Layout(str(tmp_path / "root"))
    volumes = Volumes(layout, Database(layout.database))
    volumes.create("scratch", labels={"a": "b"}, options=parse_options(["type=tmpfs", "o=size=5m"]))
    shown = volumes.inspect("scratch")
    assert (shown["Labels"], shown["Options"]) == ({"a": "b"}, {"type": "tmpfs", "o": "size=5m"})
    assert list(shown) == ["Name", "Driver", "Mountpoint", "CreatedAt", "Labels", "Scope", "Options", "MountCount"]
    assert volumes.given_options("scratch") == ("type=tmpfs", "o=size=5m")
    volumes.create("plain")
    assert (volumes.inspect("plain")["Labels"], volumes.inspect("plain")["Options"]) == ({}, {})
