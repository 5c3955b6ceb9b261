"""Blob stores: one protocol (:class:`BlobStore`), a local-filesystem store and an
S3-compatible store; what a blob's bytes are (``media``); the sweeper that removes blobs no
row refers to (``sweeper``)."""

from storage.blobs.base import (
    BadKey,
    BlobError,
    BlobInfo,
    BlobNotFound,
    BlobReader,
    BlobStore,
    BlobTooLarge,
    check_key,
    new_key,
    put_bytes,
    read_all,
)
from storage.blobs.local import LocalBlobStore
from storage.blobs.s3 import S3BlobStore

__all__ = [
    "BadKey",
    "BlobError",
    "BlobInfo",
    "BlobNotFound",
    "BlobReader",
    "BlobStore",
    "BlobTooLarge",
    "LocalBlobStore",
    "S3BlobStore",
    "check_key",
    "new_key",
    "put_bytes",
    "read_all",
]
