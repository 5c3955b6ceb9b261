"""REST for card details and column and board settings: dates, assignees, labels, cover,
custom field values, archive and restore, colours and WIP limits."""

from __future__ import annotations

import msgspec

from protocol import commands as c
from protocol.model import Card, Colour, Column, Millis, Text, Uuid, WipLimit
from server.api.ops import B, op_route
from server.http import Body, Route

_C = f"{B}/cards/{{card_id}}"
_COL = f"{B}/columns/{{column_id}}"
_UNSET = msgspec.UNSET


class BoardSettingsBody(Body):
    allow_wip_overflow: bool


class ColumnSettings(Body):
    colour: Colour | msgspec.UnsetType | None = _UNSET
    wip_limit: WipLimit | msgspec.UnsetType | None = _UNSET


class Schedule(Body):
    start_ms: Millis | msgspec.UnsetType | None = _UNSET
    due_ms: Millis | msgspec.UnsetType | None = _UNSET
    done: bool | msgspec.UnsetType = _UNSET


class UserRef(Body):
    user_id: Uuid


class CoverBody(Body):
    attachment_id: Uuid | None


class FieldValueBody(Body):
    value: Text | float | bool | None


ROUTES: list[Route] = [
    op_route(
        "PUT",
        f"{B}/settings",
        "Board rules: whether creates and moves may exceed a column's WIP limit (admin)",
        lambda ids, b: c.ConfigureBoard(allow_wip_overflow=b.allow_wip_overflow),
        BoardSettingsBody,
    ),
    op_route(
        "PATCH",
        f"{_COL}/settings",
        "Set a column's colour or WIP limit (null clears)",
        lambda ids, b: c.ConfigureColumn(column_id=ids["column_id"], colour=b.colour, wip_limit=b.wip_limit),
        ColumnSettings,
        Column,
    ),
    op_route(
        "POST",
        f"{_COL}/archive",
        "Archive a column",
        lambda ids, b: c.ArchiveColumn(column_id=ids["column_id"]),
        response=Column,
    ),
    op_route(
        "POST",
        f"{_COL}/restore",
        "Restore an archived column",
        lambda ids, b: c.RestoreColumn(column_id=ids["column_id"]),
        response=Column,
    ),
    op_route(
        "PATCH",
        f"{_C}/schedule",
        "Set a card's start and due dates and done flag (null clears a date)",
        lambda ids, b: c.ScheduleCard(
            card_id=ids["card_id"], start_ms=b.start_ms, due_ms=b.due_ms, done=b.done
        ),
        Schedule,
        Card,
    ),
    op_route(
        "POST",
        f"{_C}/assignees",
        "Assign a board member to a card",
        lambda ids, b: c.AssignCard(card_id=ids["card_id"], user_id=b.user_id),
        UserRef,
        Card,
    ),
    op_route(
        "DELETE",
        f"{_C}/assignees/{{user_id}}",
        "Unassign a member from a card",
        lambda ids, b: c.UnassignCard(card_id=ids["card_id"], user_id=ids["user_id"]),
        response=Card,
    ),
    op_route(
        "PUT",
        f"{_C}/labels/{{label_id}}",
        "Put a label on a card",
        lambda ids, b: c.AddLabel(card_id=ids["card_id"], label_id=ids["label_id"]),
        response=Card,
    ),
    op_route(
        "DELETE",
        f"{_C}/labels/{{label_id}}",
        "Take a label off a card",
        lambda ids, b: c.RemoveLabel(card_id=ids["card_id"], label_id=ids["label_id"]),
        response=Card,
    ),
    op_route(
        "PUT",
        f"{_C}/cover",
        "Show one of the card's attachments as its cover (null: none)",
        lambda ids, b: c.SetCover(card_id=ids["card_id"], attachment_id=b.attachment_id),
        CoverBody,
        Card,
    ),
    op_route(
        "PUT",
        f"{_C}/fields/{{field_id}}",
        "Set a custom field's value on a card (null clears it)",
        lambda ids, b: c.SetFieldValue(card_id=ids["card_id"], field_id=ids["field_id"], value=b.value),
        FieldValueBody,
        Card,
    ),
    op_route(
        "POST",
        f"{_C}/archive",
        "Archive a card",
        lambda ids, b: c.ArchiveCard(card_id=ids["card_id"]),
        response=Card,
    ),
    op_route(
        "POST",
        f"{_C}/restore",
        "Restore an archived card (refused past its column's WIP limit)",
        lambda ids, b: c.RestoreCard(card_id=ids["card_id"]),
        response=Card,
    ),
]
