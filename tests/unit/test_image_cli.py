"""Image commands' parsing and rendering helpers (no root, no store)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ferry.cli import images as cli_images
from ferry.cli import main as cli


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def test_pull_flags_like_podman():
    args = parse("pull", "127.0.0.1:5000/x", "--tls-verify=false", "--creds", "a:b")
    assert args.handler is cli_images.cmd_pull
    assert args.tls_verify is False and args.creds == "a:b"
    assert parse("image", "pull", "x").tls_verify is True
    swallowed = parse("pull", "--tls-verify", "x")
    assert swallowed.tls_verify is True and swallowed.reference_after_flag == "x"


def test_aliases_reach_the_same_handlers():
    assert parse("images").handler is parse("image", "ls").handler is parse("image", "list").handler
    assert parse("rmi", "a").handler is parse("image", "rm", "a").handler
    assert parse("load", "-i", "x").input == parse("image", "load", "--input", "x").input == "x"
    assert parse("image", "inspect", "a", "b").images == ["a", "b"]
    assert parse("image", "import", "r.tar", "name:tag").reference == "name:tag"


def test_build_debian_arguments():
    args = parse("image", "build-debian", "nginx:test", "--include", "nginx-light,curl",
                 "--include", "procps", "--cmd", '["nginx","-g","daemon off;"]', "--expose", "80/tcp")
    assert [p for group in args.include for p in group] == ["nginx-light", "curl", "procps"]
    assert args.cmd == ["nginx", "-g", "daemon off;"] and args.expose == ["80/tcp"]
    assert parse("image", "build-debian", "x", "--cmd", "sleep 'a b'").cmd == ["sleep", "a b"]


@pytest.mark.parametrize("argv,needle", [
    (["pull", "x", "--tls-verify=maybe"], "expected true or false"),
    (["image", "build-debian", "x", "--cmd", "[1]"], "not a JSON array of strings"),
    (["load"], "the following arguments are required: -i/--input"),
    (["image"], "'ferry image' needs a subcommand"),
    (["rmi"], "the following arguments are required: IMAGE"),
])
def test_bad_command_lines_are_one_line(capsys, argv, needle):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_USAGE
    assert len(err) == 1 and needle in err[0]


def test_human_size_and_age():
    assert cli_images.human_size(512) == "512 B"
    assert cli_images.human_size(2_068_480) == "2.07 MB"
    assert cli_images.human_size(1_500_000_000) == "1.5 GB"
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert cli_images.human_age("2024-01-02T03:04:05Z", now) == "Less than a second ago"
    assert cli_images.human_age("2024-01-02T03:03:05Z", now) == "1 minute ago"
    assert cli_images.human_age("2023-12-31T03:04:05Z", now) == "2 days ago"
    assert cli_images.human_age("garbage", now) == "unknown"


def test_table_rows_split_repository_and_tag():
    class Fake:
        id, created, size = "f" * 64, "2024-01-01T00:00:00Z", 1000
        names = ("127.0.0.1:5000/team/app:v1", "localhost/app:latest")

    class Dangling(Fake):
        names = ()

    rows = cli_images.image_rows([Fake(), Dangling()])
    assert [r[:3] for r in rows] == [["127.0.0.1:5000/team/app", "v1", "f" * 12],
                                     ["localhost/app", "latest", "f" * 12],
                                     ["<none>", "<none>", "f" * 12]]
