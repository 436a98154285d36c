"""The runc driver, OCI spec generation and the per-container monitor.

It calls runc through its CLI only, and never reads runc's private state.
"""
