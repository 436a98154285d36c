"""A busybox shell loop that counts, and a reader of its count.

The loop writes each number to a new file and renames it over the old one, so
a reader never sees the moment between truncate and write: a plain
`echo $i > /tmp/count` read by `cat` at that instant gives an empty file."""
from tests.support.cli import Ferry

COUNTER = ("i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; "
           "mv -f /tmp/count.new /tmp/count; sleep 0.05; done")


def count(ferry: Ferry, name: str) -> int:
    """The container's count; 0 before the loop's first number."""
    done = ferry("exec", name, "sh", "-c", "test ! -e /tmp/count || cat /tmp/count")
    return int(done.stdout.strip() or 0)
