"""Who is viewing a board: one entry per user, one record per connection, never persisted.

Changes are collected per connection and taken as one diff, so a burst of cursor moves
becomes one broadcast and one more tab costs every other viewer a few bytes, not a re-send
of the user's whole record.
"""

from __future__ import annotations

import uuid
from typing import Any

from protocol.messages import PresenceDiff
from protocol.model import PresenceChange, PresenceEntry, Viewer


class Presence:
    def __init__(self, board_id: uuid.UUID) -> None:
        self._board_id = board_id
        self._by_user: dict[uuid.UUID, dict[str, PresenceEntry]] = {}
        self._names: dict[uuid.UUID, str] = {}
        self._user_of: dict[str, uuid.UUID] = {}
        # pending diff: connections joined / updated since the last diff, and those that left
        # (only ones other viewers had already heard of)
        self._joined: set[str] = set()
        self._updated: set[str] = set()
        self._left: dict[str, uuid.UUID] = {}

    def add(self, conn_id: str, user_id: uuid.UUID, name: str) -> None:
        if conn_id in self._user_of:  # a re-join: the connection starts afresh
            self.remove(conn_id)
        self._by_user.setdefault(user_id, {})[conn_id] = PresenceEntry(conn_id=conn_id)
        self._names[user_id] = name
        self._user_of[conn_id] = user_id
        self._joined.add(conn_id)

    def remove(self, conn_id: str) -> None:
        user_id = self._user_of.pop(conn_id, None)
        if user_id is None:
            return
        conns = self._by_user[user_id]
        del conns[conn_id]
        if not conns:
            del self._by_user[user_id], self._names[user_id]
        self._updated.discard(conn_id)
        if conn_id in self._joined:
            self._joined.discard(conn_id)  # nobody heard of it: nothing to retract
        else:
            self._left[conn_id] = user_id

    def set_state(self, conn_id: str, state: dict[str, Any]) -> None:
        user_id = self._user_of.get(conn_id)
        if user_id is None:
            return
        self._by_user[user_id][conn_id].state = state
        if conn_id not in self._joined:
            self._updated.add(conn_id)

    def has_membership_changes(self) -> bool:
        return bool(self._joined or self._left)

    def viewers(self) -> list[Viewer]:
        return [
            Viewer(user_id=u, name=self._names[u], connections=list(conns.values()))
            for u, conns in self._by_user.items()
        ]

    def _change(self, conn_id: str, with_name: bool) -> PresenceChange:
        user_id = self._user_of[conn_id]
        return PresenceChange(
            user_id=user_id,
            conn_id=conn_id,
            name=self._names[user_id] if with_name else None,
            state=self._by_user[user_id][conn_id].state,
        )

    def take_diff(self) -> PresenceDiff | None:
        if not (self._joined or self._updated or self._left):
            return None
        diff = PresenceDiff(
            board_id=self._board_id,
            left=[PresenceChange(user_id=u, conn_id=c) for c, u in self._left.items()],
            joined=[self._change(c, True) for c in self._joined],
            updated=[self._change(c, False) for c in self._updated],
        )
        self._joined.clear()
        self._updated.clear()
        self._left.clear()
        return diff
