"""`ferry network` parsing and JSON shape, without touching the host."""

from __future__ import annotations

import argparse

import pytest

from ferry.cli import main as cli_main
from ferry.cli import networks as cli_networks
from ferry.network.manager import Network
from ferry.util.errors import UsageError


def parse(*argv):
    parser = cli_main.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "network" not in commands.choices:
        cli_networks.register(commands)
    return parser.parse_args(list(argv))


def test_verbs_reach_their_handlers():
    args = parse("network", "create", "--subnet", "10.97.0.0/24", "--gateway", "10.97.0.9",
                 "--interface-name", "br-blue", "blue")
    assert (args.handler, args.name, args.subnet, args.gateway, args.bridge) == \
        (cli_networks.cmd_create, "blue", "10.97.0.0/24", "10.97.0.9", "br-blue")
    assert parse("network", "ls", "--format", "json").handler is cli_networks.cmd_ls
    assert parse("network", "list").handler is cli_networks.cmd_ls
    args = parse("network", "rm", "-f", "a", "b")
    assert (args.handler, args.force, args.names) == (cli_networks.cmd_rm, True, ["a", "b"])
    assert parse("network", "inspect", "a").names == ["a"]


@pytest.mark.parametrize("argv,needle", [
    (("network", "bogus"), "unknown command 'bogus' for 'ferry network'"),
    (("network", "create"), "the following arguments are required: NAME"),
])
def test_bad_invocations_are_usage_errors(argv, needle):
    with pytest.raises(UsageError, match=needle):
        parse(*argv)


def test_network_without_verb_asks_for_one():
    args = parse("network")
    with pytest.raises(UsageError, match="'ferry network' needs a subcommand"):
        args.handler(args)


def test_inspect_uses_podmans_keys():
    network = Network("blue", "f" * 64, "ferry1", "10.91.0.0/16", "10.91.0.1", "2026-01-01T00:00:00Z")
    data = cli_networks.as_podman(network)
    assert data["name"] == "blue" and data["id"] == "f" * 64 and data["driver"] == "bridge"
    assert data["network_interface"] == "ferry1" and data["created"] == "2026-01-01T00:00:00Z"
    assert data["subnets"] == [{"subnet": "10.91.0.0/16", "gateway": "10.91.0.1"}]


def test_new_verbs_and_flags_reach_their_handlers():
    args = parse("network", "create", "-d", "bridge", "--internal", "--subnet", "10.97.0.0/24", "--label", "a=b",
                 "--label", "c", "--ip-range", "10.97.0.128/25", "inner")
    assert (args.handler, args.driver, args.internal, args.label, args.ip_range) == \
        (cli_networks.cmd_create, "bridge", True, ["a=b", "c"], "10.97.0.128/25")
    args = parse("network", "connect", "--ip", "10.97.0.9", "inner", "web")
    assert (args.handler, args.ip, args.network, args.container) == (cli_networks.cmd_connect, "10.97.0.9",
                                                                     "inner", "web")
    args = parse("network", "disconnect", "-f", "inner", "web")
    assert (args.handler, args.force, args.network, args.container) == (cli_networks.cmd_disconnect, True,
                                                                        "inner", "web")
    args = parse("network", "prune", "-f", "--filter", "label=a")
    assert (args.handler, args.force, args.filter) == (cli_networks.cmd_prune, True, ["label=a"])
    assert parse("network", "ls", "-f", "name=x", "--filter", "label=a").filter == ["name=x", "label=a"]


def test_create_refuses_another_driver_before_touching_the_engine():
    args = parse("network", "create", "-d", "macvlan", "mac")
    with pytest.raises(UsageError, match="unsupported driver macvlan"):
        args.handler(args)


def test_inspect_shows_internal_labels_and_lease_range_as_podman():
    network = Network("inner", "f" * 64, "ferry3", "10.97.0.0/24", "10.97.0.1", "2026-01-01T00:00:00Z",
                      True, (("a", "b"), ("c", "")), "10.97.0.128/25")
    data = cli_networks.as_podman(network)
    assert list(data) == ["name", "id", "driver", "network_interface", "created", "subnets", "ipv6_enabled",
                          "internal", "dns_enabled", "labels", "ipam_options"]
    assert data["internal"] is True and data["labels"] == {"a": "b", "c": ""}
    assert data["subnets"] == [{"subnet": "10.97.0.0/24", "gateway": "10.97.0.1",
                                "lease_range": {"start_ip": "10.97.0.129", "end_ip": "10.97.0.255"}}]
    plain = cli_networks.as_podman(Network("blue", "f" * 64, "ferry1", "10.91.0.0/16", "10.91.0.1", "x"))
    assert "labels" not in plain and plain["internal"] is False


@pytest.mark.parametrize("filters, names", [
    (["name=^in"], ["inner"]),
    (["name=r"], ["ferry", "inner"]),
    (["label=a"], ["inner"]),
    (["label=a=z"], []),
    (["driver=bridge", "id=ff"], ["inner"]),
    (["dangling=true"], ["inner"]),
    (["dangling=false"], ["ferry", "blue"]),
])
def test_ls_filters_as_podman_s(filters, names):
    from ferry.engine.volumes import parse_filters
    nets = [Network("ferry", "a" * 64, "ferry0", "10.90.0.0/16", "10.90.0.1", "x"),
            Network("blue", "b" * 64, "ferry1", "10.91.0.0/16", "10.91.0.1", "x"),
            Network("inner", "f" * 64, "ferry3", "10.97.0.0/24", "10.97.0.1", "x", True, (("a", "b"),))]

    class Engine:   # blue has a container; ferry, the default network, never dangles
        class networks:
            @staticmethod
            def reservations():
                from ferry.network.manager import Reservation
                return [Reservation("c" * 64, "blue", "10.91.0.2", "02:00:00:00:00:01")]
    chosen = cli_networks._filtered(Engine, nets, parse_filters(filters, cli_networks.NETWORK_FILTERS, "network"))
    assert [n.name for n in chosen] == names


def test_an_unknown_filter_is_a_usage_error():
    from ferry.engine.volumes import parse_filters
    with pytest.raises(UsageError, match='"bogus" is an invalid network filter'):
        parse_filters(["bogus=1"], cli_networks.NETWORK_FILTERS, "network")
