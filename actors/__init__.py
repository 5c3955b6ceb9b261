"""Live board state: the actor runtime, board actors and the process's board registry."""

from actors.board import BoardActor, make_board_factory
from actors.messages import (
    AccessChanged,
    BoardSettings,
    CommandResult,
    DeleteBoard,
    Execute,
    GetSnapshot,
    GetSnapshotJson,
    SetPresenceState,
    Subscribe,
    Subscriber,
    Unsubscribe,
)
from actors.metrics import Metrics
from actors.registry import BoardRegistry
from actors.runtime import ActorStopped

__all__ = [
    "AccessChanged",
    "ActorStopped",
    "BoardActor",
    "BoardRegistry",
    "BoardSettings",
    "CommandResult",
    "DeleteBoard",
    "Execute",
    "GetSnapshot",
    "GetSnapshotJson",
    "Metrics",
    "SetPresenceState",
    "Subscribe",
    "Subscriber",
    "Unsubscribe",
    "make_board_factory",
]
