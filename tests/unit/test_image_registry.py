"""The registry client's pure parts: WWW-Authenticate challenges and credentials."""

from __future__ import annotations

import pytest

from ferry.image.registry import RegistryClient, parse_www_authenticate, split_creds
from ferry.util.errors import UsageError


def test_bearer_challenge():
    [challenge] = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"')
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                                "scope": "repository:library/nginx:pull"}


def test_basic_challenge_and_token_values():
    [challenge] = parse_www_authenticate("Basic realm=ferry-test")
    assert challenge.scheme == "basic" and challenge.params == {"realm": "ferry-test"}


def test_several_challenges_spaces_and_escapes():
    challenges = parse_www_authenticate(
        'Basic realm="a, b", Bearer realm="http://127.0.0.1:1/token" , service="svc",'
        'error="insufficient_scope", x="quote\\"d"')
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].params == {"realm": "a, b"}
    assert challenges[1].params == {"realm": "http://127.0.0.1:1/token", "service": "svc",
                                    "error": "insufficient_scope", "x": 'quote"d'}


def test_empty_or_odd_headers_do_not_raise():
    assert parse_www_authenticate("") == []
    assert [c.scheme for c in parse_www_authenticate("Negotiate")] == ["negotiate"]


def test_creds():
    assert split_creds(None) is None
    assert split_creds("alice:pa:ss") == ("alice", "pa:ss")
    assert split_creds("alice:") == ("alice", "")
    for bad in ("alice", ":pw"):
        with pytest.raises(UsageError):
            split_creds(bad)


def test_docker_io_uses_its_api_host():
    with RegistryClient("docker.io") as client:
        assert client.host == "registry-1.docker.io"
    with RegistryClient("127.0.0.1:5000") as client:
        assert client.host == "127.0.0.1:5000"
