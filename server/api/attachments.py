"""Attachments over REST: upload (multipart, streamed to the blob store), list, download and
thumbnail (a redirect to a short-lived signed URL), delete.

The upload route is the only builder of ``attachment.add``: it stores the blob (and an image's
thumbnail) first, then submits the command; a refused command deletes what it stored. Blobs of
deleted attachments are removed by the sweeper once the deletion has committed (see
storage/blobs/ledger.py); a request never deletes a blob that a committed row refers to.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
import structlog
from aiohttp import BodyPartReader, MultipartReader, hdrs, web

from actors import Execute
from protocol import commands as c
from protocol.errors import BoardcastError, ErrorCode, bad_request, not_found
from protocol.model import Attachment
from server.access import Action, User, authorize, current_user
from server.api.blob_urls import SECURITY_HEADERS
from server.http import Route, UnsupportedMediaType, json_response, path_uuid
from server.keys import BLOB_LEDGER, BLOB_SWEEPER, BLOBS, MEMBERS, METRICS, REGISTRY, SETTINGS, URL_SIGNER
from storage.blobs import BlobError, BlobStore, BlobTooLarge, new_key, put_bytes
from storage.blobs.media import (
    INLINE_TYPES,
    SNIFF_BYTES,
    THUMBNAIL_SOURCES,
    MediaTypeRefused,
    ThumbnailError,
    check_type,
    make_thumbnail,
    safe_filename,
    sniff,
)

log = structlog.get_logger(__name__)

NAMESPACE = "attachments"
_READ_BYTES = 256 * 1024
_FORM_OVERHEAD = 16 * 1024  # multipart boundaries and part headers around the file
_THUMB_TYPES = {"jpg": "image/jpeg", "png": "image/png"}
# A refusal that says the command was not applied: its blobs can go at once. Anything else
# (timeout, unknown outcome, a crash) may yet have committed: the sweeper decides later.
_NOT_APPLIED = frozenset(ErrorCode) - {ErrorCode.TIMEOUT, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL}


class AttachmentList(msgspec.Struct):
    attachments: list[Attachment]


def _too_large(limit: int) -> BoardcastError:
    return BoardcastError(ErrorCode.TOO_LARGE, f"the file is larger than {limit} bytes", {"max_bytes": limit})


def _store_failed(app: web.Application, op: str, e: BlobError) -> BoardcastError:
    app[METRICS].blob_failures.labels(op=op).inc()
    log.warning("blob_store_failed", op=op, error=repr(e))
    return BoardcastError(ErrorCode.UNAVAILABLE, "the file store cannot be reached; retry")


async def _board(request: web.Request, action: Action) -> tuple[User, uuid.UUID, uuid.UUID]:
    """The caller, the board and the card of the path, once the caller may ``action`` it."""
    user = current_user(request)
    board_id = path_uuid(request, "board_id")
    await authorize(request.app[MEMBERS], user, board_id, action)
    card_id = path_uuid(request, "card_id")
    if not await request.app[BLOB_LEDGER].card_exists(board_id, card_id):
        raise not_found("card", card_id)
    return user, board_id, card_id


async def _attachment(request: web.Request, action: Action) -> tuple[User, uuid.UUID, Attachment]:
    user, board_id, card_id = await _board(request, action)
    att_id = path_uuid(request, "attachment_id")
    found = await request.app[BLOB_LEDGER].attachments(board_id, card_id, att_id)
    if not found:
        raise not_found("attachment", att_id)
    return user, board_id, found[0]


# ------------------------------------------------------------------ upload


async def _file_part(request: web.Request) -> tuple[MultipartReader, BodyPartReader]:
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            "upload the file as multipart/form-data, in a part named 'file'", {"reason": "content_type"}
        )
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as e:  # aiohttp: no boundary
        raise bad_request(f"malformed multipart body: {e}") from e
    part = await _next_part(reader)
    if not isinstance(part, BodyPartReader) or part.name != "file" or part.filename is None:
        raise bad_request("the first part must be the file: name 'file', with a filename")
    return reader, part


async def _next_part(reader: MultipartReader) -> object | None:
    try:
        return await reader.next()
    except (ValueError, AssertionError) as e:  # aiohttp: a malformed body
        raise bad_request(f"malformed multipart body: {e}") from e


async def _head(part: BodyPartReader, limit: int) -> bytes:
    head = bytearray()
    while len(head) < SNIFF_BYTES:
        chunk = await part.read_chunk(_READ_BYTES)
        if not chunk:
            break
        head += chunk
        if len(head) > limit:
            raise _too_large(limit)
    return bytes(head)


async def _chunks(head: bytes, part: BodyPartReader) -> AsyncIterator[bytes]:
    if head:
        yield head
    while chunk := await part.read_chunk(_READ_BYTES):
        yield chunk


async def _thumbnail(store: BlobStore, key: str, limit: int) -> tuple[bytes, str] | None:
    """A thumbnail of the stored image (read back through a temporary file, decoded in a
    thread), or None if Pillow cannot make one."""
    with tempfile.SpooledTemporaryFile(max_size=2 * 1024 * 1024) as tmp:
        async with store.open(key) as blob:
            if blob.size > limit:
                return None
            async for chunk in blob:
                await asyncio.to_thread(tmp.write, chunk)
        tmp.seek(0)
        try:
            thumb = await asyncio.to_thread(make_thumbnail, tmp)  # type: ignore[arg-type]
        except ThumbnailError as e:
            log.info("thumbnail_skipped", key=key, reason=str(e))
            return None
    return thumb.data, thumb.content_type


async def _discard(app: web.Application, keys: list[str]) -> None:
    """Delete blobs that no command will refer to. A failure leaves their ledger rows: the
    sweeper removes them after the grace period."""
    store, ledger = app[BLOBS], app[BLOB_LEDGER]
    try:
        for key in keys:
            await store.delete(key)
        await ledger.forget_uploads(keys)
    except BlobError as e:
        _store_failed(app, "delete", e)
    except Exception as e:  # PostgreSQL: the rows stay, the sweeper finds the blobs gone
        log.warning("blob_discard_failed", error=repr(e))


async def upload_attachment(request: web.Request) -> web.Response:
    app = request.app
    s, store, ledger = app[SETTINGS], app[BLOBS], app[BLOB_LEDGER]
    user, board_id, card_id = await _board(request, Action.WRITE)
    limit = s.blob_max_bytes
    if request.content_length is not None and request.content_length > limit + _FORM_OVERHEAD:
        raise _too_large(limit)  # before reading a byte of it
    reader, part = await _file_part(request)
    head = await _head(part, limit)
    try:
        content_type = check_type(sniff(head), part.headers.get(hdrs.CONTENT_TYPE), s.blob_allowed_types)
    except MediaTypeRefused as e:
        raise UnsupportedMediaType(str(e), {"reason": "media_type", "detected": e.sniffed}) from None

    keys: list[str] = []
    outcome = "refused"  # refused: nothing refers to the blobs | unknown | committed
    try:
        blob_key = new_key(NAMESPACE, board_id)
        keys.append(blob_key)
        await ledger.record_uploads(keys, board_id)  # before the blob: a crash leaves a trace
        try:
            size = await store.put(blob_key, _chunks(head, part), content_type=content_type, max_bytes=limit)
        except BlobTooLarge:
            raise _too_large(limit) from None
        if await _next_part(reader) is not None:
            raise bad_request("one file per request, and nothing after it")
        thumb_key = await _store_thumbnail(app, blob_key, content_type, limit, keys, board_id)
        attachment = Attachment(
            id=uuid.uuid4(),
            card_id=card_id,
            name=safe_filename(part.filename),
            content_type=content_type,
            size=size,
            blob_key=blob_key,
            thumb_key=thumb_key,
            created_by=user.id,
            created_at_ms=int(time.time() * 1000),
        )
        cmd = Execute(
            author=user.id, rid=None, cmd=c.AddAttachment(attachment=attachment), received=time.perf_counter()
        )
        outcome = "unknown"  # from here a timeout or a crash may still have committed it
        try:
            await app[REGISTRY].ask(board_id, cmd, s.ask_timeout_s)
        except BoardcastError as e:
            if e.code in _NOT_APPLIED:
                outcome = "refused"
            raise
        outcome = "committed"
    except BlobError as e:
        raise _store_failed(app, "put", e) from e
    finally:
        if outcome == "refused":
            await asyncio.shield(_discard(app, keys))
        elif outcome == "unknown":
            log.warning("attachment_outcome_unknown", keys=keys)  # the sweeper decides, after the grace
    try:
        await ledger.forget_uploads(keys)
    except Exception as e:  # rows left behind are dropped by the sweeper (the blobs are referenced)
        log.warning("blob_ledger_failed", error=repr(e))
    return json_response(attachment, 201)


async def _store_thumbnail(
    app: web.Application, blob_key: str, content_type: str, limit: int, keys: list[str], board_id: uuid.UUID
) -> str | None:
    if content_type not in THUMBNAIL_SOURCES:
        return None
    store = app[BLOBS]
    thumb = await _thumbnail(store, blob_key, limit)
    if thumb is None:
        return None
    data, thumb_type = thumb
    thumb_key = f"{blob_key}.thumb.{'png' if thumb_type == 'image/png' else 'jpg'}"
    keys.append(thumb_key)
    await app[BLOB_LEDGER].record_uploads([thumb_key], board_id)
    await put_bytes(store, thumb_key, data, content_type=thumb_type)
    return thumb_key


# ------------------------------------------------------------------ reading and deleting


async def list_attachments(request: web.Request) -> web.Response:
    _, board_id, card_id = await _board(request, Action.READ)
    return json_response(AttachmentList(await request.app[BLOB_LEDGER].attachments(board_id, card_id)))


async def _redirect(request: web.Request, *, thumbnail: bool) -> web.Response:
    app = request.app
    _, _, a = await _attachment(request, Action.READ)
    if thumbnail:
        if a.thumb_key is None:
            raise not_found("thumbnail", a.id)
        key, ext = a.thumb_key, a.thumb_key.rsplit(".", 1)[-1]
        content_type = _THUMB_TYPES.get(ext, "application/octet-stream")
        filename = f"{a.name.rsplit('.', 1)[0]}-thumbnail.{ext}"
    else:
        key, content_type, filename = a.blob_key, a.content_type, a.name
    inline = content_type in INLINE_TYPES
    s = app[SETTINGS]
    ttl = s.blob_url_ttl_s
    url = None
    if s.blob_s3_presign:  # the store's own signed URL, where it has such a thing (S3)
        try:
            url = await app[BLOBS].signed_url(
                key, expires_s=ttl, content_type=content_type, filename=filename, inline=inline
            )
        except BlobError as e:
            raise _store_failed(app, "sign", e) from e
    if url is None:
        url = app[URL_SIGNER].url(
            key, content_type=content_type, filename=filename, inline=inline, expires_s=ttl
        )
    # 307: the same GET, at the signed URL; not cached, since the URL expires
    return web.Response(
        status=307,
        headers={
            "Location": url,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": SECURITY_HEADERS["X-Content-Type-Options"],
        },
    )


async def download_attachment(request: web.Request) -> web.Response:
    return await _redirect(request, thumbnail=False)


async def download_thumbnail(request: web.Request) -> web.Response:
    return await _redirect(request, thumbnail=True)


async def delete_attachment(request: web.Request) -> web.Response:
    app = request.app
    user, board_id, a = await _attachment(request, Action.WRITE)
    await app[REGISTRY].ask(
        board_id,
        Execute(
            author=user.id,
            rid=None,
            cmd=c.DeleteAttachment(attachment_id=a.id),
            received=time.perf_counter(),
        ),
        app[SETTINGS].ask_timeout_s,
    )
    app[BLOB_SWEEPER].wake()  # committed: its blobs are in the trash now
    return web.Response(status=204)


_A = "/api/v1/boards/{board_id}/cards/{card_id}/attachments"
ROUTES: list[Route] = [
    Route(
        "POST",
        _A,
        upload_attachment,
        "Attach a file to a card (multipart/form-data, one part named 'file')",
        response=Attachment,
        status=201,
        errors=(403, 404, 413, 415),
    ),
    Route("GET", _A, list_attachments, "A card's attachments, oldest first", response=AttachmentList),
    Route(
        "GET",
        f"{_A}/{{attachment_id}}",
        download_attachment,
        "Download an attachment: a redirect (307) to a signed link valid for BOARDCAST_BLOB_URL_TTL_S",
        status=307,
    ),
    Route(
        "GET",
        f"{_A}/{{attachment_id}}/thumbnail",
        download_thumbnail,
        "An image attachment's thumbnail: a redirect (307) to a signed link",
        status=307,
    ),
    Route("DELETE", f"{_A}/{{attachment_id}}", delete_attachment, "Delete an attachment", status=204),
]
