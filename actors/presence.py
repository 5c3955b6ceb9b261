"""Who is viewing a board: one entry per user, one record per connection, never persisted.

Changes are collected and taken as one diff (full records of changed viewers, ids of users
who left), so a burst of cursor moves becomes one broadcast.
"""

from __future__ import annotations

import uuid
from typing import Any

from protocol.messages import PresenceDiff
from protocol.model import PresenceEntry, Viewer


class Presence:
    def __init__(self, board_id: uuid.UUID) -> None:
        self._board_id = board_id
        self._by_user: dict[uuid.UUID, dict[str, PresenceEntry]] = {}
        self._names: dict[uuid.UUID, str] = {}
        self._user_of: dict[str, uuid.UUID] = {}
        self._changed: set[uuid.UUID] = set()
        self._membership_changed = False

    def add(self, conn_id: str, user_id: uuid.UUID, name: str) -> None:
        self._by_user.setdefault(user_id, {})[conn_id] = PresenceEntry(conn_id=conn_id)
        self._names[user_id] = name
        self._user_of[conn_id] = user_id
        self._changed.add(user_id)
        self._membership_changed = True

    def remove(self, conn_id: str) -> None:
        user_id = self._user_of.pop(conn_id, None)
        if user_id is None:
            return
        conns = self._by_user[user_id]
        del conns[conn_id]
        if not conns:
            del self._by_user[user_id], self._names[user_id]
        self._changed.add(user_id)
        self._membership_changed = True

    def set_state(self, conn_id: str, state: dict[str, Any]) -> None:
        user_id = self._user_of.get(conn_id)
        if user_id is None:
            return
        self._by_user[user_id][conn_id].state = state
        self._changed.add(user_id)

    def has_membership_changes(self) -> bool:
        return self._membership_changed

    def viewers(self) -> list[Viewer]:
        return [self._viewer(u) for u in self._by_user]

    def _viewer(self, user_id: uuid.UUID) -> Viewer:
        return Viewer(
            user_id=user_id,
            name=self._names[user_id],
            connections=list(self._by_user[user_id].values()),
        )

    def take_diff(self) -> PresenceDiff | None:
        if not self._changed:
            return None
        upserts = [self._viewer(u) for u in self._changed if u in self._by_user]
        removed = [u for u in self._changed if u not in self._by_user]
        self._changed.clear()
        self._membership_changed = False
        return PresenceDiff(board_id=self._board_id, upserts=upserts, removed=removed)
