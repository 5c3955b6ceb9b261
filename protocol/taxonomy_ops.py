"""Commands and events of the board's labels and custom fields, and their values on cards.

Removing a label, a field or a select option removes it from every card in the same event:
the event carries each card that changed, complete.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from protocol.base import _Command, _Event
from protocol.model import Card, Colour, CustomField, FieldKind, Label, Name, Text, Uuid


class OptionIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    colour: Colour | None = None


OptionNames = Annotated[list[OptionIn], msgspec.Meta(max_length=100)]


# ---------------------------------------------------------------- labels


class CreateLabel(_Command, tag="label.create"):
    name: Name
    colour: Colour


class UpdateLabel(_Command, tag="label.update"):
    """Rename or recolour a label; a field left out stays."""

    label_id: Uuid
    name: Name | msgspec.UnsetType = msgspec.UNSET
    colour: Colour | msgspec.UnsetType = msgspec.UNSET


class DeleteLabel(_Command, tag="label.delete"):
    label_id: Uuid


class AddLabel(_Command, tag="card.add_label"):
    card_id: Uuid
    label_id: Uuid


class RemoveLabel(_Command, tag="card.remove_label"):
    card_id: Uuid
    label_id: Uuid


class LabelCreated(_Event, tag="label.created"):
    label: Label


class LabelUpdated(_Event, tag="label.updated"):
    label: Label


class LabelDeleted(_Event, tag="label.deleted"):
    label_id: uuid.UUID
    cards: list[Card] = []  # every card that carried it, without it


class LabelAdded(_Event, tag="card.label_added"):
    card: Card
    label_id: uuid.UUID


class LabelRemoved(_Event, tag="card.label_removed"):
    card: Card
    label_id: uuid.UUID


# ---------------------------------------------------------------- custom fields


class CreateField(_Command, tag="field.create"):
    """A custom field, shown after the board's others; ``options`` for select fields only."""

    name: Name
    kind: FieldKind
    options: OptionNames = []


class UpdateField(_Command, tag="field.update"):
    field_id: Uuid
    name: Name


class AddFieldOption(_Command, tag="field.add_option"):
    field_id: Uuid
    name: Name
    colour: Colour | None = None


class RemoveFieldOption(_Command, tag="field.remove_option"):
    field_id: Uuid
    option_id: Uuid


class DeleteField(_Command, tag="field.delete"):
    field_id: Uuid


class SetFieldValue(_Command, tag="card.set_field"):
    """A custom field's value on a card (``null`` clears it): text a string of up to 20,000
    characters, number a finite number, date milliseconds since the epoch, checkbox a
    boolean, select an option id."""

    card_id: Uuid
    field_id: Uuid
    value: Text | float | bool | None


class FieldCreated(_Event, tag="field.created"):
    field: CustomField


class FieldUpdated(_Event, tag="field.updated"):
    """The field's name or options changed; ``cards`` that held a removed option, without it."""

    field: CustomField
    cards: list[Card] = []


class FieldDeleted(_Event, tag="field.deleted"):
    field_id: uuid.UUID
    cards: list[Card] = []  # every card that held a value, without it


class FieldValueSet(_Event, tag="card.field_set"):
    card: Card
    field_id: uuid.UUID


TaxonomyCommand = (
    CreateLabel
    | UpdateLabel
    | DeleteLabel
    | AddLabel
    | RemoveLabel
    | CreateField
    | UpdateField
    | AddFieldOption
    | RemoveFieldOption
    | DeleteField
    | SetFieldValue
)
TaxonomyEvent = (
    LabelCreated
    | LabelUpdated
    | LabelDeleted
    | LabelAdded
    | LabelRemoved
    | FieldCreated
    | FieldUpdated
    | FieldDeleted
    | FieldValueSet
)
