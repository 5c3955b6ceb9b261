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
        # The pending diff, each change stamped with a version (bumped by every change), so
        # that a viewer who joined since the last diff, whose viewer list showed everything up
        # to its version, is sent only what changed after it (see diff_since):
        #   joined:  connection -> version it joined at
        #   updated: connection -> version of its latest state change
        #   left:    connection -> (user, version it left at, version it joined at if that was
        #            after the last diff, i.e. viewers from before never heard of it)
        self._version = 0
        self._joined: dict[str, int] = {}
        self._updated: dict[str, int] = {}
        self._left: dict[str, tuple[uuid.UUID, int, int | None]] = {}

    @property
    def version(self) -> int:
        """The version of the latest change: what a viewer list taken now shows."""
        return self._version

    def add(self, conn_id: str, user_id: uuid.UUID, name: str) -> None:
        if conn_id in self._user_of:  # a re-join: the connection starts afresh
            self.remove(conn_id)
        self._version += 1
        self._by_user.setdefault(user_id, {})[conn_id] = PresenceEntry(conn_id=conn_id)
        self._names[user_id] = name
        self._user_of[conn_id] = user_id
        self._joined[conn_id] = self._version

    def remove(self, conn_id: str) -> None:
        user_id = self._user_of.pop(conn_id, None)
        if user_id is None:
            return
        self._version += 1
        conns = self._by_user[user_id]
        del conns[conn_id]
        if not conns:
            del self._by_user[user_id], self._names[user_id]
        self._updated.pop(conn_id, None)
        joined_at = self._joined.pop(conn_id, None)
        earlier = self._left.get(conn_id)
        if earlier is not None:
            # It left before since the last diff (a re-join): who knew of it is decided by its
            # first join in this window (None: everyone from before knew it).
            joined_at = earlier[2]
        self._left[conn_id] = (user_id, self._version, joined_at)

    def set_state(self, conn_id: str, state: dict[str, Any]) -> None:
        user_id = self._user_of.get(conn_id)
        if user_id is None:
            return
        self._version += 1
        self._by_user[user_id][conn_id].state = state
        self._updated[conn_id] = self._version

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

    def _diff(
        self, left: list[PresenceChange], joined: list[PresenceChange], updated: list[PresenceChange]
    ) -> PresenceDiff | None:
        if not (left or joined or updated):
            return None
        return PresenceDiff(board_id=self._board_id, left=left, joined=joined, updated=updated)

    def diff(self) -> PresenceDiff | None:
        """The pending diff for viewers who were there at the last diff."""
        return self._diff(
            [PresenceChange(user_id=u, conn_id=c) for c, (u, _, j) in self._left.items() if j is None],
            [self._change(c, True) for c in self._joined],
            # a connection that joined is announced with its latest state already
            [self._change(c, False) for c in self._updated if c not in self._joined],
        )

    def diff_since(self, version: int) -> PresenceDiff | None:
        """The pending diff for a viewer whose viewer list showed the board at ``version``."""
        return self._diff(
            [
                PresenceChange(user_id=u, conn_id=c)
                for c, (u, at, j) in self._left.items()
                if at > version and (j is None or j <= version)
            ],
            [self._change(c, True) for c, at in self._joined.items() if at > version],
            [
                self._change(c, False)
                for c, at in self._updated.items()
                if at > version and self._joined.get(c, 0) <= version
            ],
        )

    def clear(self) -> None:
        """Forget the pending diff (it was sent)."""
        self._joined.clear()
        self._updated.clear()
        self._left.clear()

    def take_diff(self) -> PresenceDiff | None:
        diff = self.diff()
        self.clear()
        return diff
