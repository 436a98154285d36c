"""The checkpoint archive's file format: its records, codecs and tar layout,
the hostile-input reader, the writer (files, pipes, growing page images) and
the overlay diff format of rootfs-diff.tar and volume tars.
It reads and writes bytes only: it never runs CRIU nor makes containers."""

from ferry.checkpoint.archive.manifest import (CHECKSUMS_NAME, COMPRESSIONS, FORMAT_VERSION, MANIFEST_NAME,
                                               SIGNATURE_NAME, ArchiveContents, Checksum, Checksums, Head, ManifestV2,
                                               MemberV2, Signature, parse_head)
from ferry.checkpoint.archive.codecs import compression_for
from ferry.checkpoint.archive.reader import ArchiveReader, ForeignHead, read_archive, read_manifest
from ferry.checkpoint.archive.treediff import apply_tree_diff, write_tree_diff
from ferry.checkpoint.archive.writer import ArchiveWriter, WriteResult, write_archive
from ferry.checkpoint.hostinfo import HostInfo, host_info

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "CHECKSUMS_NAME", "SIGNATURE_NAME", "COMPRESSIONS",
           "ArchiveContents", "Checksum", "Checksums", "Head", "HostInfo", "ManifestV2", "MemberV2", "Signature",
           "host_info", "compression_for", "parse_head", "ArchiveReader", "ForeignHead", "read_archive", "read_manifest",
           "ArchiveWriter", "WriteResult", "write_archive", "apply_tree_diff", "write_tree_diff"]
