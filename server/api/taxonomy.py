"""REST for the board's labels and custom fields (admin work; reading them is in the board's
snapshot and the list routes here)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from actors import GetSnapshot
from protocol import commands as c
from protocol.model import BoardSnapshot, Colour, CustomField, FieldKind, Label, Name
from protocol.taxonomy_ops import OptionNames
from server.access import Action, authorize, current_user
from server.api.ops import B, op_route
from server.http import Body, Route, json_response, path_uuid
from server.keys import MEMBERS, REGISTRY, SETTINGS

_UNSET = msgspec.UNSET


class LabelCreate(Body):
    name: Name
    colour: Colour


class LabelPatch(Body):
    name: Name | msgspec.UnsetType = _UNSET
    colour: Colour | msgspec.UnsetType = _UNSET


class FieldCreate(Body):
    name: Name
    kind: FieldKind
    options: OptionNames = []


class FieldPatch(Body):
    name: Name


class OptionCreate(Body):
    name: Name
    colour: Colour | None = None


class LabelList(msgspec.Struct):
    labels: list[Label]


class FieldList(msgspec.Struct):
    fields: list[CustomField]


async def _snapshot(request: web.Request) -> BoardSnapshot:
    board_id = path_uuid(request, "board_id")
    await authorize(request.app[MEMBERS], current_user(request), board_id, Action.READ)
    snap: BoardSnapshot = await request.app[REGISTRY].ask(
        board_id, GetSnapshot(), request.app[SETTINGS].ask_timeout_s
    )
    return snap


async def list_labels(request: web.Request) -> web.Response:
    return json_response(LabelList((await _snapshot(request)).labels))


async def list_fields(request: web.Request) -> web.Response:
    return json_response(FieldList((await _snapshot(request)).fields))


_L = f"{B}/labels"
_F = f"{B}/fields"

ROUTES: list[Route] = [
    Route("GET", _L, list_labels, "The board's labels, by name", response=LabelList),
    op_route(
        "POST",
        _L,
        "Create a label (admin)",
        lambda ids, b: c.CreateLabel(name=b.name, colour=b.colour),
        LabelCreate,
        Label,
        201,
    ),
    op_route(
        "PATCH",
        f"{_L}/{{label_id}}",
        "Rename or recolour a label (admin)",
        lambda ids, b: c.UpdateLabel(label_id=ids["label_id"], name=b.name, colour=b.colour),
        LabelPatch,
        Label,
    ),
    op_route(
        "DELETE",
        f"{_L}/{{label_id}}",
        "Delete a label, taking it off every card (admin)",
        lambda ids, b: c.DeleteLabel(label_id=ids["label_id"]),
    ),
    Route("GET", _F, list_fields, "The board's custom fields, in order", response=FieldList),
    op_route(
        "POST",
        _F,
        "Create a custom field (admin)",
        lambda ids, b: c.CreateField(name=b.name, kind=b.kind, options=b.options),
        FieldCreate,
        CustomField,
        201,
    ),
    op_route(
        "PATCH",
        f"{_F}/{{field_id}}",
        "Rename a custom field (admin)",
        lambda ids, b: c.UpdateField(field_id=ids["field_id"], name=b.name),
        FieldPatch,
        CustomField,
    ),
    op_route(
        "DELETE",
        f"{_F}/{{field_id}}",
        "Delete a custom field and its values on every card (admin)",
        lambda ids, b: c.DeleteField(field_id=ids["field_id"]),
    ),
    op_route(
        "POST",
        f"{_F}/{{field_id}}/options",
        "Add an option to a select field (admin)",
        lambda ids, b: c.AddFieldOption(field_id=ids["field_id"], name=b.name, colour=b.colour),
        OptionCreate,
        CustomField,
        201,
    ),
    op_route(
        "DELETE",
        f"{_F}/{{field_id}}/options/{{option_id}}",
        "Remove a select option, clearing it from every card (admin)",
        lambda ids, b: c.RemoveFieldOption(field_id=ids["field_id"], option_id=ids["option_id"]),
    ),
]
