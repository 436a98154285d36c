"""The edits `network connect` and `disconnect` make to a running container's /etc/hosts."""

from ferry.network import hostfiles

BASE = "127.0.0.1\tlocalhost\n10.88.0.5\tweb\n10.88.0.1\thost.containers.internal\n"


def test_a_joined_network_adds_the_name_on_its_address_after_the_rest():
    assert hostfiles.with_address(BASE, "10.89.0.7", "web") == BASE + "10.89.0.7\tweb\n"


def test_an_address_already_named_is_not_added_twice():
    text = hostfiles.with_address(BASE, "10.89.0.7", "web")
    assert hostfiles.with_address(text, "10.89.0.7", "web") == text


def test_a_file_without_a_last_newline_gets_one_before_the_new_line():
    assert hostfiles.with_address("192.0.2.9 mine", "10.89.0.7", "web") == "192.0.2.9 mine\n10.89.0.7\tweb\n"


def test_a_left_network_takes_only_the_container_s_lines_on_that_address():
    text = BASE + "10.89.0.7\tweb\n10.89.0.7 other\n# 10.89.0.7 web\n10.89.0.7 alias web # mine\n"
    assert hostfiles.without_address(text, "10.89.0.7", "web") == BASE + "10.89.0.7 other\n# 10.89.0.7 web\n"
