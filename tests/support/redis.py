"""A minimal RESP client over one persistent connection: the benchmark's own,
so the tests and the benchmark speak to redis the same way; and the redis
command line they all build their image with."""

import json

from bench.workloads import REDIS_CMD as _REDIS_ARGV
from bench.workloads import REDIS_CLIENT, Redis  # noqa: F401

REDIS_CMD = json.dumps(_REDIS_ARGV)   # for `ferry image build-debian --cmd`
