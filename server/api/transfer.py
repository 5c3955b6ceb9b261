"""Export and import over REST.

``GET .../export`` answers the board as one versioned document (protocol/transfer.py).
``POST /api/v1/boards/import?kind=boardcast|trello`` checks the document, stores it as an
import job and answers 202 at once; the job (jobs/imports.py) builds the new board in the
background, and ``GET /api/v1/imports/{import_id}`` reports its progress, what it skipped and
the new board's id.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator

import msgspec
import structlog
from aiohttp import web

from actors import GetSnapshot
from jobs.bundle import BadBundle, BundledFile, members, read_document, write_bundle
from jobs.imports import Blobs, ImportDeps, ImportMetrics, ImportRunner, parse_source
from jobs.transfer import Person, export_board
from protocol.errors import BoardcastError, ErrorCode, bad_request, not_found
from protocol.model import BoardSnapshot
from protocol.transfer import BoardExport, ImportJob, ImportReport
from server.access import Action, authorize, current_user
from server.http import QueryParam, Route, json_response, path_uuid, require_json
from server.keys import BLOB_LEDGER, BLOBS, MEMBERS, METRICS, POOL, REGISTRY, REPO, SETTINGS
from storage.blobs import BlobError, new_key
from storage.imports import ImportRepo, ImportRow

log = structlog.get_logger(__name__)

IMPORTS = web.AppKey("imports", ImportRunner)
_REPORT = msgspec.json.Decoder(ImportReport)
_ENCODE = msgspec.json.Encoder()
_KINDS = ("boardcast", "trello")


async def imports_ctx(app: web.Application) -> AsyncIterator[None]:
    """The import runner's lifetime: picks up unfinished jobs on start, cancels on stop."""
    s = app[SETTINGS]
    deps = ImportDeps(
        ImportRepo(app[POOL]),
        app[REPO],
        app[MEMBERS],
        app[REGISTRY],
        s.ask_timeout_s,
        ImportMetrics(app[METRICS].registry),
        Blobs(app[BLOBS], app[BLOB_LEDGER], s.blob_max_bytes, s.blob_allowed_types),
    )
    runner = app[IMPORTS] = ImportRunner(deps)
    await runner.start()
    yield
    await runner.stop()


async def export(request: web.Request) -> web.StreamResponse:
    board_id = path_uuid(request, "board_id")
    app = request.app
    files = request.query.get("files")
    if files not in (None, "zip"):
        raise bad_request("files must be 'zip' (or left out: the document alone)", parameter="files")
    await authorize(app[MEMBERS], current_user(request), board_id, Action.READ)
    snap: BoardSnapshot = await app[REGISTRY].ask(board_id, GetSnapshot(), app[SETTINGS].ask_timeout_s)
    people = [Person(m.user_id, m.name, m.email, m.role) for m in await app[MEMBERS].members(board_id)]
    if files is None:
        resp = json_response(export_board(snap, people))
        resp.headers["Content-Disposition"] = f'attachment; filename="board-{board_id}.json"'
        return resp
    keys: dict[str, str] = {}
    document = _ENCODE.encode(export_board(snap, people, keys))
    stream = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="board-{board_id}.zip"',
        }
    )
    await stream.prepare(request)

    async def send(data: bytes) -> None:
        if data:
            await stream.write(data)

    try:
        await write_bundle(document, [BundledFile(p, k) for p, k in keys.items()], app[BLOBS], send)
    except BlobError as e:
        # The status is sent already: the zip is cut short (its directory missing), which
        # every unzip tool reports; the log says why.
        log.error("export_blob_failed", board_id=str(board_id), error=repr(e))
        raise
    await stream.write_eof()
    return stream


def _too_large(limit: int) -> BoardcastError:
    return BoardcastError(ErrorCode.TOO_LARGE, f"an import may have at most {limit} bytes")


