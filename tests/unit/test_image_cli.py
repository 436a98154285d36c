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
    (["rmi"], "image name or ID must be specified"),
    (["rmi", "-a", "busybox"], "you may not pass any images names or IDs"),
    (["image", "history"], "history takes exactly one image"),
    (["images", "--filter", "dangling=maybe"], "non-boolean value 'maybe'"),
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
    assert cli_images.human_age("2024-01-02T03:03:05Z", now) == "About a minute ago"   # go-units' words
    assert cli_images.human_age("2023-12-31T03:04:05Z", now) == "2 days ago"
    assert cli_images.human_age("2023-01-02T03:04:05Z", now) == "12 months ago"
    assert cli_images.human_age("2021-01-02T03:04:05Z", now) == "3 years ago"
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


# ---- filters, history (podman 4.3.1's, checked on this machine) -------------------

from ferry.image import filters as image_filters  # noqa: E402
from ferry.image.history import MISSING, created_by_column, history_of  # noqa: E402
from ferry.util.errors import BadArchive, UsageError  # noqa: E402

NS = 1_000_000_000
IMAGES = [
    image_filters.ImageFacts("a" * 64, "sha256:" + "1" * 64, ("localhost/busybox:latest", "localhost/busybox:two"),
                             100 * NS, (), 1),
    image_filters.ImageFacts("b" * 64, "sha256:" + "2" * 64, ("quay.io/team/app:v1",), 200 * NS,
                             (("tier", "web"),), 0),
    image_filters.ImageFacts("c" * 64, "sha256:" + "3" * 64, (), 300 * NS, (("tier", "db"),), 0),
]


def chosen(*texts, now_ns=1000 * NS):
    parsed = image_filters.parse_filters(list(texts))
    created = {"a": 100 * NS, "b": 200 * NS}
    test = image_filters.predicate(parsed, lambda ref: created[ref], now_ns=now_ns)
    return [image.id[0] for image in IMAGES if test(image)]


@pytest.mark.parametrize("texts, ids", [
    (("dangling=true",), ["c"]),
    (("dangling=false",), ["a", "b"]),
    (("label=tier",), ["b", "c"]),
    (("label=tier=web",), ["b"]),
    (("label!=tier=web",), ["a", "c"]),
    (("label=tier=db", "label=tier=web"), ["b", "c"]),        # one key twice: either
    (("label=tier", "dangling=false"), ["b"]),                # two keys: both
    (("reference=busybox",), ["a"]),
    (("reference=busybox:two",), ["a"]),
    (("reference=app",), ["b"]),
    (("reference=team/*",), ["b"]),
    (("reference=bu*",), ["a"]),
    (("reference=*:v1",), ["b"]),
    (("reference=quay.io/team/app:v1",), ["b"]),
    (("reference=busybox:v1",), []),
    (("before=b",), ["a"]),
    (("since=a",), ["b", "c"]),
    (("after=a",), ["b", "c"]),
    (("until=250",), ["a", "b"]),                             # Unix seconds
    (("until=800s",), ["a"]),                                 # a duration: that long before now
    (("id=" + "b" * 64,), ["b"]),
    (("id=bbbb",), []),                                       # podman wants the whole ID
    (("digest=sha256:" + "3" * 64,), ["c"]),
    (("containers=true",), ["a"]),
    (("readonly=true",), []),
    ((), ["a", "b", "c"]),
], ids=repr)
def test_image_filters_choose_what_podman_s_choose(texts, ids):
    assert chosen(*texts) == ids


@pytest.mark.parametrize("text, needle", [
    ("bogus=1", "unsupported image filter 'bogus'"),
    ("since", "must be in the format"),
    ("dangling=maybe", "non-boolean value 'maybe'"),
])
def test_bad_image_filters_are_refused(text, needle):
    with pytest.raises(UsageError, match=needle):
        image_filters.parse_filters([text])


def test_prune_takes_only_podman_s_prune_filters():
    assert image_filters.parse_filters(["label=a", "until=1h"], image_filters.PRUNE_FILTERS)
    with pytest.raises(UsageError, match="unsupported image filter 'dangling'"):
        image_filters.parse_filters(["dangling=true"], image_filters.PRUNE_FILTERS)


def test_a_bad_until_is_refused():
    with pytest.raises(UsageError, match="failed to parse value as time or duration"):
        image_filters.predicate(image_filters.parse_filters(["until=x"]), lambda ref: 0)


CONFIG = b'''{"history": [
  {"created": "2026-01-01T00:00:00Z", "created_by": "ADD file in /", "comment": "base"},
  {"created": "2026-01-02T00:00:00Z", "created_by": "LABEL a=b", "empty_layer": true},
  {"created": "2026-01-03T00:00:00Z", "created_by": "RUN echo"}]}'''


def test_history_lists_newest_first_with_the_id_on_top_and_layer_sizes():
    entries = history_of("f" * 64, CONFIG, [2000, 30])
    assert [(e.id, e.created_by, e.size, e.comment) for e in entries] == [
        ("f" * 64, "RUN echo", 30, ""), (MISSING, "LABEL a=b", 0, ""), (MISSING, "ADD file in /", 2000, "base")]


def test_history_of_a_config_without_one_is_empty_and_too_many_layer_entries_are_refused():
    assert history_of("f" * 64, b'{"config": {}}', [10]) == []
    with pytest.raises(BadArchive, match="more layers than it has"):
        history_of("f" * 64, CONFIG, [30])


def test_history_rows_render_as_podman_s():
    entries = history_of("f" * 64, CONFIG, [2000, 30])
    views = cli_images.history_views(entries, human=False, no_trunc=False)
    assert [v["ID"] for v in views] == ["f" * 12, MISSING, MISSING]
    assert views[0]["Created"] == "2026-01-03T00:00:00Z" and views[0]["Size"] == "30 B"
    assert views[0]["CreatedAt"] == "2026-01-03 00:00:00 +0000 UTC" and views[0]["Tags"] == []
    assert [sorted(cli_images.history_json(e)) for e in entries[1:]] == [
        ["Created", "CreatedBy", "created", "id", "size"], ["Created", "CreatedBy", "comment", "created", "id", "size"]]
    assert created_by_column("x" * 46, False) == "x" * 42 + "..." and created_by_column("x" * 45, False) == "x" * 45
    assert created_by_column("x" * 46, True) == "x" * 46


def test_image_rm_has_rmi_s_exit_codes():
    from ferry.util.errors import InUse, NotFound
    assert cli.command_verb(["image", "rm", "x"]) == cli.command_verb(["rmi", "x"]) == "rmi"
    assert cli.exit_code_for(NotFound("no"), "rmi") == 1
    assert cli.exit_code_for(InUse("used"), "rmi") == 2
    assert cli.exit_code_for(InUse("used"), "image") == cli.EXIT_ERROR
