"""Live migration's own parts: the versioned wire messages that cross between
hosts (strict pydantic records, validated at both ends), the phases and the
point of no return, and the client of another host's agent.

It moves bytes and messages only: engine/migrations.py drives checkpoints,
restores and containers with them. Nothing here runs on ordinary CLI paths.
"""
