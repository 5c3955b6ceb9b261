"""The blob store contract: what attachments and generated artifacts are kept in.

A blob is an opaque byte string under a *key* that the server makes (:func:`new_key`); a name
a client sent never becomes part of a key, and every key is checked against one pattern
(:func:`check_key`) before any store touches it, so a key cannot climb out of its folder or
bucket prefix. Stores stream both ways: nothing holds a whole blob in memory.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

CHUNK_BYTES = 256 * 1024  # what a read yields at a time

# namespace/segment[/segment...]: lower-case namespace, segments of letters, digits, '.', '_'
# and '-' that never start with a dot (so never '.' or '..'), at most six segments.
_KEY = re.compile(r"[a-z][a-z0-9_-]{0,31}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}){1,6}")


class BlobError(Exception):
    """A blob store failed (I/O, network, the service refused)."""


class BlobNotFound(BlobError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no blob {key!r}")
        self.key = key


class BlobTooLarge(BlobError):
    """The stream passed the size limit; nothing was stored."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"blob larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


class BadKey(ValueError):
    pass


def check_key(key: str) -> str:
    """``key`` if it is a well-formed blob key, else :class:`BadKey`."""
    if _KEY.fullmatch(key) is None:
        raise BadKey(f"not a blob key: {key!r}")
    return key


def new_key(namespace: str, *parts: str | uuid.UUID, suffix: str = "") -> str:
    """A fresh key: ``namespace/part/.../<random>[suffix]``, e.g.
    ``attachments/<board id>/<uuid hex>``."""
    return check_key("/".join([namespace, *map(str, parts), uuid.uuid4().hex + suffix]))


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int
    modified_s: float  # unix seconds of the last write


class BlobReader(Protocol):
    """An open blob: its size, then its bytes in chunks."""

    size: int

    def __aiter__(self) -> AsyncIterator[bytes]: ...


@runtime_checkable
class BlobStore(Protocol):
    """Where blobs live. Every method takes keys made by :func:`new_key` (checked again here)."""

    kind: str  # "local", "s3": for logs, metrics and /health

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str, max_bytes: int) -> int:
        """Store the stream under ``key``; returns its size. Past ``max_bytes`` it stops reading
        and raises :class:`BlobTooLarge`; on that or any failure nothing is left under the key
        (a blob is visible only once complete)."""
        ...

    def open(self, key: str) -> AbstractAsyncContextManager[BlobReader]:
        """Read a blob as a stream; :class:`BlobNotFound` on entering if there is none."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove the blob; removing a missing blob is not an error."""
        ...

    def scan(self, namespace: str) -> AsyncIterator[BlobInfo]:
        """Every complete blob under ``namespace/`` (for the sweeper), in no particular order."""
        ...

    async def signed_url(
        self, key: str, *, expires_s: float, content_type: str, filename: str, inline: bool
    ) -> str | None:
        """A URL that serves the blob without credentials until it expires, with these
        Content-Type and Content-Disposition headers; None where the store has no such thing
        (the server then signs a URL of its own)."""
        ...

    async def check(self) -> None:
        """Raise if the store cannot be used (for /health)."""
        ...

    async def close(self) -> None: ...


async def put_bytes(store: BlobStore, key: str, data: bytes, *, content_type: str) -> int:
    """Store a small blob already in memory (a thumbnail)."""

    async def one() -> AsyncIterator[bytes]:
        yield data

    return await store.put(key, one(), content_type=content_type, max_bytes=len(data))


async def read_all(store: BlobStore, key: str, max_bytes: int) -> bytes:
    """A small blob's bytes (tests, thumbnails' sources are read through a temporary file)."""
    out = bytearray()
    async with store.open(key) as blob:
        async for chunk in blob:
            out += chunk
            if len(out) > max_bytes:
                raise BlobTooLarge(max_bytes)
    return bytes(out)