async def _body_chunks(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    """The body, streamed, refused (413) past ``limit`` bytes: an export may be far larger
    than the other routes' body limit, so it is not read by ``request.read()``."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    size = 0
    async for chunk in request.content.iter_chunked(65_536):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        yield chunk


async def _read_limited(request: web.Request, limit: int) -> bytes:
    return b"".join([chunk async for chunk in _body_chunks(request, limit)])


async def _zip_import(request: web.Request, user_id: uuid.UUID, title: str | None) -> uuid.UUID:
    """A zip export with its files: spooled to a temporary file (a zip's directory is at its
    end), checked, then kept in the blob store for the job."""
    app = request.app
    limit = app[SETTINGS].import_max_bytes
    with tempfile.NamedTemporaryFile(prefix="boardcast-import-", suffix=".zip") as tmp:
        async for chunk in _body_chunks(request, limit):
            await asyncio.to_thread(tmp.write, chunk)
        await asyncio.to_thread(tmp.flush)
        try:
            raw = await asyncio.to_thread(read_document, tmp.name)
            names = await asyncio.to_thread(members, tmp.name)
        except BadBundle as e:
            raise bad_request(str(e)) from e
        doc = parse_source("boardcast", raw, ImportReport())
        missing = [a.file for a in doc.attachments if a.file is not None and a.file not in names]
        if missing:
            raise bad_request("files the document names are not in the zip", missing=missing[:10])
        job_id = uuid.uuid4()
        key = new_key("imports", job_id)

        async def chunks() -> AsyncIterator[bytes]:
            with open(tmp.name, "rb") as f:  # noqa: ASYNC230 (a local temporary file)
                while chunk := await asyncio.to_thread(f.read, 256 * 1024):
                    yield chunk

        await app[BLOBS].put(key, chunks(), content_type="application/zip", max_bytes=limit)
    return await ImportRepo(app[POOL]).create(user_id, "boardcast", raw.decode("utf-8"), title, key, job_id)


async def start_import(request: web.Request) -> web.Response:
    user = current_user(request)
    kind = request.query.get("kind", "boardcast")
    if kind not in _KINDS:
        raise bad_request("kind must be 'boardcast' or 'trello'", parameter="kind")
    title = request.query.get("title")
    if title is not None and (not 1 <= len(title) <= 200 or "\x00" in title):
        raise bad_request("title must have 1 to 200 characters", parameter="title")
    repo = ImportRepo(request.app[POOL])
    if request.content_type == "application/zip" and kind == "boardcast":
        job_id = await _zip_import(request, user.id, title)
    else:
        require_json(request, "an import document (or a Boardcast zip export, as application/zip)")
        raw = await _read_limited(request, request.app[SETTINGS].import_max_bytes)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise bad_request("the document is not UTF-8") from e
        parse_source(kind, raw, ImportReport())  # refused now (400) if unreadable
        job_id = await repo.create(user.id, kind, text, title)
    request.app[IMPORTS].submit(job_id)
    log.info("import_queued", import_id=str(job_id), kind=kind)
    row = await repo.get(job_id)
    assert row is not None
    resp = json_response(_job(row), 202)
    resp.headers["Location"] = f"/api/v1/imports/{job_id}"
    return resp


def _job(row: ImportRow) -> ImportJob:
    return ImportJob(
        id=row.id,
        kind=row.kind,  # type: ignore[arg-type]
        state=row.state,  # type: ignore[arg-type]
        done=row.done,
        total=row.total,
        board_id=row.board_id if row.state == "succeeded" else None,
        report=_REPORT.decode(row.report) if row.report else None,
        error=row.error,
        created_at_ms=int(row.created_at.timestamp() * 1000),
        finished_at_ms=int(row.finished_at.timestamp() * 1000) if row.finished_at else None,
    )


async def get_import(request: web.Request) -> web.Response:
    user = current_user(request)
    job_id = path_uuid(request, "import_id")
    row = await ImportRepo(request.app[POOL]).get(job_id)
    if row is None or row.owner_id != user.id:  # someone else's import does not exist for you
        raise not_found("import", job_id)
    return json_response(_job(row))


ROUTES: list[Route] = [
    Route(
        "GET",
        "/api/v1/boards/{board_id}/export",
        export,
        "The board as one versioned document; with files=zip, a zip of it and its attachments' files",
        response=BoardExport,
        params=(
            QueryParam(
                "files", "zip: the document and the files in one zip", (("type", "string"), ("enum", ["zip"]))
            ),
        ),
    ),
    Route(
        "POST",
        "/api/v1/boards/import",
        start_import,
        "Import a board export (Boardcast's or Trello's JSON, or a Boardcast zip) into a new board",
        response=ImportJob,
        status=202,
        errors=(413, 415),
        params=(
            QueryParam("kind", "boardcast (default) or trello", (("type", "string"), ("enum", list(_KINDS)))),
            QueryParam(
                "title",
                "the new board's title (default: the document's)",
                (("type", "string"), ("maxLength", 200)),
            ),
        ),
    ),
    Route(
        "GET",
        "/api/v1/imports/{import_id}",
        get_import,
        "An import's progress and report",
        response=ImportJob,
    ),
]
