"""run's extras (--env-file, --add-host, --dns*, --restart, --init, -P, anonymous
volumes): podman 4.3.1's parsing and messages, the restart decision, the
container's hosts and resolv.conf text, and the refusal of forged records."""

from __future__ import annotations

import pytest

from ferry.engine import runextras as rx
from ferry.engine.config import ContainerConfig
from ferry.engine.runextras import NO_EXTRAS, RunExtras
from ferry.engine.volumes import VolumeSpec, parse_volume
from ferry.network import hostfiles
from ferry.util.errors import UsageError
from tests.unit.test_container_config import CONFIG

HEX = "ab" * 32


# ---- --env-file ----------------------------------------------------------------

def test_env_file_is_read_as_podman_reads_it(tmp_path):
    path = tmp_path / "env"
    path.write_text('A=1\n# a comment\n\n   B\n  C = 2 \nE="q"\nUNSET\nPRE*\nF=x=y\n')
    environ = {"B": "bee", "PRE_1": "one", "PRE_2": "two", "OTHER": "no"}
    assert rx.parse_env_file(str(path), environ) == (
        "A=1", "B=bee", "C = 2 ", 'E="q"', "PRE_1=one", "PRE_2=two", "F=x=y")


@pytest.mark.parametrize("text, needle", [
    ("=A\n", "invalid environment variable: '=A'"),
    ("  =\n", "invalid environment variable: '='"),
])
def test_env_file_refuses_a_line_without_a_key(tmp_path, text, needle):
    path = tmp_path / "env"
    path.write_text(text)
    with pytest.raises(ValueError, match=needle):
        rx.parse_env_file(str(path), {})


def test_a_missing_env_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="parsing env file .*no such file or directory"):
        rx.parse_env_file(str(tmp_path / "none"), {})


# ---- --add-host, --dns* -------------------------------------------------------

def test_add_host_splits_at_the_first_colon():
    assert rx.parse_add_host("foo:1.2.3.4") == ("foo", "1.2.3.4")
    assert rx.parse_add_host("bar.x:::1") == ("bar.x", "::1")
    assert rx.parse_add_host("fo_o:1.2.3.4") == ("fo_o", "1.2.3.4")


@pytest.mark.parametrize("text, needle", [
    ("foo", "bad format for add-host"),
    (":1.2.3.4", "bad format for add-host"),
    ("foo:bar", "invalid IP address in add-host"),
    ("foo:", "invalid IP address in add-host"),
    ("foo:fe80::1%eth0", "invalid IP address in add-host"),
    ("a b:1.2.3.4", "invalid host name"),
    ("a#b:1.2.3.4", "invalid host name"),
])
def test_bad_add_hosts_are_refused(text, needle):
    with pytest.raises(ValueError, match=needle):
        rx.parse_add_host(text)


def test_dns_values():
    assert rx.parse_dns(("9.9.9.9", "2001:db8::1")) == (("9.9.9.9", "2001:db8::1"), False)
    assert rx.parse_dns(("none",)) == ((), True)
    with pytest.raises(ValueError, match="bad is not an ip address"):
        rx.parse_dns(("bad",))
    with pytest.raises(ValueError, match="is not an ip address"):
        rx.parse_dns(("fe80::1%eth0",))
    with pytest.raises(ValueError, match="none is not allowed"):
        rx.parse_dns(("1.2.3.4", "none"))
    assert rx.parse_dns_search(("a.b", "example.com.")) == ("a.b", "example.com.")
    assert rx.parse_dns_search((".",)) == ()
    with pytest.raises(ValueError, match="bad..x is not a valid domain"):
        rx.parse_dns_search(("bad..x",))
    assert rx.parse_dns_options(("ndots:3", "a:b:c", "rotate")) == ("ndots:3", "a:b:c", "rotate")
    for bad in ('x"y', "a b", "", "x\nnameserver 1.1.1.1"):
        with pytest.raises(ValueError, match="--dns-option"):
            rx.parse_dns_options((bad,))


def test_hosts_lines_come_first_in_podman_s_form():
    text = hostfiles.with_added_hosts("127.0.0.1\tlocalhost\n", (("foo", "1.2.3.4"), ("bar", "::1")))
    assert text == "1.2.3.4\tfoo\n::1\tbar\n127.0.0.1\tlocalhost\n"


def test_resolv_conf_lines_of_each_kind_are_replaced_in_podman_s_order():
    host = "nameserver 10.0.0.1\nnameserver 10.0.0.2\nsearch lan\noptions edns0\n"
    assert hostfiles.with_dns(host, (), (), ()) == host
    assert hostfiles.with_dns(host, ("9.9.9.9",), ("a.b",), ("ndots:3",)) == \
        "search a.b\nnameserver 9.9.9.9\noptions ndots:3\n"
    assert hostfiles.with_dns(host, ("9.9.9.9",), (), ()) == \
        "search lan\nnameserver 9.9.9.9\noptions edns0\n"
    assert hostfiles.with_dns(host, (), (), ("rotate",)) == \
        "search lan\nnameserver 10.0.0.1\nnameserver 10.0.0.2\noptions rotate\n"


