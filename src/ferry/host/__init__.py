"""Read-only probes of this host: tool versions, kernel features, cgroup mode,
capabilities and limits.

`ferry system check`, the runtime (rlimit clamping, cgroup manager) and the test
suite's skips all read the same probes. It changes nothing on the host.
"""
