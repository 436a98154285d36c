"""Shared plumbing: the one subprocess chokepoint, the error root, atomic file
writes, locks and logging.

It imports nothing else from ferry.
"""