# ---- --restart -------------------------------------------------------------------

@pytest.mark.parametrize("text, parsed", [
    (None, ("", 0)), ("", ("", 0)), ("no", ("no", 0)), ("always", ("always", 0)),
    ("unless-stopped", ("unless-stopped", 0)), ("on-failure", ("on-failure", 0)),
    ("on-failure:0", ("on-failure", 0)), ("on-failure:3", ("on-failure", 3)),
])
def test_restart_policies(text, parsed):
    assert rx.parse_restart(text) == parsed


@pytest.mark.parametrize("text, needle", [
    ("bogus", "is not a valid restart policy"),
    ("on-failure:x", "retry count"),
    ("on-failure:-1", "greater than 0"),
    ("always:3", "only be specified with on-failure"),
    ("no:2", "only be specified with on-failure"),
])
def test_bad_restart_policies_are_refused(text, needle):
    with pytest.raises(ValueError, match=needle):
        rx.parse_restart(text)


def test_which_exits_restart():
    on_failure = RunExtras(restart="on-failure", restart_retries=2)
    assert on_failure.restarts_after(3, 0) and on_failure.restarts_after(3, 1)
    assert not on_failure.restarts_after(3, 2)
    assert not on_failure.restarts_after(0, 0)
    assert RunExtras(restart="on-failure").restarts_after(1, 10 ** 6)   # 0: no limit
    for policy in ("always", "unless-stopped"):
        assert RunExtras(restart=policy).restarts_after(0, 99)
    for policy in ("", "no"):
        assert not RunExtras(restart=policy).restarts_after(1, 0)


# ---- the record ---------------------------------------------------------------

FULL = RunExtras(labels=(("a", "b"),), add_hosts=(("foo", "1.2.3.4"), ("six", "::1")), dns=("9.9.9.9",),
                 dns_search=("a.b",), dns_options=("ndots:3",), restart="on-failure", restart_retries=2,
                 init=True)


def test_extras_round_trip_and_only_non_defaults_are_written():
    assert NO_EXTRAS.to_dict() == {}
    assert RunExtras(init=True).to_dict() == {"init": True}
    assert RunExtras(dns_none=True).to_dict() == {"dns_none": True}
    config = CONFIG._replace(extras=FULL)
    assert ContainerConfig.from_json(config.to_json()) == config
    assert config.to_dict()["extras"]["add_hosts"] == [["foo", "1.2.3.4"], ["six", "::1"]]


@pytest.mark.parametrize("extras, needle", [
    ({"add_hosts": [["foo", "bar"]]}, "not an IP address"),
    ({"add_hosts": [["foo", "1.2.3.4\n5.6.7.8 evil"]]}, "not an IP address"),
    ({"add_hosts": [["a b", "1.2.3.4"]]}, "not a host name"),
    ({"add_hosts": [["foo"]]}, "must be a pair"),
    ({"add_hosts": "foo:1.2.3.4"}, "must be a list"),
    ({"add_hosts": [["h", "1.2.3.4"]] * 257}, "at most 256"),
    ({"dns": ["8.8.8.8\nnameserver 6.6.6.6"]}, "not an IP address"),
    ({"dns": ["fe80::1%x\nnameserver 6.6.6.6"]}, "not an IP address"),
    ({"add_hosts": [["foo", "fe80::1%x\n6.6.6.6 evil"]]}, "not an IP address"),
    ({"dns": [1]}, "at most 64 strings"),
    ({"dns": ["1.1.1.1"], "dns_none": True}, "dns_none and dns servers"),
    ({"dns_search": ["a.b"], "dns_none": True}, "dns_none and dns servers"),
    ({"dns_none": 1}, "must be true or false"),
    ({"dns_search": ["a b"]}, "not a domain"),
    ({"dns_search": ["x"] * 65}, "at most 64"),
    ({"dns_options": ["ndots:1\nnameserver 6.6.6.6"]}, "not a resolv.conf option"),
    ({"restart": "sometimes"}, "not a restart policy"),
    ({"restart": "always", "restart_retries": 2}, "not a count for on-failure"),
    ({"restart": "on-failure", "restart_retries": -1}, "not a count"),
    ({"restart": "on-failure", "restart_retries": True}, "not a count"),
    ({"restart": "on-failure", "restart_retries": 1 << 40}, "not a count"),
    ({"init": "yes"}, "must be true or false"),
    ({"restart_count": 3}, "unknown"),
], ids=repr)
def test_forged_extras_are_refused(extras, needle):
    with pytest.raises(ValueError) as caught:
        ContainerConfig.from_dict(dict(CONFIG.to_dict(), extras=extras))
    assert needle in str(caught.value)


