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
