"""Imports as background jobs: a document (Boardcast's own or Trello's) becomes a new board.

The new board is written through its board actor as ordinary commands, in document order,
as if a very fast user had built it: its event log, activity feed and time travel work from
the first seq, every rule of the board (validation, WIP limits, field kinds) applies, and
nothing here knows how boards are stored. Commands of one phase (all columns, then all cards,
...) are pipelined, so the actor's group commit takes hundreds per transaction.

:func:`run_import` is the job: everything it needs comes in :class:`ImportDeps` (a typed
context, as an arq job would get) and everything it does is recorded in ``import_jobs``.
:class:`ImportRunner` runs jobs as tasks of the server until there are arq workers.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter

from actors import BoardRegistry, CommandResult, DeleteBoard, Execute
from jobs.bundle import member_chunks
from jobs.transfer import skip, trello_document
from protocol import commands as c
from protocol.errors import BoardcastError, ErrorCode
from protocol.model import Attachment, dec_hook
from protocol.transfer import BoardExport, ImportReport, TrelloBoard
from storage import BoardRepo, MemberRepo
from storage.blobs import BlobStore, BlobTooLarge, new_key
from storage.blobs.ledger import BlobLedger
from storage.blobs.media import SNIFF_BYTES, MediaTypeRefused, check_type, safe_filename, sniff
from storage.imports import ImportRepo, ImportRow

ATTACHMENTS = "attachments"  # the blob namespace of attachments (server/api/attachments.py)

log = structlog.get_logger(__name__)

PIPELINE = 256  # commands in flight at once
MAX_ATTEMPTS = 3  # runs of one job before an unavailable board fails it
RETRY_AFTER_S = 1.0
_TRANSIENT = (ErrorCode.UNAVAILABLE, ErrorCode.TIMEOUT)
PROGRESS_EVERY_S = 0.5
_ENCODE = msgspec.json.Encoder()
# Every command is checked as if a client had sent it: bounds, patterns, canonical ids.
_COMMAND: msgspec.json.Decoder[c.Command] = msgspec.json.Decoder(c.Command, dec_hook=dec_hook)
_DOCUMENT: msgspec.json.Decoder[BoardExport] = msgspec.json.Decoder(BoardExport, dec_hook=dec_hook)
_TRELLO: msgspec.json.Decoder[TrelloBoard] = msgspec.json.Decoder(TrelloBoard, dec_hook=dec_hook)


def parse_source(kind: str, raw: bytes | str, report: ImportReport) -> BoardExport:
    """The source as a Boardcast document; raises BoardcastError (bad_request) if unreadable."""
    try:
        if kind == "trello":
            return trello_document(_TRELLO.decode(raw), report)
        return _DOCUMENT.decode(raw)
    except msgspec.ValidationError as e:
        raise BoardcastError(ErrorCode.BAD_REQUEST, f"not a {kind} board export: {e}") from e
    except msgspec.DecodeError as e:
        raise BoardcastError(ErrorCode.BAD_REQUEST, f"malformed JSON: {e}") from e
    except RecursionError as e:
        raise BoardcastError(ErrorCode.BAD_REQUEST, "malformed JSON: nested too deeply") from e


class ImportMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Counter(
            "boardcast_imports", "Import jobs by outcome", ["kind", "outcome"], registry=registry
        )
        self.skipped = Counter(
            "boardcast_import_skipped", "Things imports could not carry over", ["kind"], registry=registry
        )


@dataclass(frozen=True, slots=True)
class Blobs:
    """Where an import with files puts them, by the rules the upload route applies."""

    store: BlobStore
    ledger: BlobLedger
    max_bytes: int
    allowed_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ImportDeps:
    imports: ImportRepo
    boards: BoardRepo
    members: MemberRepo
    registry: BoardRegistry
    timeout_s: float
    metrics: ImportMetrics | None = None
    blobs: Blobs | None = None


@dataclass(slots=True)
class _Step:
    """One command to send, what it is for (in the report), and what to do with its event."""

    cmd: c.Command
    what: str
    ref: str | None = None
    author: uuid.UUID | None = None
    then: Callable[[Any], None] | None = None


@dataclass(slots=True)
class _Run:
    deps: ImportDeps
    job_id: uuid.UUID
    board_id: uuid.UUID
    owner: uuid.UUID
    report: ImportReport
    total: int
    done: int = 0
    _reported: float = 0.0
    ids: dict[str, uuid.UUID] = field(default_factory=dict)  # document ref -> new id
    members: dict[str, uuid.UUID] = field(default_factory=dict)  # member ref -> user id
    files: zipfile.ZipFile | None = None  # a zip import's files

    def count(self, what: str, n: int = 1) -> None:
        self.report.created[what] = self.report.created.get(what, 0) + n

    async def tick(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._reported >= PROGRESS_EVERY_S:
            self._reported = now
            await self.deps.imports.progress(self.job_id, min(self.done, self.total), self.total)

    async def send(self, steps: Sequence[_Step]) -> None:
        """Send the steps in order, PIPELINE at a time; a refused one is reported, not fatal."""
        for start in range(0, len(steps), PIPELINE):
            chunk = steps[start : start + PIPELINE]
            futures: list[asyncio.Future[Any] | None] = []
            for step in chunk:
                try:
                    cmd = _COMMAND.decode(_ENCODE.encode(step.cmd))
                except msgspec.ValidationError as e:
                    futures.append(None)
                    skip(self.report, step.what, f"invalid: {e}", step.ref)
                    continue
                msg = Execute(
                    author=step.author or self.owner, rid=None, cmd=cmd, received=time.perf_counter()
                )
                futures.append(self.deps.registry.submit(self.board_id, msg))
            for step, fut in zip(chunk, futures, strict=True):
                if fut is None:
                    continue
                try:
                    result: CommandResult = await asyncio.wait_for(fut, self.deps.timeout_s)
                except BoardcastError as e:
                    if e.code in (ErrorCode.UNAVAILABLE, ErrorCode.TIMEOUT, ErrorCode.INTERNAL):
                        raise  # the board is in trouble, not this item
                    skip(self.report, step.what, e.message, step.ref)
                    continue
                if step.then is not None and result.event is not None:
                    step.then(result.event.event)
            await self.tick(len(chunk))


def _total(doc: BoardExport) -> int:
    items = sum(len(cl.items) for cl in doc.checklists)
    decorations = sum(
        bool(card.start_ms or card.due_ms or card.done)
        + len(card.labels)
        + len(card.assignees)
        + len(card.fields)
        for card in doc.cards
    )
    return (
        len(doc.labels)
        + len(doc.fields)
        + 2 * len(doc.columns)
        + 2 * len(doc.cards)
        + decorations
        + len(doc.checklists)
        + 2 * items
        + len(doc.comments)
        + len(doc.attachments)
        + 1
    )


async def _members(run: _Run, doc: BoardExport) -> None:
    """Members of the document who have an account here (by email) join the new board in
    their role; the importer is its owner, so an exported owner becomes an admin."""
    for m in doc.members:
        user_id = await run.deps.members.find_user(user_id=None, email=m.email) if m.email else None
        if user_id is None:
            skip(run.report, "member", "no account with this email" if m.email else "no email", m.ref, m.name)
            continue
        run.members[m.ref] = user_id
        if user_id == run.owner:
            continue
        role = "admin" if m.role == "owner" else m.role
        async with run.deps.members.change(run.board_id) as tx:
            if tx is None:
                raise BoardcastError(ErrorCode.GONE, "the new board was deleted during the import")
            if await tx.role_of(user_id) is None:
                await tx.add(user_id, role)
        run.count("members")


async def build(run: _Run, doc: BoardExport) -> None:
    """Write the document into the (new, empty) board, phase by phase."""
    ids, mem = run.ids, run.members
    await _members(run, doc)

    def keep(ref: str, what: str, pick: Callable[[Any], uuid.UUID]) -> Callable[[Any], None]:
        def then(event: Any) -> None:
            ids[ref] = pick(event)
            run.count(what)

        return then

    if doc.allow_wip_overflow:
        await run.send([_Step(c.ConfigureBoard(allow_wip_overflow=True), "board")])
    await run.send(
        [
            _Step(
                c.CreateLabel(name=lb.name, colour=lb.colour),
                "label",
                lb.ref,
                then=keep(lb.ref, "labels", lambda e: e.label.id),
            )
            for lb in doc.labels
        ]
    )

    def field_created(f: Any) -> Callable[[Any], None]:
        def then(event: Any) -> None:
            ids[f.ref] = event.field.id
            for opt, made in zip(f.options, event.field.options, strict=False):
                ids[opt.ref] = made.id
            run.count("fields")

        return then

    await run.send(
        [
            _Step(
                c.CreateField(
                    name=f.name,
                    kind=f.kind,
                    options=[c.OptionIn(name=o.name, colour=o.colour) for o in f.options],
                ),
                "custom_field",
                f.ref,
                then=field_created(f),
            )
            for f in doc.fields
        ]
    )
    await run.send(
        [
            _Step(
                c.CreateColumn(title=col.title),
                "column",
                col.ref,
                then=keep(col.ref, "columns", lambda e: e.column.id),
            )
            for col in doc.columns
        ]
    )
    for card in doc.cards:
        if card.column not in ids:
            skip(
                run.report,
                "card",
                "its column is not in the document (or was not created)",
                card.ref,
                card.title,
            )
    await run.send(
        [
            _Step(
                c.CreateCard(column_id=ids[card.column], title=card.title, description=card.description),
                "card",
                card.ref,
                then=keep(card.ref, "cards", lambda e: e.card.id),
            )
            for card in doc.cards
            if card.column in ids
        ]
    )
    decorations: list[_Step] = []
    for card in doc.cards:
        card_id = ids.get(card.ref)
        if card_id is None:
            continue
        if card.start_ms is not None or card.due_ms is not None or card.done:
            decorations.append(
                _Step(
                    c.ScheduleCard(
                        card_id=card_id, start_ms=card.start_ms, due_ms=card.due_ms, done=card.done
                    ),
                    "card_dates",
                    card.ref,
                )
            )
        decorations += [
            _Step(c.AddLabel(card_id=card_id, label_id=ids[r]), "card_label", card.ref)
            for r in card.labels
            if r in ids
        ]
        for r in card.assignees:
            if r in mem:
                decorations.append(_Step(c.AssignCard(card_id=card_id, user_id=mem[r]), "assignee", card.ref))
            else:
                skip(run.report, "assignee", "not a member here", card.ref)
        for field_ref, value in card.fields.items():
            if field_ref not in ids:
                continue
            if isinstance(value, str) and value in ids and value.startswith("opt-"):
                value = str(ids[value])
            decorations.append(
                _Step(
                    c.SetFieldValue(card_id=card_id, field_id=ids[field_ref], value=value),
                    "field_value",
                    card.ref,
                )
            )
    await run.send(decorations)

    for cl in doc.checklists:
        if cl.card not in ids:
            skip(
                run.report,
                "checklist",
                "its card is not in the document (or was not created)",
                cl.ref,
                cl.title,
            )
    await run.send(
        [
            _Step(
                c.CreateChecklist(card_id=ids[cl.card], title=cl.title),
                "checklist",
                cl.ref,
                then=keep(cl.ref, "checklists", lambda e: e.checklist.id),
            )
            for cl in doc.checklists
            if cl.card in ids
        ]
    )
    items = [(cl, item) for cl in doc.checklists if cl.ref in ids for item in cl.items]
    for _, item in items:
        if item.assignee is not None and item.assignee not in mem:
            skip(run.report, "assignee", "not a member here", item.ref)
    await run.send(
        [
            _Step(
                c.CreateItem(
                    checklist_id=ids[cl.ref],
                    text=item.text,
                    assignee_id=mem.get(item.assignee) if item.assignee else None,
                    due_ms=item.due_ms,
                ),
                "checklist_item",
                item.ref,
                then=keep(item.ref, "items", lambda e: e.item.id),
            )
            for cl, item in items
        ]
    )
    await run.send(
        [
            _Step(c.UpdateItem(item_id=ids[item.ref], done=True), "checklist_item", item.ref)
            for _, item in items
            if item.done and item.ref in ids
        ]
    )

    comments = []
    for cm in doc.comments:
        if cm.card not in ids:
            skip(run.report, "comment", "its card is not in the document (or was not created)", cm.ref)
            continue
        author = mem.get(cm.author) if cm.author else None
        body = cm.body
        if author is None:
            body = f"**{cm.author_name or 'Someone'}** wrote:\n\n{body}"[:20_000]
        comments.append(
            _Step(
                c.CreateComment(card_id=ids[cm.card], body=body),
                "comment",
                cm.ref,
                author=author,
                then=keep(cm.ref, "comments", lambda e: e.comment.id),
            )
        )
    await run.send(comments)
    await _attachments(run, doc)

    await run.send(
        [
            _Step(
                c.ConfigureColumn(column_id=ids[col.ref], colour=col.colour, wip_limit=col.wip_limit),
                "column_settings",
                col.ref,
            )
            for col in doc.columns
            if col.ref in ids and (col.colour is not None or col.wip_limit is not None)
        ]
    )
    await run.send(
        [
            _Step(c.ArchiveCard(card_id=ids[card.ref]), "archive", card.ref)
            for card in doc.cards
            if card.archived and card.ref in ids
        ]
    )
    await run.send(
        [
            _Step(c.ArchiveColumn(column_id=ids[col.ref]), "archive", col.ref)
            for col in doc.columns
            if col.archived and col.ref in ids
        ]
    )


async def _attachments(run: _Run, doc: BoardExport) -> None:
    """Files of a zip import go to the blob store under new keys, checked as uploads are
    (sniffed type, allowed types, size), then onto their cards; a JSON document has none."""
    ids, blobs, zf = run.ids, run.deps.blobs, run.files
    steps: list[_Step] = []
    keys: dict[str, str] = {}  # attachment ref -> blob key
    for a in doc.attachments:
        if a.card not in ids:
            skip(
                run.report,
                "attachment",
                "its card is not in the document (or was not created)",
                a.ref,
                a.name,
            )
            continue
        if zf is None or blobs is None or a.file is None:
            skip(
                run.report,
                "attachment",
                "the document holds the file's metadata, not the file",
                a.ref,
                a.name,
            )
            continue
        with zf.open(a.file) as src:
            head = src.read(SNIFF_BYTES)
        try:
            content_type = check_type(sniff(head), a.content_type, blobs.allowed_types)
        except MediaTypeRefused as e:
            skip(run.report, "attachment", str(e), a.ref, a.name)
            continue
        key = new_key(ATTACHMENTS, run.board_id)
        await blobs.ledger.record_uploads([key], run.board_id)  # before the blob: a crash leaves a trace
        try:
            size = await blobs.store.put(
                key, member_chunks(zf, a.file), content_type=content_type, max_bytes=blobs.max_bytes
            )
        except BlobTooLarge:
            await blobs.ledger.forget_uploads([key])
            skip(run.report, "attachment", f"larger than {blobs.max_bytes} bytes", a.ref, a.name)
            continue
        keys[a.ref] = key
        attachment = Attachment(
            id=uuid.uuid4(),
            card_id=ids[a.card],
            name=safe_filename(a.name),
            content_type=content_type,
            size=size,
            blob_key=key,
            created_by=run.members.get(a.created_by or "", run.owner),
            created_at_ms=a.created_at_ms if a.created_at_ms is not None else int(time.time() * 1000),
        )

        def then(event: Any, ref: str = a.ref) -> None:
            ids[ref] = event.attachment.id
            run.count("attachments")

        steps.append(_Step(c.AddAttachment(attachment=attachment), "attachment", a.ref, then=then))
    try:
        await run.send(steps)
    finally:
        # Committed ones are referenced by their rows now; the others the sweeper removes.
        if blobs is not None:
            await blobs.ledger.forget_uploads([k for r, k in keys.items() if r in ids])
    if keys:
        run.report.notes.append("imported image attachments have no thumbnails")
    await run.send(
        [
            _Step(c.SetCover(card_id=ids[a.card], attachment_id=ids[a.ref]), "cover", a.ref)
            for a in doc.attachments
            if a.cover and a.ref in ids and a.card in ids
        ]
    )


async def _open_files(deps: ImportDeps, key: str, into: Any) -> zipfile.ZipFile:
    """The zip of a zip import, copied from the blob store into a local temporary file."""
    if deps.blobs is None:
        raise BoardcastError(ErrorCode.UNAVAILABLE, "this server has no blob store for the import's files")
    async with deps.blobs.store.open(key) as blob:
        async for chunk in blob:
            await asyncio.to_thread(into.write, chunk)
    await asyncio.to_thread(into.flush)
    return zipfile.ZipFile(into.name)


async def run_import(deps: ImportDeps, job_id: uuid.UUID) -> bool:
    """Run one queued import job to its end (succeeded or failed), recording all of it.
    Returns True when the job was put back in the queue to be tried again."""
    claimed = await deps.imports.claim(job_id)
    if claimed is None:
        return False
    job = claimed.row
    bound = log.bind(import_id=str(job_id), kind=job.kind)
    report = ImportReport()
    board_id: uuid.UUID | None = None
    try:
        doc = parse_source(job.kind, claimed.source, report)
        info = await deps.boards.create_board(job.owner_id, job.title or doc.title, doc.description)
        board_id = info.id
        await deps.imports.set_board(job_id, board_id)
        run = _Run(deps, job_id, board_id, job.owner_id, report, _total(doc))
        await deps.imports.progress(job_id, 0, run.total)
        with tempfile.NamedTemporaryFile(prefix="boardcast-import-", suffix=".zip") as tmp:
            if job.files_key is not None:
                run.files = await _open_files(deps, job.files_key, tmp)
            try:
                await build(run, doc)
            finally:
                if run.files is not None:
                    run.files.close()
    except asyncio.CancelledError:
        # The server is stopping: the job goes back to the queue (the next start runs it
        # again from the start) and its half-built board goes.
        await asyncio.shield(_release(deps, job_id, board_id, job.owner_id))
        bound.info("import_interrupted", board_id=str(board_id) if board_id else None)
        raise
    except BoardcastError as e:
        if e.code in _TRANSIENT and job.attempts < MAX_ATTEMPTS:
            # The board could not answer (this server is stopping, its board moved): not the
            # document's fault. The job goes back to the queue, its half-built board goes.
            bound.warning("import_released", error=e.message, attempts=job.attempts)
            await _release(deps, job_id, board_id, job.owner_id)
            return True
        await _fail(deps, job, report, board_id, e.message, e)
        return False
    except Exception as e:
        await _fail(deps, job, report, board_id, "internal error", e)
        return False
    await deps.imports.finish(job_id, "succeeded", board_id, _ENCODE.encode(report).decode(), None)
    await _drop_files(deps, job.files_key)
    if deps.metrics is not None:
        deps.metrics.jobs.labels(kind=job.kind, outcome="succeeded").inc()
        deps.metrics.skipped.labels(kind=job.kind).inc(report.skipped_count)
    bound.info("import_succeeded", board_id=str(board_id), skipped=report.skipped_count)
    return False


async def _fail(
    deps: ImportDeps,
    job: ImportRow,
    report: ImportReport,
    board_id: uuid.UUID | None,
    message: str,
    e: BaseException,
) -> None:
    log.warning(
        "import_failed", import_id=str(job.id), error=repr(e), board_id=str(board_id) if board_id else None
    )
    if board_id is not None:
        await _discard(deps, board_id, job.owner_id)
    await deps.imports.finish(job.id, "failed", None, _ENCODE.encode(report).decode(), message)
    await _drop_files(deps, job.files_key)
    if deps.metrics is not None:
        deps.metrics.jobs.labels(kind=job.kind, outcome="failed").inc()


async def _release(deps: ImportDeps, job_id: uuid.UUID, board_id: uuid.UUID | None, owner: uuid.UUID) -> None:
    try:
        await deps.imports.release(job_id)
        if board_id is not None:
            await _discard(deps, board_id, owner)
    except Exception as e:  # the stale sweep at the next start requeues it all the same
        log.warning("import_release_failed", import_id=str(job_id), error=repr(e))


async def _drop_files(deps: ImportDeps, key: str | None) -> None:
    if key is not None and deps.blobs is not None:
        try:
            await deps.blobs.store.delete(key)
        except Exception as e:
            log.warning("import_files_not_deleted", key=key, error=repr(e))


async def _discard(deps: ImportDeps, board_id: uuid.UUID, owner: uuid.UUID) -> None:
    """Delete a half-built board, so that a failed import leaves nothing behind: through its
    actor, or (this server's actors are stopping) straight from the database, where a live
    activation elsewhere is fenced out by the deletion."""
    try:
        await deps.registry.ask(board_id, DeleteBoard(author=owner), deps.timeout_s)
        return
    except Exception as e:
        log.warning("import_discard_via_board_failed", board_id=str(board_id), error=repr(e))
    try:
        await deps.boards.delete_board(board_id, owner)
    except Exception as e:
        log.error("import_discard_failed", board_id=str(board_id), error=repr(e))


class ImportRunner:
    """Runs import jobs as tasks of this server (until arq workers take them). On start it
    picks up queued jobs and those whose runner died (no progress for ``stale_s``)."""

    def __init__(self, deps: ImportDeps, stale_s: float = 120.0, max_attempts: int = MAX_ATTEMPTS) -> None:
        self._deps = deps
        self._stale_s = stale_s
        self._max_attempts = max_attempts
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    def submit(self, job_id: uuid.UUID) -> None:
        task = asyncio.create_task(self._guarded(job_id), name=f"import:{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, job_id: uuid.UUID) -> None:
        try:
            again = await run_import(self._deps, job_id)
        except Exception as e:  # a failure to record the failure: logged, the sweep retries
            log.error("import_job_crashed", import_id=str(job_id), error=repr(e))
            return
        if again and not self._stopping:
            await asyncio.sleep(RETRY_AFTER_S)
            if not self._stopping:
                self.submit(job_id)

    async def start(self) -> None:
        for job_id, board_id, owner in await self._deps.imports.requeue_stale(
            self._stale_s, self._max_attempts
        ):
            log.warning("import_requeued", import_id=str(job_id))
            if board_id is not None:
                await _discard(self._deps, board_id, owner)
        for job_id in await self._deps.imports.queued():
            self.submit(job_id)

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Wait until every running job has ended (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


__all__ = ["Blobs", "ImportDeps", "ImportRunner", "parse_source", "run_import"]