# ---- anonymous volumes ------------------------------------------------------------

def test_a_volume_without_a_source_is_anonymous():
    spec = parse_volume("/data/")
    assert spec.kind == "volume" and spec.anonymous and spec.destination == "/data" and len(spec.source) == 64
    assert parse_volume("/data").source != spec.source
    with pytest.raises(UsageError):
        parse_volume("/a/../b")


def test_anonymous_is_written_only_when_true():
    assert "anonymous" not in VolumeSpec("volume", "data", "/data").to_dict()
    anonymous = VolumeSpec("volume", HEX, "/data", anonymous=True)
    assert anonymous.to_dict()["anonymous"] is True
    assert VolumeSpec.from_dict(anonymous.to_dict()) == anonymous


@pytest.mark.parametrize("data", [
    {"kind": "volume", "source": "data", "destination": "/d", "readonly": False, "anonymous": True},
    {"kind": "bind", "source": "/srv", "destination": "/d", "readonly": False, "anonymous": True},
    {"kind": "volume", "source": HEX, "destination": "/d", "readonly": False, "anonymous": 1},
], ids=repr)
def test_forged_anonymous_volumes_are_refused(data):
    with pytest.raises(ValueError, match="anonymous"):
        VolumeSpec.from_dict(data)


def test_a_restore_beside_the_original_gets_fresh_anonymous_volumes():
    from ferry.engine.checkpoints import fresh_anonymous
    other = "cd" * 32
    config = CONFIG._replace(volumes=(VolumeSpec("volume", "data", "/data"),
                                      VolumeSpec("volume", HEX, "/anon", anonymous=True),
                                      VolumeSpec("volume", other, "/mine", anonymous=True)))
    renamed_config, renamed = fresh_anonymous(config, (other,), (), lambda name: True)
    (new, old), = renamed.items()
    assert old == HEX and new != HEX
    assert [v.source for v in renamed_config.volumes] == ["data", new, other]   # named and own ones stay
    assert fresh_anonymous(config, (), (), lambda name: False) == (config, {})
    restated = (VolumeSpec("volume", "x", "/anon"),)
    assert fresh_anonymous(config, (other,), restated, lambda name: True) == (config, {})


# ---- the engine's parsing of the flags -----------------------------------------------

def options(**given):
    from ferry.engine.containers import RunOptions
    return RunOptions(image="busybox", **given)


def test_run_flags_make_extras():
    from ferry.engine.containers import _extras
    extras, env_file = _extras(options(add_hosts=("foo:1.2.3.4",), dns=("9.9.9.9",), dns_search=("a.b",),
                                       dns_options=("ndots:2",), restart="on-failure:2", init=False,
                                       labels=("x=y",)), ())
    assert extras == RunExtras(labels=(("x", "y"),), add_hosts=(("foo", "1.2.3.4"),), dns=("9.9.9.9",),
                               dns_search=("a.b",), dns_options=("ndots:2",), restart="on-failure",
                               restart_retries=2)
    assert env_file == ()


@pytest.mark.parametrize("given, needle", [
    (dict(rm=True, restart="always"), "the --rm option conflicts with --restart"),
    (dict(add_hosts=("foo",)), "bad format for add-host"),
    (dict(dns=("bad",)), "is not an ip address"),
    (dict(restart="bogus"), "not a valid restart policy"),
    (dict(env_files=("/nonexistent/env",)), "parsing env file"),
    (dict(dns=("none",), dns_search=(".",)), "UseImageResolvConf and DNSSearch are mutually exclusive"),
    (dict(dns=("none",), dns_options=("ndots:1",)), "UseImageResolvConf and DNSOption are mutually exclusive"),
], ids=repr)
def test_bad_run_flags_are_one_line_usage_errors(given, needle):
    from ferry.engine.containers import _extras
    with pytest.raises(UsageError, match=needle):
        _extras(options(**given), ())


def test_rm_with_restart_no_is_fine():
    from ferry.engine.containers import _extras
    assert _extras(options(rm=True, restart="no"), ())[0].restart == "no"


def test_publish_all_adds_each_exposed_port_no_p_publishes():
    from ferry.engine.containers import _exposed
    from ferry.network.ports import PortMapping, parse_port
    given = [parse_port("8080:80")]
    assert _exposed(("80/tcp", "53/udp", "7000-7001/tcp", "x/tcp", "9/sctp"), given) == [
        PortMapping("", 0, 53, "udp"), PortMapping("", 0, 7000, "tcp"), PortMapping("", 0, 7001, "tcp")]


def test_image_volumes_not_covered_by_v_become_anonymous():
    from ferry.engine.containers import _image_volumes
    given = [parse_volume("data:/data")]
    added = _image_volumes(("/data", "/cache/", "/logs"), given)
    assert [(v.destination, v.anonymous) for v in added] == [("/cache", True), ("/logs", True)]
