"""Checkpoint archives (write, read, validate), CRIU options and RPC, stats,
inspection and compatibility checks.

It talks to CRIU through util.proc only, and never creates containers.
"""
