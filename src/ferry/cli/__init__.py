"""Command line: argument parsing and rendering (tables, JSON, progress).

The only layer that prints or exits, and the one place where errors become exit
codes. It calls engine/ and nothing below it.
"""
