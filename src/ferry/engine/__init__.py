"""The facade that cli/ and api/ call: typed methods such as run, checkpoint,
restore, migrate and system_check.

It composes the layers below and owns no subprocess or file format itself.
"""
