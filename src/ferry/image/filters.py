"""podman's image filters (`images --filter`, `image prune --filter`) as pure
predicates over what the store records of an image. Checked against podman
4.3.1: one key given twice matches either value, different keys must all match;
`KEY!=VALUE` negates (label only, as podman)."""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

from ferry.util.errors import UsageError

# What podman 4.3.1 accepts for `images --filter` (its libimage filters).
IMAGE_FILTERS = ("after", "before", "containers", "dangling", "digest", "id", "label", "readonly",
                 "reference", "since", "until")
# `image prune --filter` and `system prune --filter`: podman's prune filters.
PRUNE_FILTERS = ("label", "until")


class ImageFacts(NamedTuple):
    """What the filters look at: one image, as the store and its users know it."""
    id: str
    digest: str
    names: tuple[str, ...]
    created_ns: int                      # nanoseconds since the epoch
    labels: tuple[tuple[str, str], ...]
    containers: int                      # how many containers were made from it


class Filter(NamedTuple):
    key: str
    value: str
    negated: bool = False


def parse_filters(texts: list[str], allowed: tuple[str, ...] = IMAGE_FILTERS) -> list[Filter]:
    """`KEY=VALUE` or `KEY!=VALUE` words, checked against podman's keys."""
    found = []
    for text in texts:
        key, equals, value = text.partition("=")
        negated = key.endswith("!")
        key = key.removesuffix("!")
        if not equals:
            raise UsageError(f"invalid image filter {text!r}: must be in the format "
                             f"\"filter=value or filter!=value\"")
        if key not in allowed:
            raise UsageError(f"unsupported image filter {key!r}",
                             hint=f"use one of {', '.join(allowed)}")
        if key in ("dangling", "containers", "readonly"):
            _bool(key, value)
        found.append(Filter(key, value, negated))
    return found


def _bool(key: str, value: str) -> bool:
    """Go's strconv.ParseBool, which podman reads these values with."""
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise UsageError(f"non-boolean value {value!r} for filter {key!r}", hint="use true or false")


def _glob(pattern: str) -> re.Pattern:
    """filepath.Match's syntax: * and ? stop at a slash."""
    out = []
    for char in pattern:
        out.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
    return re.compile("".join(out) + r"\Z")


def reference_matches(pattern: str, names: tuple[str, ...]) -> bool:
    """podman's reference filter: the pattern against each name with and without
    its registry, and without its tag when the pattern names none."""
    matcher = _glob(pattern)
    tagged = ":" in pattern.rpartition("/")[2] or "@" in pattern
    for name in names:
        repo, _, tag = name.rpartition(":")
        if not repo or "/" in tag:
            repo = name
        path = repo.split("/", 1)[1] if "/" in repo and _is_registry(repo.split("/", 1)[0]) else repo
        short = path.rpartition("/")[2]
        candidates = [name, *((f"{path}:{tag}", f"{short}:{tag}") if tag and repo != name else (path,))]
        if not tagged:
            candidates += [repo, path, short]
        if any(matcher.match(candidate) for candidate in candidates):
            return True
    return False


def _is_registry(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


def predicate(filters: list[Filter], created_of: Callable[[str], int],
              now_ns: int | None = None) -> Callable[[ImageFacts], bool]:
    """One test for all `filters`; `created_of(REF)` gives the creation time
    of the image a before/since filter names (NotFound when there is none)."""
    from ferry.util.timefmt import podman_time_ns
    by_key: dict[str, list[Callable[[ImageFacts], bool]]] = {}
    for item in filters:
        key, value = item.key, item.value
        if key == "dangling":
            want = _bool(key, value)
            test = (lambda want: lambda image: (not image.names) == want)(want)
        elif key == "containers":
            want = _bool(key, value)
            test = (lambda want: lambda image: (image.containers > 0) == want)(want)
        elif key == "readonly":   # ferry has no read-only (additional) image stores
            want = _bool(key, value)
            test = (lambda want: lambda image: not want)(want)
        elif key == "label":
            name, has_value, expected = value.partition("=")
            test = (lambda name, has_value, expected, negated: lambda image: (
                (name in dict(image.labels) and (not has_value or dict(image.labels)[name] == expected))
                != negated))(name, has_value, expected, item.negated)
        elif key == "reference":
            test = (lambda value: lambda image: reference_matches(value, image.names))(value)
        elif key == "id":
            test = (lambda value: lambda image: image.id == value.removeprefix("sha256:"))(value)
        elif key == "digest":
            test = (lambda value: lambda image: image.digest == value)(value)
        elif key in ("before", "since", "after"):
            when = created_of(value)
            test = ((lambda when: lambda image: image.created_ns < when) if key == "before"
                    else (lambda when: lambda image: image.created_ns > when))(when)
        elif key == "until":
            try:   # a duration counts back from now, as for --since
                when = podman_time_ns(value, since=True, now_ns=now_ns)
            except ValueError:
                raise UsageError(f"failed to parse value as time or duration: {value!r}") from None
            test = (lambda when: lambda image: image.created_ns < when)(when)
        else:   # parse_filters let through a key this table lacks
            raise UsageError(f"unsupported image filter {key!r}")
        by_key.setdefault(key, []).append(test)
    tests = list(by_key.values())
    return lambda image: all(any(test(image) for test in group) for group in tests)
