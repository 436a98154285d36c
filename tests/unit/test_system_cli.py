"""version, info and system df/prune: podman 4.3.1's shapes (no root, no store)."""

from __future__ import annotations

import json

import pytest

from ferry.cli import main as cli
from ferry.cli import system as system_cli
from ferry.engine.system import ContainerUsage, DiskUsage, ImageUsage, VolumeUsage


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_has_podman_s_client_block(capsys):
    code, out, _ = run(capsys, "version")
    labels = [line.split(":")[0] for line in out.splitlines()]
    assert code == 0 and labels == ["Client", "Version", "API Version", "Go Version", "Built", "OS/Arch"]
    assert out.splitlines()[3].split()[-1].startswith("python3.")   # honest: no Go here


def test_version_json_and_templates_as_podman_s(capsys):
    code, out, _ = run(capsys, "version", "--format", "json")
    data = json.loads(out)
    assert code == 0 and list(data) == ["Client"] and "\n" not in out.strip()
    assert list(data["Client"]) == ["APIVersion", "Version", "GoVersion", "GitCommit", "BuiltTime", "Built",
                                    "OsArch", "Os"]
    assert isinstance(data["Client"]["Built"], int)
    code, out, _ = run(capsys, "version", "--format", "{{.Client.Version}}|{{.Client.OsArch}}")
    assert code == 0 and out == f"{data['Client']['Version']}|{data['Client']['OsArch']}\n"
    # podman's second try runs on the client's version, .Server. cut out
    code, out, _ = run(capsys, "version", "--format", "{{.Server.OsArch}} {{.Os}}")
    assert code == 0 and out == f"{data['Client']['OsArch']} linux\n"
    # ...where .Version is a string, and .Client no field: what the first try printed stays
    code, out, err = run(capsys, "version", "--format", "{{.Version.Version}}")
    assert code == cli.EXIT_USAGE and "can't evaluate field Version" in err
    code, out, err = run(capsys, "version", "--format", "{{.Client.Os}} {{.Os}}")
    assert (code, out) == (cli.EXIT_USAGE, "linux ") and "can't evaluate field Client" in err


def test_info_has_podman_s_sections_and_ferry_s_own(capsys, tmp_path):
    root = tmp_path / "nothing-yet"
    code, out, _ = run(capsys, "--root", str(root), "info", "--format", "json")
    data = json.loads(out)
    assert code == 0 and list(data) == ["host", "store", "registries", "plugins", "version", "ferry"]
    host, store = data["host"], data["store"]
    for key, kind in (("arch", str), ("kernel", str), ("os", str), ("hostname", str), ("cpus", int),
                      ("memTotal", int), ("memFree", int), ("cgroupManager", str), ("cgroupVersion", str),
                      ("cgroupControllers", list), ("ociRuntime", dict), ("distribution", dict), ("uptime", str)):
        assert isinstance(host[key], kind), key
    assert store["containerStore"] == {"number": 0, "paused": 0, "running": 0, "stopped": 0}
    assert store["imageStore"] == {"number": 0} and store["graphRoot"] == str(root)
    assert data["ferry"]["checkpoints"].startswith(str(root) + "/") and not root.exists()


def test_info_templates_see_podman_s_go_names(capsys, tmp_path):
    code, out, _ = run(capsys, "--root", str(tmp_path), "info", "--format",
                       "{{.Host.Arch}} {{.Host.OCIRuntime.Name}} {{.Store.GraphRoot}} {{.Store.ContainerStore.Number}} "
                       "{{.Host.CgroupsVersion}} {{.Version.Version}}")
    arch, runtime, root, number, cgroups, version = out.split()
    assert code == 0 and (runtime, root, number) == ("runc", str(tmp_path), "0")
    assert cgroups in ("v1", "v2") and arch and version


def test_info_text_is_podman_s_yaml():
    text = system_cli.yaml_text({"b": {"list": ["x", "y"], "empty": {}, "none": None, "num": "12",
                                       "colon": "a: b", "lines": "one\ntwo", "blank": ""}, "a": 1})
    assert text == ["a: 1", "b:", '  blank: ""', "  colon: 'a: b'", "  empty: {}", "  lines: |-", "    one",
                    "    two", "  list:", "  - x", "  - y", "  none: null", '  num: "12"']


def test_sizes_are_go_units_as_podman_s_df():
    assert [system_cli.docker_size(n) for n in (0, 12, 999, 1000, 2_081_000, 4_150_000, 1_500_000_000)] == [
        "0B", "12B", "999B", "1kB", "2.081MB", "4.15MB", "1.5GB"]
    assert system_cli.reclaimable(2_081_000, 4_150_000) == "2.081MB (50%)"
    assert system_cli.reclaimable(0, 0) == "0B (0%)"


def test_df_summary_counts_active_and_reclaimable():
    usage = DiskUsage(
        [ImageUsage("a" * 64, ("localhost/a:latest",), "2026-01-01T00:00:00Z", 3000, 0, 2),
         ImageUsage("b" * 64, (), "2026-01-01T00:00:00Z", 1000, 0, 0)],
        [ContainerUsage("c" * 64, "a" * 64, "sleep 1", 1, 10, "2026-01-01T00:00:00Z", "running", "up"),
         ContainerUsage("d" * 64, "a" * 64, "true", 0, 5, "2026-01-01T00:00:00Z", "exited", "done")],
        [VolumeUsage("v1", 1, 100), VolumeUsage("v2", 0, 300)])
    rows = system_cli.df_summary(usage)
    assert [(r["Type"], r["Total"], r["Active"], r["Size"], r["Reclaimable"]) for r in rows] == [
        ("Images", 2, 1, "4kB", "1kB (25%)"), ("Containers", 2, 1, "15B", "5B (33%)"),
        ("Local Volumes", 2, 1, "400B", "300B (75%)")]


@pytest.mark.parametrize("argv, needle", [
    (["system", "prune", "-f", "--filter", "bogus=1"], "bogus is an invalid filter"),
    (["image", "prune", "-f", "--filter", "dangling=true"], "unsupported image filter 'dangling'"),
])
def test_prune_filters_podman_refuses_are_refused(capsys, tmp_path, argv, needle):
    code, out, err = run(capsys, "--root", str(tmp_path), *argv)
    assert code == cli.EXIT_USAGE and needle in err and out == ""


def test_a_prune_without_an_answer_fails_as_podman_s(capsys, monkeypatch, tmp_path):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run(capsys, "--root", str(tmp_path), "system", "prune")
    assert code == cli.EXIT_USAGE and out.startswith("WARNING! This command removes:")
    assert "all dangling images" in out and "use -f" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, out, _ = run(capsys, "--root", str(tmp_path), "image", "prune", "-a")
    assert code == 0 and "all images without at least one container" in out
    assert not (tmp_path / "ferry.db").exists()   # "no" touched nothing
