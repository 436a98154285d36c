"""Issue 21's system verbs against the real podman on this machine: `version`,
`info`, `system df` and `system prune`, compared on exit codes, output shapes,
JSON keys and types, and template output where both know the same facts."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.podman import Sides, busybox_sides

SETUP = (("volume", "create", "vol1"), ("volume", "create", "spare"), ("network", "create", "net1"),
         ("run", "-d", "--name", "up", "-v", "vol1:/data", "busybox", "sleep", "1000"),
         ("run", "--name", "done", "busybox", "true"))


@pytest.fixture(scope="module")
def sides():
    with busybox_sides("ferry-sys-", *SETUP) as pair:
        try:
            yield pair
        finally:
            pair.ferry("rm", "-f", "up", "done", check=False)
            pair.ferry("volume", "rm", "-f", "vol1", "spare", check=False)
            pair.ferry("network", "rm", "-f", "net1", check=False)


def same(sides: Sides, *args: str) -> str:
    theirs, ours = sides.both(*args)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), (theirs.stderr, ours.stderr)
    return ours.stdout


def _types(value):
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    return type(value).__name__


# ---- version ---------------------------------------------------------------------------

def test_version_has_podman_s_lines(sides):
    theirs, ours = sides.both("version")
    assert ours.returncode == theirs.returncode == 0
    labels = [[line.split(":")[0] for line in out.splitlines()] for out in (theirs.stdout, ours.stdout)]
    assert labels[0] == labels[1] == ["Client", "Version", "API Version", "Go Version", "Built", "OS/Arch"]


def test_version_json_has_podman_s_keys_and_types(sides):
    theirs, ours = sides.both("version", "--format", "json")
    assert _types(json.loads(ours.stdout)) == _types(json.loads(theirs.stdout))
    assert len(ours.stdout.splitlines()) == len(theirs.stdout.splitlines()) == 1


@pytest.mark.parametrize("template, code", [
    ("{{.Client.OsArch}} {{.Client.Os}}", 0),
    ("{{.Server.Os}} {{.OsArch}}", 0),
    ("{{.Client.OsArch}} {{.Os}}", 125),
    ("{{.Client.Nope}}", 125),
    ("{{.Version.Version}}", 125),
])
def test_version_templates_run_as_podman_s(sides, template, code):
    theirs, ours = sides.both("version", "--format", template)
    assert ours.returncode == theirs.returncode == code, (theirs.stderr, ours.stderr)
    assert ours.stdout == theirs.stdout   # what the first try printed stays
    theirs, ours = sides.both("version", "--format", "{{.Client.Version}}")
    assert ours.returncode == 0 and re.fullmatch(r"\S+\n", ours.stdout)


# ---- info ------------------------------------------------------------------------------

def test_info_json_fills_podman_s_keys_with_podman_s_types(sides):
    theirs, ours = sides.both("info", "--format", "json")
    podman_s, ferry_s = json.loads(theirs.stdout), json.loads(ours.stdout)
    assert set(podman_s) <= set(ferry_s) and set(ferry_s) - set(podman_s) == {"ferry"}
    for section in ("host", "store", "version"):
        extra = set(ferry_s[section]) - set(podman_s[section])
        assert extra == set(), (section, extra)   # nothing ferry made up under podman's names
        for key in ferry_s[section]:
            assert _types(ferry_s[section][key]) == _types(podman_s[section][key]) or (
                isinstance(ferry_s[section][key], dict) and
                set(ferry_s[section][key]) <= set(podman_s[section][key])), (section, key)
    # the same containers and images, counted alike
    assert ferry_s["store"]["containerStore"] == podman_s["store"]["containerStore"] == {
        "number": 2, "paused": 0, "running": 1, "stopped": 1}
    assert ferry_s["store"]["imageStore"] == podman_s["store"]["imageStore"] == {"number": 1}


def test_info_templates_print_what_podman_s_print(sides):
    same(sides, "info", "--format", "{{.Host.Arch}} {{.Host.OS}} {{.Host.Kernel}} {{.Host.Hostname}} {{.Host.CPUs}} "
         "{{.Host.CgroupManager}} {{.Host.CgroupsVersion}} {{.Host.OCIRuntime.Name}} {{.Host.MemTotal}} "
         "{{.Store.ContainerStore.Number}} {{.Store.ContainerStore.Running}} {{.Store.ImageStore.Number}} "
         "{{.Host.Distribution.Distribution}} {{.Host.Distribution.Version}} {{.Host.CgroupControllers}}")
    theirs, ours = sides.both("info", "--format", "{{.host.arch}}")
    assert ours.returncode == theirs.returncode == 125


def test_info_text_has_podman_s_sections(sides):
    theirs, ours = sides.both("info")
    sections = [[line[:-1] for line in out.splitlines() if re.fullmatch(r"[a-z]+:", line)]
                for out in (theirs.stdout, ours.stdout)]
    assert set(sections[0]) <= set(sections[1]) and "graphRoot: " + sides.ferry.root in ours.stdout


# ---- system df -----------------------------------------------------------------------------

def test_system_df_counts_what_podman_s_counts(sides):
    theirs, ours = sides.both("system", "df")
    assert ours.stdout.splitlines()[0].split() == theirs.stdout.splitlines()[0].split()
    assert same(sides, "system", "df", "--format", "{{.Type}}|{{.Total}}|{{.Active}}") == (
        "Images|1|1\nContainers|2|1\nLocal Volumes|2|1\n")


def test_system_df_verbose_has_podman_s_sections_and_columns(sides):
    theirs, ours = sides.both("system", "df", "-v")
    assert ours.returncode == theirs.returncode == 0
    split = re.compile(r"\s{2,}")

    def shape(out: str) -> list:
        lines = out.splitlines()
        titles = [i for i, line in enumerate(lines) if line.endswith("space usage:")]
        return [(lines[i], split.split(lines[i + 2].strip())) for i in titles]
    assert shape(ours.stdout) == shape(theirs.stdout)
    names = [line.split()[-1] for line in ours.stdout.split("Containers space usage:")[1].splitlines()[3:5]]
    assert sorted(names) == ["done", "up"]


def test_system_df_json_is_json_where_podman_s_prints_json_per_row(sides):
    """podman 4.3.1 prints the word "json" per row (a bug, fixed later); ferry prints
    the rows as JSON with the template's fields (docs/podman-cli.md)."""
    theirs, ours = sides.both("system", "df", "--format", "json")
    assert theirs.stdout.split() == ["json"] * 3
    rows = json.loads(ours.stdout)
    assert [(r["Type"], r["Total"], r["Active"]) for r in rows] == [
        ("Images", 1, 1), ("Containers", 2, 1), ("Local Volumes", 2, 1)]
    assert all(isinstance(r["Size"], str) and isinstance(r["RawSize"], int) for r in rows)


