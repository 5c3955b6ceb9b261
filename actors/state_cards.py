"""Rules for what a card carries beyond its title and place (dates, assignees, cover, archive),
for column settings, and for the board's labels and custom fields."""

from __future__ import annotations

import math
import uuid

import msgspec

from actors.state_base import StateBase, conflict
from protocol import commands as c
from protocol.errors import bad_request, not_found
from protocol.model import Card, CustomField, FieldOption, FieldValue, Label

_copy = msgspec.structs.replace
_UNSET = msgspec.UNSET
_DATE_MAX = 2**53 - 1
MAX_LABELS = 200  # per board
MAX_FIELDS = 50  # per board
MAX_OPTIONS = 100  # per select field


class CardRules(StateBase):
    def apply_card_rule(self, cmd: c.Command) -> c.Event | None:
        """The event of a card-detail, column-setting, label or field command (None: not one
        of these)."""
        match cmd:
            case c.ConfigureBoard():
                self.allow_wip_overflow = cmd.allow_wip_overflow
                return c.BoardConfigured(allow_wip_overflow=cmd.allow_wip_overflow)
            case c.ConfigureColumn():
                col = self._column(cmd.column_id)
                if cmd.colour is _UNSET and cmd.wip_limit is _UNSET:
                    raise bad_request("nothing to change: give 'colour' or 'wip_limit'")
                if cmd.colour is not _UNSET:
                    col.colour = cmd.colour
                if cmd.wip_limit is not _UNSET:
                    col.wip_limit = cmd.wip_limit
                self._touch("columns", col.id)
                return c.ColumnConfigured(column=_copy(col))
            case c.ArchiveColumn() | c.RestoreColumn():
                col = self._column(cmd.column_id)
                archive = isinstance(cmd, c.ArchiveColumn)
                if col.archived == archive:
                    raise conflict(f"the column is {'already' if archive else 'not'} archived")
                col.archived = archive
                self._touch("columns", col.id)
                return (c.ColumnArchived if archive else c.ColumnRestored)(column=_copy(col))
            case c.ScheduleCard():
                return self._schedule(cmd)
            case c.AssignCard():
                card = self._card(cmd.card_id)
                self._member(cmd.user_id)
                if cmd.user_id not in card.assignees:
                    card.assignees = [*card.assignees, cmd.user_id]
                return c.CardAssigned(card=self._changed(card), user_id=cmd.user_id)
            case c.UnassignCard():
                card = self._card(cmd.card_id)
                card.assignees = [u for u in card.assignees if u != cmd.user_id]
                return c.CardUnassigned(card=self._changed(card), user_id=cmd.user_id)
            case c.SetCover():
                card = self._card(cmd.card_id)
                if cmd.attachment_id is not None and self._attachment(cmd.attachment_id).card_id != card.id:
                    raise bad_request("the cover must be one of the card's attachments")
                card.cover_id = cmd.attachment_id
                return c.CoverSet(card=self._changed(card))
            case c.ArchiveCard() | c.RestoreCard():
                return self._archive_card(cmd)
            case c.CreateLabel():
                if len(self.labels) >= MAX_LABELS:
                    raise bad_request(f"a board has at most {MAX_LABELS} labels")
                label = Label(id=uuid.uuid4(), name=cmd.name, colour=cmd.colour)
                self.labels[label.id] = label
                self._touch("labels", label.id)
                return c.LabelCreated(label=_copy(label))
            case c.UpdateLabel():
                label = self._label(cmd.label_id)
                if cmd.name is _UNSET and cmd.colour is _UNSET:
                    raise bad_request("nothing to change: give 'name' or 'colour'")
                if cmd.name is not _UNSET:
                    label.name = cmd.name
                if cmd.colour is not _UNSET:
                    label.colour = cmd.colour
                self._touch("labels", label.id)
                return c.LabelUpdated(label=_copy(label))
            case c.DeleteLabel():
                label = self._label(cmd.label_id)
                cards = []
                for card in self.cards.values():
                    if label.id in card.label_ids:
                        card.label_ids = [i for i in card.label_ids if i != label.id]
                        cards.append(self._changed(card))
                del self.labels[label.id]
                self._touch("labels", label.id)
                return c.LabelDeleted(label_id=label.id, cards=cards)
            case c.AddLabel():
                card = self._card(cmd.card_id)
                self._label(cmd.label_id)
                if cmd.label_id not in card.label_ids:
                    card.label_ids = [*card.label_ids, cmd.label_id]
                return c.LabelAdded(card=self._changed(card), label_id=cmd.label_id)
            case c.RemoveLabel():
                card = self._card(cmd.card_id)
                card.label_ids = [i for i in card.label_ids if i != cmd.label_id]
                return c.LabelRemoved(card=self._changed(card), label_id=cmd.label_id)
            case c.CreateField():
                return self._create_field(cmd)
            case c.UpdateField():
                found = self._field(cmd.field_id)
                found.name = cmd.name
                self._touch("fields", found.id)
                return c.FieldUpdated(field=_copy(found))
            case c.AddFieldOption():
                found = self._field(cmd.field_id)
                if found.kind != "select":
                    raise bad_request("only select fields have options")
                if len(found.options) >= MAX_OPTIONS:
                    raise bad_request(f"a field has at most {MAX_OPTIONS} options")
                option = FieldOption(id=uuid.uuid4(), name=cmd.name, colour=cmd.colour)
                found.options = [*found.options, option]
                self._touch("fields", found.id)
                return c.FieldUpdated(field=_copy(found))
            case c.RemoveFieldOption():
                found = self._field(cmd.field_id)
                if all(o.id != cmd.option_id for o in found.options):
                    raise not_found("option", cmd.option_id)
                found.options = [o for o in found.options if o.id != cmd.option_id]
                self._touch("fields", found.id)
                cards = self._clear_values(found.id, str(cmd.option_id))
                return c.FieldUpdated(field=_copy(found), cards=cards)
            case c.DeleteField():
                found = self._field(cmd.field_id)
                cards = self._clear_values(found.id, None)
                del self.fields[found.id]
                self._touch("fields", found.id)
                return c.FieldDeleted(field_id=found.id, cards=cards)
            case c.SetFieldValue():
                card = self._card(cmd.card_id)
                found = self._field(cmd.field_id)
                values = dict(card.fields)
                if cmd.value is None:
                    values.pop(found.id, None)
                else:
                    values[found.id] = _field_value(found, cmd.value)
                card.fields = values
                return c.FieldValueSet(card=self._changed(card), field_id=found.id)
        return None

    def _changed(self, card: Card) -> Card:
        self._touch("cards", card.id)
        return _copy(card)

    def _schedule(self, cmd: c.ScheduleCard) -> c.Event:
        card = self._card(cmd.card_id)
        if cmd.start_ms is _UNSET and cmd.due_ms is _UNSET and cmd.done is _UNSET:
            raise bad_request("nothing to change: give 'start_ms', 'due_ms' or 'done'")
        start = card.start_ms if cmd.start_ms is _UNSET else cmd.start_ms
        due = card.due_ms if cmd.due_ms is _UNSET else cmd.due_ms
        if start is not None and due is not None and start > due:
            raise bad_request("the start date is after the due date", start_ms=start, due_ms=due)
        card.start_ms, card.due_ms = start, due
        if cmd.done is not _UNSET:
            card.done = cmd.done
        return c.CardScheduled(card=self._changed(card))

    def _archive_card(self, cmd: c.ArchiveCard | c.RestoreCard) -> c.Event:
        card = self._card(cmd.card_id)
        archive = isinstance(cmd, c.ArchiveCard)
        if card.archived == archive:
            raise conflict(f"the card is {'already' if archive else 'not'} archived")
        if not archive:
            self._check_wip(self._open_column(card.column_id), 1)
        card.archived = archive
        self.active[card.column_id] += -1 if archive else 1
        return (c.CardArchived if archive else c.CardRestored)(card=self._changed(card))

    def _create_field(self, cmd: c.CreateField) -> c.Event:
        if cmd.options and cmd.kind != "select":
            raise bad_request("only select fields have options")
        if len(self.fields) >= MAX_FIELDS:
            raise bad_request(f"a board has at most {MAX_FIELDS} custom fields")
        rank = max((f.rank for f in self.fields.values()), default=0) + 1
        created = CustomField(
            id=uuid.uuid4(),
            name=cmd.name,
            kind=cmd.kind,
            options=[FieldOption(id=uuid.uuid4(), name=o.name, colour=o.colour) for o in cmd.options],
            rank=rank,
        )
        self.fields[created.id] = created
        self._touch("fields", created.id)
        return c.FieldCreated(field=_copy(created))

    def _clear_values(self, field_id: uuid.UUID, only: str | None) -> list[Card]:
        """Remove the field's value from every card (only those holding ``only``, if given)."""
        cards = []
        for card in self.cards.values():
            if field_id in card.fields and (only is None or card.fields[field_id] == only):
                card.fields = {k: v for k, v in card.fields.items() if k != field_id}
                cards.append(self._changed(card))
        return cards


def _field_value(found: CustomField, value: str | float | bool) -> FieldValue:
    """``value`` as the field's kind stores it, or a refusal naming what was expected."""
    kind = found.kind
    if kind == "checkbox" and isinstance(value, bool):
        return value
    if kind == "text" and isinstance(value, str):
        return value
    if kind == "select" and isinstance(value, str):
        if all(str(o.id) != value for o in found.options):
            raise bad_request("not an option of this field", field_id=str(found.id), value=value)
        return value
    if isinstance(value, float) and not isinstance(value, bool):
        if kind == "number":
            if not math.isfinite(value):
                raise bad_request("a number field takes a finite number")
            return value
        if kind == "date" and value.is_integer() and 0 <= value <= _DATE_MAX:
            return int(value)
    expected = {
        "text": "a string",
        "number": "a finite number",
        "date": "milliseconds since the epoch (an integer from 0 to 2**53 - 1)",
        "checkbox": "true or false",
        "select": "an option id",
    }[kind]
    raise bad_request(f"a {kind} field takes {expected}", field_id=str(found.id))
