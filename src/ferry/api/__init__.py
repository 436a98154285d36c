"""The agent, `ferry serve`: a REST API under /v1/ for other hosts (and
scripts) over one state root, with bearer-token authentication on every
route. It is a peer of cli/: it calls engine/ only, and nothing here is
imported by the ordinary, daemonless commands.
"""
