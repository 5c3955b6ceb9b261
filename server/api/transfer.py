"""Export and import over REST.

``GET .../export`` answers the board as one versioned document (protocol/transfer.py).
``POST /api/v1/boards/import?kind=boardcast|trello`` checks the document, stores it as an
import job and answers 202 at once; the job (jobs/imports.py) builds the new board in the
background, and ``GET /api/v1/imports/{import_id}`` reports its progress, what it skipped and
the new board's id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import structlog
from aiohttp import web

from actors import GetSnapshot
from jobs.imports import ImportDeps, ImportMetrics, ImportRunner, parse_source
from jobs.transfer import Person, export_board
from protocol.errors import BoardcastError, ErrorCode, bad_request, not_found
from protocol.model import BoardSnapshot
from protocol.transfer import BoardExport, ImportJob, ImportReport
from server.access import Action, authorize, current_user
from server.http import QueryParam, Route, json_response, path_uuid, require_json
from server.keys import MEMBERS, METRICS, POOL, REGISTRY, REPO, SETTINGS
from storage.imports import ImportRepo, ImportRow

log = structlog.get_logger(__name__)

IMPORTS = web.AppKey("imports", ImportRunner)
_REPORT = msgspec.json.Decoder(ImportReport)
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
    )
    runner = app[IMPORTS] = ImportRunner(deps)
    await runner.start()
    yield
    await runner.stop()


async def export(request: web.Request) -> web.Response:
    board_id = path_uuid(request, "board_id")
    app = request.app
    await authorize(app[MEMBERS], current_user(request), board_id, Action.READ)
    snap: BoardSnapshot = await app[REGISTRY].ask(board_id, GetSnapshot(), app[SETTINGS].ask_timeout_s)
    people = [Person(m.user_id, m.name, m.email, m.role) for m in await app[MEMBERS].members(board_id)]
    resp = json_response(export_board(snap, people))
    resp.headers["Content-Disposition"] = f'attachment; filename="board-{board_id}.json"'
    return resp


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The body, streamed, refused (413) past ``limit`` bytes: an export may be far larger
    than the other routes' body limit, so it is not read by ``request.read()``."""
    if request.content_length is not None and request.content_length > limit:
        raise BoardcastError(ErrorCode.TOO_LARGE, f"an import document may have at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65_536):
        size += len(chunk)
        if size > limit:
            raise BoardcastError(ErrorCode.TOO_LARGE, f"an import document may have at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def start_import(request: web.Request) -> web.Response:
    user = current_user(request)
    kind = request.query.get("kind", "boardcast")
    if kind not in _KINDS:
        raise bad_request("kind must be 'boardcast' or 'trello'", parameter="kind")
    title = request.query.get("title")
    if title is not None and (not 1 <= len(title) <= 200 or "\x00" in title):
        raise bad_request("title must have 1 to 200 characters", parameter="title")
    require_json(request, "an import document")
    raw = await _read_limited(request, request.app[SETTINGS].import_max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_request("the document is not UTF-8") from e
    parse_source(kind, raw, ImportReport())  # refused now (400) if unreadable
    repo = ImportRepo(request.app[POOL])
    job_id = await repo.create(user.id, kind, text, title)
    request.app[IMPORTS].submit(job_id)
    log.info("import_queued", import_id=str(job_id), kind=kind, size=len(raw))
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
        "The board as one versioned document (attachment metadata, not files)",
        response=BoardExport,
    ),
    Route(
        "POST",
        "/api/v1/boards/import",
        start_import,
        "Import a board export (Boardcast's or Trello's JSON) into a new board, in the background",
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
