"""Blobs as files under one folder (the default: ``<data dir>/blobs``).

A key maps to a path below the root by construction: keys are checked against one pattern
(no '..', no leading '/', no backslash), and the resolved path is checked to be under the root
all the same. A blob is written to ``.incoming/`` and renamed into place once complete and
flushed to disk, so a reader or the sweeper never sees half a blob under its key, and a crash
leaves only files in ``.incoming/`` (removed by the sweeper when old).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from storage.blobs.base import CHUNK_BYTES, BlobError, BlobInfo, BlobNotFound, BlobTooLarge, check_key

_WRITE_BYTES = 1024 * 1024  # chunks are gathered up to this before one write in a thread
INCOMING = ".incoming"
T = TypeVar("T")


class _FileReader:
    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await asyncio.to_thread(os.read, self._fd, CHUNK_BYTES):
            yield chunk


class LocalBlobStore:
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._incoming = self.root / INCOMING
        self._incoming.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:  # pragma: no cover - by the pattern
            raise BlobError(f"key {key!r} leaves the store")
        return path

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str, max_bytes: int) -> int:
        final = self.path(key)
        part = self._incoming / f"{uuid.uuid4().hex}.part"
        size = 0
        published = False
        # Only the store's own file operations are store failures; whatever the source
        # stream raises (a client that went away) passes through as it is.
        try:
            fd = await _io(key, os.open, part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                buffer = bytearray()
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise BlobTooLarge(max_bytes)
                    buffer += chunk
                    if len(buffer) >= _WRITE_BYTES:
                        await _io(key, _write_all, fd, bytes(buffer))
                        buffer.clear()
                if buffer:
                    await _io(key, _write_all, fd, bytes(buffer))
                await _io(key, os.fsync, fd)
            finally:
                os.close(fd)
            await _io(key, _publish, part, final)
            published = True
        finally:
            if not published:
                await asyncio.to_thread(part.unlink, missing_ok=True)
        return size

    @contextlib.asynccontextmanager
    async def open(self, key: str) -> AsyncIterator[_FileReader]:
        path = self.path(key)
        try:
            fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        except OSError as e:
            raise BlobError(f"could not read blob {key!r}: {e}") from e
        try:
            yield _FileReader(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as e:
            raise BlobError(f"could not delete blob {key!r}: {e}") from e

    async def scan(self, namespace: str) -> AsyncIterator[BlobInfo]:
        base = self.root / namespace
        for info in await asyncio.to_thread(_walk, self.root, base):
            yield info

    async def list_incoming(self, older_than_s: float) -> list[Path]:
        """Leftovers of uploads a crash interrupted."""
        cutoff = time.time() - older_than_s
        return await asyncio.to_thread(
            lambda: [p for p in self._incoming.iterdir() if p.stat().st_mtime < cutoff]
        )

    async def signed_url(
        self, key: str, *, expires_s: float, content_type: str, filename: str, inline: bool
    ) -> str | None:
        return None  # served by the server itself, under a URL it signs (server/api/blob_urls.py)

    async def check(self) -> None:
        ok = await asyncio.to_thread(os.access, self._incoming, os.W_OK)
        if not ok:
            raise BlobError(f"{self._incoming} is not writable")

    async def close(self) -> None:
        pass


async def _io(key: str, fn: Callable[..., T], *args: Any) -> T:
    try:
        return await asyncio.to_thread(fn, *args)
    except OSError as e:
        raise BlobError(f"could not write blob {key!r}: {e}") from e


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _publish(part: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)
    # the rename itself must survive a crash: the board commit that follows refers to it
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _walk(root: Path, base: Path) -> list[BlobInfo]:
    out: list[BlobInfo] = []
    if not base.is_dir():
        return out
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            path = Path(dirpath, name)
            try:
                st = path.stat()
            except FileNotFoundError:  # deleted while we walked
                continue
            out.append(BlobInfo(path.relative_to(root).as_posix(), st.st_size, st.st_mtime))
    return out
