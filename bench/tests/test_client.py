"""bench.client: reply parsing and gap bookkeeping (no sockets)."""

import pytest

from bench.client import Gaps, Http, RedisGet


def test_gaps_track_the_longest_interval_between_replies():
    gaps = Gaps()
    for t in (10.0, 10.001, 10.002, 13.5, 13.501, 14.0):
        gaps.reply(t)
    assert gaps.replies == 6
    assert gaps.max_gap == pytest.approx(3.498)
    assert (gaps.gap_from, gaps.gap_to) == (10.002, 13.5)


def test_one_reply_is_no_gap():
    gaps = Gaps()
    gaps.reply(5.0)
    assert gaps.max_gap == 0.0 and gaps.gap_from is None


def test_redis_bulk_reply_needs_all_its_bytes():
    proto = RedisGet("key:1")
    assert proto.request() == b"*2\r\n$3\r\nGET\r\n$5\r\nkey:1\r\n"
    assert proto.parse(bytearray(b"$7\r\nvalue:")) is None
    assert proto.parse(bytearray(b"$7\r\nvalue:1\r\n")) == 13
    assert proto.parse(bytearray(b"$7\r\nvalue:1\r\n+PONG\r\n")) == 13
    assert proto.parse(bytearray(b"+PONG\r\n")) == 7


def test_redis_missing_key_or_error_is_a_wrong_reply():
    proto = RedisGet("key:1")
    with pytest.raises(ValueError):
        proto.parse(bytearray(b"$-1\r\n"))
    with pytest.raises(ValueError):
        proto.parse(bytearray(b"-LOADING\r\n"))


def test_http_keep_alive_reply_uses_content_length():
    proto = Http("10.90.0.2", close=False)
    assert proto.persistent and b"HTTP/1.1" in proto.request()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"
    assert proto.parse(bytearray(head + b"hel")) is None
    assert proto.parse(bytearray(head + b"hello")) == len(head) + 5


def test_http_close_without_length_runs_to_eof():
    proto = Http("10.90.0.2", close=True)
    assert not proto.persistent and b"HTTP/1.0" in proto.request()
    assert proto.parse(bytearray(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody")) == -1


def test_http_error_status_is_a_wrong_reply():
    with pytest.raises(ValueError):
        Http("h", close=False).parse(bytearray(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"))
