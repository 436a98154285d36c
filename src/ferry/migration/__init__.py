"""Live migration: the source-side phase machine with its point of no return,
the destination side, and versioned wire messages.

It moves archives and pages; it does not know how an archive is laid out.
"""
