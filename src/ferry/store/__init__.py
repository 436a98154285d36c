"""State: the on-disk layout of a state root (/var/lib/ferry or --root) and its
SQLite records.

Every path under a root is computed here, so that two roots never share a file.
"""
