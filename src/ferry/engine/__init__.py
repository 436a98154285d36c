"""The facade that cli/ calls: typed methods such as run, checkpoint, restore
and system_check.

It composes the layers below and owns no subprocess or file format itself.
"""
