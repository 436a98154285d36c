"""The checkpoint archive's file format: its records, codecs and tar layout,
the hostile-input reader, the writer (files, pipes, growing page images) and
the overlay diff format of rootfs-diff.tar and volume tars.
It reads and writes bytes only: it never runs CRIU nor makes containers.

Each name loads its module when first used: a checkpoint never needs the
reader, nor a restore the writer."""

import sys

_HOMES = {
    "manifest": ("CHECKSUMS_NAME", "COMPRESSIONS", "FORMAT_VERSION", "MANIFEST_NAME", "SIGNATURE_NAME",
                 "ArchiveContents", "Checksum", "Checksums", "Head", "ManifestV2", "MemberV2", "Signature",
                 "parse_head"),
    "codecs": ("compression_for",),
    "reader": ("ArchiveReader", "ForeignHead", "read_archive", "read_manifest"),
    "treediff": ("apply_tree_diff", "write_tree_diff"),
    "writer": ("ArchiveWriter", "WriteResult", "write_archive"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
_HOST = ("HostInfo", "host_info")   # re-exported from ferry.checkpoint.hostinfo

__all__ = [*_MODULE_OF, *_HOST]


def __getattr__(name: str):
    if name in _MODULE_OF:
        home = f"{__name__}.{_MODULE_OF[name]}"
    elif name in _HOST:
        home = "ferry.checkpoint.hostinfo"
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # __import__, not importlib.import_module: only the import statement's
    # path is seen by -X importtime, which the tests' import guards read.
    __import__(home)
    value = getattr(sys.modules[home], name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *__all__])
