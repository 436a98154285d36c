"""The Debian image recipe: validation, cache key, service defaults, mirror choice."""

from __future__ import annotations

import pytest

from ferry.image import debian
from ferry.util.errors import UsageError


def test_cache_key_ignores_order_duplicates_and_image_settings():
    a = debian.Recipe.make("bookworm", ["nginx-light", "curl", "curl"])
    b = debian.Recipe.make("bookworm", ["curl", "nginx-light"], cmd=["sh"], expose=["81"])
    assert a.include == ("curl", "nginx-light")
    assert a.key == b.key and len(a.key) == 16
    assert debian.Recipe.make("trixie", ["curl", "nginx-light"]).key != a.key
    assert debian.Recipe.make("bookworm", ["curl"]).key != a.key


def test_nginx_runs_in_the_foreground_by_default():
    config = debian.Recipe.make("bookworm", ["nginx-light"]).image_config()
    assert config.cmd == ("nginx", "-g", "daemon off;")
    assert config.exposed_ports == ("80/tcp",)
    assert config.stop_signal == "SIGQUIT"
    assert config.env[0].startswith("PATH=")


def test_explicit_settings_win():
    config = debian.Recipe.make("bookworm", ["nginx-light"], cmd=["sleep", "1"], expose=["8080"],
                                env=["A=1"]).image_config()
    assert config.cmd == ("sleep", "1") and config.exposed_ports == ("8080/tcp",)
    assert config.stop_signal == "" and config.env[1:] == ("A=1",)
    plain = debian.Recipe.make("bookworm", []).image_config()
    assert plain.cmd == ("bash",) and plain.exposed_ports == ()


@pytest.mark.parametrize("kwargs,needle", [
    ({"suite": "Bookworm;rm"}, "invalid Debian suite"),
    ({"include": ["--foo"]}, "invalid Debian package name"),
    ({"include": ["ok", "Bad"]}, "invalid Debian package name"),
    ({"expose": ["99999"]}, "invalid port"),
    ({"expose": ["80/icmp"]}, "invalid port"),
    ({"env": ["NOEQUALS"]}, "invalid environment entry"),
])
def test_bad_recipes(kwargs, needle):
    args = {"suite": "bookworm", "include": [], **kwargs}
    with pytest.raises(UsageError) as bad:
        debian.Recipe.make(args.pop("suite"), args.pop("include"), **args)
    assert needle in bad.value.message and bad.value.hint


def test_mirror_from_one_line_and_deb822_sources():
    one_line = "# comment\ndeb-src http://src.example/debian bookworm main\n" \
               "deb [arch=amd64] http://arch.example/debian bookworm main\n" \
               "deb http://mirror.example/debian bookworm main contrib\n"
    assert debian.mirror_in_sources(one_line, "bookworm") == "http://mirror.example/debian"
    deb822 = "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\n" \
             "Components: main\n\nTypes: deb\nURIs: http://sec.example/debian-security\n" \
             "Suites: bookworm-security\nComponents: main\n"
    assert debian.mirror_in_sources(deb822, "bookworm") == "http://deb.example/debian"
    assert debian.mirror_in_sources(deb822, "trixie") is None


def test_mirror_override(monkeypatch):
    monkeypatch.setenv(debian.MIRROR_ENV, "http://override.example/debian")
    assert debian.host_mirror("bookworm") == "http://override.example/debian"
