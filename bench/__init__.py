"""ferry's benchmarks against podman: checkpoint/restore, archives, client gap, ps.

Run with `make bench` or `make bench-quick`; see docs/benchmarks.md. Modules:
stats and report are pure (unit-tested in bench/tests); run drives both engines;
engines, workloads and client are its parts; profile runs py-spy over ferry.
"""
