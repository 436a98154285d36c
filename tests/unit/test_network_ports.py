"""podman's -p syntax, parsed without touching the host; host checks on loopback only."""

from __future__ import annotations

import socket

import pytest

from ferry.network.ports import (PortMapping, check_distinct, ensure_host_port_free,
                                 parse_port, pick_free_port)
from ferry.util.errors import Conflict, UsageError


@pytest.mark.parametrize("spec,expected", [
    ("80", PortMapping("", 0, 80, "tcp")),
    ("8080:80", PortMapping("", 8080, 80, "tcp")),
    ("8080:80/udp", PortMapping("", 8080, 80, "udp")),
    ("8080:80/TCP", PortMapping("", 8080, 80, "tcp")),
    (":80", PortMapping("", 0, 80, "tcp")),
    ("127.0.0.1:8080:80", PortMapping("127.0.0.1", 8080, 80, "tcp")),
    ("127.0.0.1::80", PortMapping("127.0.0.1", 0, 80, "tcp")),
    ("0.0.0.0:8080:80", PortMapping("", 8080, 80, "tcp")),
    ("65535:1", PortMapping("", 65535, 1, "tcp")),
    (" 53:53/udp ", PortMapping("", 53, 53, "udp")),
])
def test_good_specs(spec, expected):
    assert parse_port(spec) == expected


@pytest.mark.parametrize("spec,needle", [
    ("abc", "container port 'abc' is not a number"),
    ("70000:80", "host port 70000 is outside 1-65535"),
    ("8080:0", "container port 0 is outside 1-65535"),
    ("0:80", "host port 0 is outside 1-65535"),
    ("8080:80/sctp", "protocol 'sctp' is not supported"),
    ("8000-8010:80-90", "port ranges are not supported"),
    ("8080-8081:80", "port ranges are not supported"),
    ("1.2.3:8080:80", "'1.2.3' is not an IPv4 address"),
    ("[::1]:8080:80", "IPv6 host addresses are not supported"),
    ("1:2:3:4", "expected at most IP:HOST_PORT:CONTAINER_PORT"),
    ("8080:", "expected at most"),
    ("", "expected at most"),
    ("-1:80", "port ranges"),
])
def test_bad_specs_are_one_line_usage_errors(spec, needle):
    with pytest.raises(UsageError) as raised:
        parse_port(spec)
    assert needle in raised.value.message
    assert "\n" not in raised.value.message
    assert raised.value.hint


def test_overlap_rules():
    any_8080 = PortMapping("", 8080, 80, "tcp")
    assert any_8080.overlaps(PortMapping("127.0.0.1", 8080, 81, "tcp"))
    assert not any_8080.overlaps(PortMapping("", 8080, 80, "udp"))
    assert not PortMapping("127.0.0.1", 8080, 80, "tcp").overlaps(PortMapping("127.0.0.2", 8080, 80, "tcp"))
    assert PortMapping("127.0.0.1", 8080, 80, "tcp").host_side == "127.0.0.1:8080/tcp"


def test_same_host_port_twice_in_one_request_is_refused():
    check_distinct([parse_port("80"), parse_port("80")])   # both pick their own port later
    with pytest.raises(UsageError, match="published twice"):
        check_distinct([parse_port("8080:80"), parse_port("127.0.0.1:8080:81")])


def test_bound_port_is_a_conflict_and_free_port_is_picked():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(Conflict, match=f"port 127.0.0.1:{port}/tcp is already in use by a process"):
            ensure_host_port_free(PortMapping("127.0.0.1", port, 80, "tcp"))
        chosen = pick_free_port(PortMapping("127.0.0.1", 0, 80, "tcp"), {("tcp", port)})
        assert chosen != port and 0 < chosen < 65536


def test_foreign_host_ip_is_a_usage_error():
    with pytest.raises(UsageError, match="not an address of this host"):
        ensure_host_port_free(PortMapping("203.0.113.7", 8080, 80, "tcp"))
