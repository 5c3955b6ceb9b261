"""Board documents, pure (no I/O): a board's export, and a Trello export turned into one.

Every import is the import of a :class:`protocol.transfer.BoardExport`: a Trello board is
first converted into that document (what cannot be carried over goes into the report), so
there is one way a document becomes a board (jobs/imports.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.model import BoardSnapshot
from protocol.transfer import (
    BoardExport,
    ExportAttachment,
    ExportCard,
    ExportChecklist,
    ExportColumn,
    ExportComment,
    ExportField,
    ExportItem,
    ExportLabel,
    ExportMember,
    ExportOption,
    ImportReport,
    Skipped,
    TrelloBoard,
)

MAX_SKIPPED_LISTED = 500
TRELLO_ACTION_LIMIT = 1000  # Trello's JSON export holds at most the latest 1,000 actions
TITLE_MAX = 200
TEXT_MAX = 20_000


@dataclass(frozen=True, slots=True)
class Person:
    """A board member as the export names them."""

    user_id: uuid.UUID
    name: str
    email: str | None
    role: str


class Refs:
    """Document refs handed out in document order: ``col-1``, ``col-2``..."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, object], str] = {}
        self._counts: dict[str, int] = {}

    def new(self, kind: str, key: object) -> str:
        n = self._counts[kind] = self._counts.get(kind, 0) + 1
        ref = self._ids[(kind, key)] = f"{kind}-{n}"
        return ref

    def get(self, kind: str, key: object) -> str | None:
        return self._ids.get((kind, key))


def skip(
    report: ImportReport, what: str, reason: str, ref: str | None = None, name: str | None = None
) -> None:
    report.skipped_count += 1
    if len(report.skipped) < MAX_SKIPPED_LISTED:
        report.skipped.append(Skipped(what=what, reason=reason, ref=ref, name=name))


# ------------------------------------------------------------------ export


def export_board(
    snap: BoardSnapshot, people: Sequence[Person], files: dict[str, str] | None = None
) -> BoardExport:
    """The board as a document. Labels are listed by name and colour (not by id), so that
    the document does not depend on the ids a board happens to have. With ``files`` (filled
    here: path in the zip -> blob key) each attachment names where its bytes go."""
    refs = Refs()
    members = [
        ExportMember(ref=refs.new("member", p.user_id), name=p.name, email=p.email, role=p.role)  # type: ignore[arg-type]
        for p in people
    ]
    labels = [
        ExportLabel(ref=refs.new("label", lb.id), name=lb.name, colour=lb.colour)
        for lb in sorted(snap.labels, key=lambda lb: (lb.name, lb.colour))
    ]
    fields = []
    for f in snap.fields:
        options = [ExportOption(ref=refs.new("opt", o.id), name=o.name, colour=o.colour) for o in f.options]
        fields.append(ExportField(ref=refs.new("field", f.id), name=f.name, kind=f.kind, options=options))
    columns = [
        ExportColumn(
            ref=refs.new("col", col.id),
            title=col.title,
            colour=col.colour,
            wip_limit=col.wip_limit,
            archived=col.archived,
        )
        for col in snap.columns
    ]
    covers = {card.cover_id for card in snap.cards if card.cover_id is not None}
    cards = []
    for card in snap.cards:
        values: dict[str, str | int | float | bool] = {}
        for field_id, value in card.fields.items():
            field_ref = refs.get("field", field_id)
            if field_ref is None:
                continue
            option_ref = refs.get("opt", _as_uuid(value)) if isinstance(value, str) else None
            values[field_ref] = option_ref if option_ref is not None else value
        cards.append(
            ExportCard(
                ref=refs.new("card", card.id),
                column=refs.get("col", card.column_id) or "",
                title=card.title,
                description=card.description,
                start_ms=card.start_ms,
                due_ms=card.due_ms,
                done=card.done,
                assignees=[r for u in card.assignees if (r := refs.get("member", u)) is not None],
                labels=sorted(
                    (r for lb in card.label_ids if (r := refs.get("label", lb)) is not None), key=_ref_number
                ),
                fields=dict(sorted(values.items(), key=lambda kv: _ref_number(kv[0]))),
                archived=card.archived,
            )
        )
    items_by_checklist: dict[uuid.UUID, list[ExportItem]] = {}
    checklists = []
    for cl in snap.checklists:
        items_by_checklist[cl.id] = []
        checklists.append(
            ExportChecklist(
                ref=refs.new("list", cl.id),
                card=refs.get("card", cl.card_id) or "",
                title=cl.title,
                items=items_by_checklist[cl.id],
            )
        )
    for item in snap.items:
        if item.checklist_id in items_by_checklist:
            items_by_checklist[item.checklist_id].append(
                ExportItem(
                    ref=refs.new("item", item.id),
                    text=item.text,
                    done=item.done,
                    assignee=refs.get("member", item.assignee_id) if item.assignee_id else None,
                    due_ms=item.due_ms,
                )
            )
    names = {p.user_id: p.name for p in people}
    comments = []
    for cm in snap.comments:
        author = refs.get("member", cm.author_id)
        comments.append(
            ExportComment(
                ref=refs.new("comment", cm.id),
                card=refs.get("card", cm.card_id) or "",
                body=cm.body,
                author=author,
                author_name=None if author is not None else names.get(cm.author_id),
                created_at_ms=cm.created_at_ms,
                edited_at_ms=cm.edited_at_ms,
            )
        )
    attachments = []
    for a in snap.attachments:
        ref = refs.new("file", a.id)
        path = None
        if files is not None:
            path = f"files/{ref}"
            files[path] = a.blob_key
        attachments.append(
            ExportAttachment(
                ref=ref,
                card=refs.get("card", a.card_id) or "",
                name=a.name,
                content_type=a.content_type,
                size=a.size,
                created_at_ms=a.created_at_ms,
                created_by=refs.get("member", a.created_by),
                cover=a.id in covers,
                file=path,
            )
        )
    return BoardExport(
        title=snap.title,
        description=snap.description,
        allow_wip_overflow=snap.allow_wip_overflow,
        members=members,
        labels=labels,
        fields=fields,
        columns=columns,
        cards=cards,
        checklists=checklists,
        comments=comments,
        attachments=attachments,
    )


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _ref_number(ref: str) -> int:
    return int(ref.rpartition("-")[2])


