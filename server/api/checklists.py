"""REST for checklists on cards and their items."""

from __future__ import annotations

import msgspec

from protocol import commands as c
from protocol.model import Checklist, ChecklistItem, Millis, Title, Uuid
from server.api.ops import B, op_route
from server.http import Body, Route

_UNSET = msgspec.UNSET
_CL = f"{B}/checklists/{{checklist_id}}"
_IT = f"{B}/items/{{item_id}}"


class ChecklistCreate(Body):
    title: Title
    after: Uuid | None = None
    before: Uuid | None = None


class ChecklistPatch(Body):
    title: Title


class ChecklistPlacement(Body):
    after: Uuid | None = None
    before: Uuid | None = None


class ItemCreate(Body):
    text: Title
    after: Uuid | None = None
    before: Uuid | None = None
    assignee_id: Uuid | None = None
    due_ms: Millis | None = None


class ItemPatch(Body):
    text: Title | msgspec.UnsetType = _UNSET
    done: bool | msgspec.UnsetType = _UNSET
    assignee_id: Uuid | msgspec.UnsetType | None = _UNSET
    due_ms: Millis | msgspec.UnsetType | None = _UNSET


class ItemMoveBody(Body):
    checklist_id: Uuid
    after: Uuid | None = None
    before: Uuid | None = None


ROUTES: list[Route] = [
    op_route(
        "POST",
        f"{B}/cards/{{card_id}}/checklists",
        "Add a checklist to a card",
        lambda ids, b: c.CreateChecklist(
            card_id=ids["card_id"], title=b.title, after=b.after, before=b.before
        ),
        ChecklistCreate,
        Checklist,
        201,
    ),
    op_route(
        "PATCH",
        _CL,
        "Rename a checklist",
        lambda ids, b: c.RenameChecklist(checklist_id=ids["checklist_id"], title=b.title),
        ChecklistPatch,
        Checklist,
    ),
    op_route(
        "POST",
        f"{_CL}/move",
        "Move a checklist among its card's checklists",
        lambda ids, b: c.MoveChecklist(checklist_id=ids["checklist_id"], after=b.after, before=b.before),
        ChecklistPlacement,
        Checklist,
    ),
    op_route(
        "DELETE",
        _CL,
        "Delete a checklist and its items",
        lambda ids, b: c.DeleteChecklist(checklist_id=ids["checklist_id"]),
    ),
    op_route(
        "POST",
        f"{_CL}/items",
        "Add an item to a checklist",
        lambda ids, b: c.CreateItem(
            checklist_id=ids["checklist_id"],
            text=b.text,
            after=b.after,
            before=b.before,
            assignee_id=b.assignee_id,
            due_ms=b.due_ms,
        ),
        ItemCreate,
        ChecklistItem,
        201,
    ),
    op_route(
        "PATCH",
        _IT,
        "Change an item's text, done flag, assignee or due date (null clears)",
        lambda ids, b: c.UpdateItem(
            item_id=ids["item_id"], text=b.text, done=b.done, assignee_id=b.assignee_id, due_ms=b.due_ms
        ),
        ItemPatch,
        ChecklistItem,
    ),
    op_route(
        "POST",
        f"{_IT}/move",
        "Move an item within its checklist or to another checklist of the board",
        lambda ids, b: c.MoveItem(
            item_id=ids["item_id"], checklist_id=b.checklist_id, after=b.after, before=b.before
        ),
        ItemMoveBody,
        ChecklistItem,
    ),
    op_route("DELETE", _IT, "Delete an item", lambda ids, b: c.DeleteItem(item_id=ids["item_id"])),
]
