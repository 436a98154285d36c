"""util.records.checked: a forged value cannot get into a checked record by any way of making one."""

from typing import NamedTuple

import pytest

from ferry.engine.volumes import VolumeSpec
from ferry.network.ports import PortMapping
from ferry.util.records import checked


@checked
class Span(NamedTuple):
    """A range."""
    low: int
    high: int = 10

    def _check(self):
        if not self.low <= self.high:
            raise ValueError("low above high")

    @classmethod
    def parse(cls, text: str) -> "Span":
        low, high = text.split("-")
        return cls(int(low), int(high))


def test_every_way_of_making_a_checked_record_checks_it():
    span = Span(1)
    assert (span.low, span.high) == (1, 10) and Span.parse("2-3") == Span(2, 3)
    for make in (lambda: Span(11), lambda: Span(low=11), lambda: Span(5, 4), lambda: span._replace(low=20),
                 lambda: Span._make([9, 8]), lambda: Span.parse("7-6")):
        with pytest.raises(ValueError, match="low above high"):
            make()


def test_a_checked_record_keeps_its_name_type_and_fields():
    span = Span(1, 2)
    assert type(Span.parse("1-2")) is Span and isinstance(span, Span)
    assert repr(span) == "Span(low=1, high=2)" and Span.__doc__ == "A range." and Span.__name__ == "Span"
    assert span._asdict() == {"low": 1, "high": 2} and Span._fields == ("low", "high")
    assert span._replace(high=5) == Span(1, 5) and hash(span) == hash(Span(1, 2))
    with pytest.raises(AttributeError):
        span.low = 3


def test_ferry_s_own_checked_records_refuse_forged_fields_on_replace():
    mapping = PortMapping("", 8080, 80, "tcp")
    with pytest.raises(ValueError, match="protocol"):
        mapping._replace(protocol="tcp dport 1 accept\n")
    volume = VolumeSpec("volume", "data", "/data")
    with pytest.raises(ValueError, match="destination"):
        volume._replace(destination="../../etc")