# ------------------------------------------------------------------ Trello


_TRELLO_ROLES = {"admin": "admin", "normal": "member", "observer": "viewer"}
_TRELLO_KINDS = {"text": "text", "number": "number", "date": "date", "checkbox": "checkbox", "list": "select"}


def trello_time(raw: str | None) -> int | None:
    """Trello's ISO 8601 time (``2024-03-01T12:00:00.000Z``) as milliseconds, None if absent
    or unreadable."""
    if not raw:
        return None
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    ms = int(when.timestamp() * 1000)
    return ms if 0 <= ms < 2**53 else None


def _title(text: str | None, fallback: str, report: ImportReport, what: str) -> str:
    text = (text or "").replace("\x00", "").strip()
    if not text:
        report.notes.append(f"an untitled {what} was named “{fallback}”")
        return fallback
    if len(text) > TITLE_MAX:
        report.notes.append(f"a {what} title longer than {TITLE_MAX} characters was cut")
        return text[: TITLE_MAX - 1] + "…"
    return text


def _text(text: str | None, report: ImportReport, what: str) -> str:
    text = (text or "").replace("\x00", "")
    if len(text) > TEXT_MAX:
        report.notes.append(f"a {what} longer than {TEXT_MAX} characters was cut")
        return text[: TEXT_MAX - 1] + "…"
    return text


