"""Live board state: the actor runtime, board actors and the process's board registry."""

from actors.board import BoardActor, make_board_factory
from actors.lease import NODE_ID, BoardLeases, Holder, Lease, board_key
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
    "NODE_ID",
    "AccessChanged",
    "ActorStopped",
    "BoardActor",
    "BoardLeases",
    "BoardRegistry",
    "BoardSettings",
    "CommandResult",
    "DeleteBoard",
    "Execute",
    "GetSnapshot",
    "GetSnapshotJson",
    "Holder",
    "Lease",
    "Metrics",
    "SetPresenceState",
    "Subscribe",
    "Subscriber",
    "Unsubscribe",
    "board_key",
    "make_board_factory",
]
