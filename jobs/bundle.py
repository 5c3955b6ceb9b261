"""Board exports with their files: one zip holding ``board.json`` (the document) and each
attachment's bytes under ``files/``.

Written as a stream (nothing whole in memory, no temporary file): zipfile writes into a
buffer that is handed to the caller after every chunk. Read from a file on disk (a zip's
directory is at its end), a member at a time.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from storage.blobs import BlobStore

DOCUMENT = "board.json"
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
_CHUNK = 256 * 1024


class _Sink(io.RawIOBase):
    """A write-only, unseekable file whose bytes are taken away as they come."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self._buf += b
        self._pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


@dataclass(frozen=True, slots=True)
class BundledFile:
    path: str  # inside the zip
    key: str  # in the blob store


async def write_bundle(
    document: bytes, files: Sequence[BundledFile], store: BlobStore, send: Callable[[bytes], Awaitable[None]]
) -> None:
    """Stream the zip to ``send``: the document, then every file read from the store."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(DOCUMENT, document)
        await send(sink.take())
        for f in files:
            # Files are mostly compressed already (images, PDFs): stored, not deflated again.
            with zf.open(zipfile.ZipInfo(f.path), "w", force_zip64=True) as out:
                async with store.open(f.key) as blob:
                    async for chunk in blob:
                        out.write(chunk)
                        await send(sink.take())
            await send(sink.take())
    await send(sink.take())


class BadBundle(ValueError):
    """Not a zip, or one without a document or with a file the document names missing."""


def read_document(path: str) -> bytes:
    """The document inside the zip at ``path`` (sync: run it in a thread)."""
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo(DOCUMENT)
            except KeyError:
                raise BadBundle(f"the zip holds no {DOCUMENT}") from None
            if info.file_size > MAX_DOCUMENT_BYTES:
                raise BadBundle(f"{DOCUMENT} is larger than {MAX_DOCUMENT_BYTES} bytes")
            return zf.read(info)
    except zipfile.BadZipFile as e:
        raise BadBundle(f"not a zip file: {e}") from e


def members(path: str) -> dict[str, int]:
    """Name -> uncompressed size of every member (sync)."""
    with zipfile.ZipFile(path) as zf:
        return {i.filename: i.file_size for i in zf.infolist()}


async def member_chunks(zf: zipfile.ZipFile, name: str) -> AsyncIterator[bytes]:
    """One member's bytes in chunks (the reads are local and short)."""
    with zf.open(name) as src:
        while chunk := src.read(_CHUNK):
            yield chunk
