"""The bases of every board command and event, and the rank change they share."""

from __future__ import annotations

import uuid

import msgspec


class _Command(msgspec.Struct, kw_only=True, tag_field="op", forbid_unknown_fields=True):
    pass


class _Event(msgspec.Struct, kw_only=True, tag_field="kind", omit_defaults=True):
    pass


class RankChange(msgspec.Struct, array_like=True):
    """A new rank for one item, sent when a list had to be rebalanced."""

    id: uuid.UUID
    rank: int
