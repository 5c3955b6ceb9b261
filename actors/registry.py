"""The board directory of one process: exactly one live actor per open board.

Activation happens on first use; an actor that stops (passivated, deleted, given up after
crashes) removes itself. Callers go through :meth:`BoardRegistry.ask` / :meth:`tell`, which
retry once when they raced a passivation. On several nodes this becomes a cluster-wide
directory (a Redis lease per board); callers keep the same two methods.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from actors.board import BoardActor
from actors.metrics import Metrics
from actors.runtime import Actor, ActorStopped


class BoardRegistry:
    def __init__(self, factory: Callable[[uuid.UUID], BoardActor], metrics: Metrics) -> None:
        self._factory = factory
        self._metrics = metrics
        self._actors: dict[uuid.UUID, BoardActor] = {}
        self._closing = False

    def __len__(self) -> int:
        return len(self._actors)

    def get(self, board_id: uuid.UUID) -> BoardActor:
        """The board's live actor, activating it if needed."""
        actor = self._actors.get(board_id)
        if actor is not None and actor.accepting:
            return actor
        if self._closing:
            raise ActorStopped(f"board:{board_id}")
        actor = self._factory(board_id)
        actor.on_stopped(self._forget)
        self._actors[board_id] = actor
        self._metrics.active_actors.set(len(self._actors))
        actor.start()
        return actor

    def tell(self, board_id: uuid.UUID, msg: Any) -> None:
        try:
            self.get(board_id).tell(msg)
        except ActorStopped:
            self.get(board_id).tell(msg)

    def tell_if_active(self, board_id: uuid.UUID, msg: Any) -> None:
        """Tell the board only if its actor is in memory (a board nobody has open has no
        viewers to tell)."""
        actor = self._actors.get(board_id)
        if actor is not None and actor.accepting:
            actor.tell(msg)

    def submit(self, board_id: uuid.UUID, msg: Any) -> asyncio.Future[Any]:
        try:
            return self.get(board_id).submit(msg)
        except ActorStopped:
            return self.get(board_id).submit(msg)

    async def ask(self, board_id: uuid.UUID, msg: Any, timeout_s: float) -> Any:
        try:
            return await self.get(board_id).ask(msg, timeout_s)
        except ActorStopped:
            # Raced a passivation: the old actor refused before taking the message.
            return await self.get(board_id).ask(msg, timeout_s)

    def mailbox_depths(self) -> list[int]:
        return [a.mailbox_depth() for a in self._actors.values()]

    def _forget(self, actor: Actor) -> None:
        assert isinstance(actor, BoardActor)
        if self._actors.get(actor.board_id) is actor:
            del self._actors[actor.board_id]
        self._metrics.active_actors.set(len(self._actors))

    async def close(self) -> None:
        self._closing = True
        actors = list(self._actors.values())
        await asyncio.gather(*(a.stop() for a in actors), return_exceptions=True)