def trello_document(board: TrelloBoard, report: ImportReport) -> BoardExport:
    """A Trello board export as a Boardcast document; what cannot be carried over is noted
    in ``report``."""
    refs = Refs()
    roles = {m.idMember: _TRELLO_ROLES.get(m.memberType, "member") for m in board.memberships}
    members = []
    for m in board.members:
        name = m.fullName or m.username or m.id
        members.append(
            ExportMember(
                ref=refs.new("member", m.id),
                name=name[:200],
                email=m.email or None,
                role=roles.get(m.id, "member"),  # type: ignore[arg-type]
            )
        )
    member_names = {m.id: (m.fullName or m.username or m.id) for m in board.members}

    labels = []
    for lb in board.labels:
        colour = (lb.color or "gray").lower()
        name = (lb.name or "").strip() or colour
        labels.append(ExportLabel(ref=refs.new("label", lb.id), name=name[:100], colour=colour))
    labels.sort(key=lambda x: (x.name, x.colour))

    fields = []
    for f in sorted(board.customFields, key=lambda f: f.pos):
        kind = _TRELLO_KINDS.get(f.type)
        if kind is None:
            skip(report, "custom_field", f"Trello field type {f.type!r} has no counterpart", f.id, f.name)
            continue
        options = [
            ExportOption(ref=refs.new("opt", o.id), name=(o.value.text or "option")[:100], colour=o.color)
            for o in sorted(f.options, key=lambda o: o.pos)
        ]
        fields.append(
            ExportField(
                ref=refs.new("field", f.id),
                name=_title(f.name, "Field", report, "custom field")[:100],
                kind=kind,  # type: ignore[arg-type]
                options=options,
            )
        )
    field_kinds = {f.ref: f.kind for f in fields}

    columns = [
        ExportColumn(
            ref=refs.new("col", lst.id),
            title=_title(lst.name, "List", report, "list"),
            wip_limit=_soft_limit(lst.softLimit),
            archived=lst.closed,
        )
        for lst in sorted(board.lists, key=lambda x: x.pos)
    ]
    column_order = {col.ref: i for i, col in enumerate(columns)}

    cards = []
    for tc in sorted(
        board.cards, key=lambda x: (column_order.get(refs.get("col", x.idList) or "", -1), x.pos)
    ):
        col_ref = refs.get("col", tc.idList)
        if col_ref is None:
            skip(report, "card", "its list is not in the export", tc.id, tc.name)
            continue
        description = _text(tc.desc, report, "card description")
        links = [a for a in tc.attachments if a.url]
        if links:
            lines = "\n".join(f"- [{(a.name or a.url or '').strip()}]({a.url})" for a in links)
            description = _text(
                f"{description}\n\n**Attachments (from Trello)**\n{lines}".lstrip(),
                report,
                "card description",
            )
            uploads = sum(1 for a in links if a.isUpload)
            if uploads:
                report.notes.append(
                    f"{uploads} file(s) uploaded to Trello on “{tc.name[:60]}” are linked, not copied "
                    "(Trello serves them only to its signed-in users)"
                )
        values: dict[str, str | int | float | bool] = {}
        for item in tc.customFieldItems:
            field_ref = refs.get("field", item.idCustomField)
            if field_ref is None:
                continue
            value = _trello_value(field_kinds[field_ref], item.value, item.idValue, refs)
            if value is None:
                skip(report, "field_value", "unreadable value", tc.id, tc.name)
            else:
                values[field_ref] = value
        ref = refs.new("card", tc.id)
        assignees = []
        for trello_member in tc.idMembers:
            member_ref = refs.get("member", trello_member)
            if member_ref is not None:
                assignees.append(member_ref)
        cards.append(
            ExportCard(
                ref=ref,
                column=col_ref,
                title=_title(tc.name, "Card", report, "card"),
                description=description,
                start_ms=trello_time(tc.start),
                due_ms=trello_time(tc.due),
                done=tc.dueComplete,
                assignees=assignees,
                labels=sorted(
                    (r for lb in tc.idLabels if (r := refs.get("label", lb)) is not None),
                    key=lambda r: next(i for i, x in enumerate(labels) if x.ref == r),
                ),
                fields=values,
                archived=tc.closed,
            )
        )
    card_order = {c.ref: i for i, c in enumerate(cards)}

    checklists = []
    for cl in sorted(
        board.checklists, key=lambda x: (card_order.get(refs.get("card", x.idCard) or "", -1), x.pos)
    ):
        card_ref = refs.get("card", cl.idCard)
        if card_ref is None:
            skip(report, "checklist", "its card is not in the export", cl.id, cl.name)
            continue
        items = [
            ExportItem(
                ref=refs.new("item", it.id),
                text=_title(it.name, "Item", report, "checklist item"),
                done=it.state == "complete",
                assignee=refs.get("member", it.idMember) if it.idMember else None,
                due_ms=trello_time(it.due),
            )
            for it in sorted(cl.checkItems, key=lambda x: x.pos)
        ]
        checklists.append(
            ExportChecklist(
                ref=refs.new("list", cl.id),
                card=card_ref,
                title=_title(cl.name, "Checklist", report, "checklist"),
                items=items,
            )
        )

    comments = []
    actions = sorted(board.actions, key=lambda a: a.date)
    if len(board.actions) >= TRELLO_ACTION_LIMIT:
        report.history_cut = True
        report.oldest_action_at = actions[0].date if actions else None
        report.notes.append(
            f"the Trello export holds only its latest {TRELLO_ACTION_LIMIT} actions: comments older "
            f"than {report.oldest_action_at} are not in it"
        )
    for action in actions:
        if action.type != "commentCard":
            continue
        card_ref = refs.get("card", action.data.card.id) if action.data.card else None
        if card_ref is None:
            skip(report, "comment", "its card is not in the export", action.id)
            continue
        who = action.idMemberCreator or (action.memberCreator.id if action.memberCreator else None)
        author = refs.get("member", who) if who else None
        author_name = None
        if who is not None:
            author_name = member_names.get(who)
        if author_name is None and action.memberCreator is not None:
            author_name = action.memberCreator.fullName or action.memberCreator.username
        comments.append(
            ExportComment(
                ref=refs.new("comment", action.id),
                card=card_ref,
                body=_text(action.data.text, report, "comment"),
                author=author,
                author_name=(author_name or "someone")[:200],
                created_at_ms=trello_time(action.date),
            )
        )
    return BoardExport(
        title=_title(board.name, "Trello board", report, "board"),
        description=_text(board.desc, report, "board description"),
        allow_wip_overflow=False,
        members=members,
        labels=labels,
        fields=fields,
        columns=columns,
        cards=cards,
        checklists=checklists,
        comments=comments,
    )


def _soft_limit(raw: str | int | None) -> int | None:
    try:
        limit = int(raw) if raw is not None else None
    except ValueError:
        return None
    return limit if limit is not None and 1 <= limit <= 10_000 else None


def _trello_value(
    kind: str, value: dict[str, str] | None, id_value: str | None, refs: Refs
) -> str | int | float | bool | None:
    if kind == "select":
        return refs.get("opt", id_value) if id_value else None
    if not value:
        return None
    try:
        if kind == "text":
            return value.get("text", "")[:TEXT_MAX]
        if kind == "number":
            number = float(value["number"])
            return number if number == number and abs(number) != float("inf") else None
        if kind == "checkbox":
            return value.get("checked") == "true"
        if kind == "date":
            return trello_time(value.get("date"))
    except (KeyError, ValueError):
        return None
    return None