# ---- system prune (changes what both hold: last) ---------------------------------------------

@pytest.mark.parametrize("args", [
    ("system", "prune", "-f", "--filter", "bogus=1"),
    ("system", "prune", "-f", "--filter", "until=x"),
], ids=" ".join)
def test_bad_prune_filters_fail_as_podman_s(sides, args):
    theirs, ours = sides.both(*args)
    assert ours.returncode == theirs.returncode == 125, (theirs.stderr, ours.stderr)
    assert ours.stdout == "" and len(ours.stderr.strip().splitlines()) == 1


def _sections(out: str) -> list:
    """Prune output with IDs and sizes blanked: its shape."""
    return [re.sub(r"^[0-9a-f]{64}$", "<id>", re.sub(r"space: .*", "space: <size>", line))
            for line in out.splitlines()]


def test_system_prune_removes_what_podman_s_removes(sides):
    theirs, ours = sides.both("system", "prune")
    assert ours.returncode == theirs.returncode == 125 and "Are you sure" in ours.stdout
    theirs, ours = sides.both("system", "prune", "-f")
    assert ours.returncode == theirs.returncode == 0, (theirs.stderr, ours.stderr)
    assert _sections(ours.stdout) == _sections(theirs.stdout) == [
        "Deleted Containers", "<id>", "Deleted Networks", "net1", "Total reclaimed space: <size>"]
    done = sides.ferry("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert done == ["up"]
    theirs, ours = sides.both("system", "prune", "-a", "-f", "--volumes")
    assert _sections(ours.stdout) == _sections(theirs.stdout) == [
        "Deleted Volumes", "spare", "Total reclaimed space: <size>"]   # busybox: `up` uses it
    assert same(sides, "system", "prune", "-f") == "Total reclaimed space: 0B\n"


def test_system_prune_keeps_a_checkpointed_container(sides):
    """podman's prune takes a checkpointed container as stopped and deletes it,
    checkpoint and all; ferry keeps it (docs/podman-cli.md): it is a service
    waiting to be restored."""
    sides.ferry("run", "-d", "--name", "kept", "busybox", "sleep", "1000")
    try:
        sides.ferry("container", "checkpoint", "kept")
        out = sides.ferry("system", "prune", "-f").stdout
        assert "Deleted Containers" not in out
        assert "kept" in sides.ferry("ps", "-a", "--format", "{{.Names}}").stdout.split()
        sides.ferry("container", "restore", "kept")
        assert sides.ferry("inspect", "kept", "--format", "{{.State.Running}}").stdout.strip() == "true"
    finally:
        sides.ferry("rm", "-f", "kept", check=False)
