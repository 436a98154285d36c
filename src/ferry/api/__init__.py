"""The REST agent (`ferry serve`), a peer of cli/.

It calls engine/ only, and never prints.
"""
