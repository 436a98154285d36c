"""Records that check themselves.

ferry's records are `typing.NamedTuple`s rather than dataclasses: on Python
3.11 a frozen dataclass compiles about six generated functions when its module
loads (0.7 ms each class, about 40 ms of every command's start), a NamedTuple
one. A record built from input that may be forged gets `@checked`, so that
every construction, `_replace` included, runs its `_check`.
"""

from __future__ import annotations


def checked(base):
    """A subclass of the NamedTuple `base` whose instances pass `base._check`
    (which raises ValueError) whenever one is made."""

    def __new__(cls, *args, **kwargs):
        self = base.__new__(cls, *args, **kwargs)
        self._check()
        return self

    def _make(cls, iterable):   # what _replace builds through; tuple.__new__ would skip the check
        return cls(*iterable)

    return type(base.__name__, (base,), {
        "__slots__": (), "__new__": __new__, "_make": classmethod(_make),
        "__module__": base.__module__, "__qualname__": base.__qualname__, "__doc__": base.__doc__,
    })
