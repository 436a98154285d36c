"""A minimal RESP client over one persistent connection: the benchmark's own,
so the tests and the benchmark speak to redis the same way."""

from bench.workloads import Redis  # noqa: F401
