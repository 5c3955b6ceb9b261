"""Who the caller is, and what they may do to a board: decided here and nowhere else.

Every REST handler and every WebSocket join/command calls :func:`authorize`. Identity is the
development user for now; the identity issue replaces :func:`resolve_user` and keeps the
same shape.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from aiohttp import web

from protocol import commands
from protocol.errors import BoardcastError, ErrorCode, not_found
from storage import BoardRepo

DEV_USER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    name: str
    email: str | None = None


DEV_USER = User(id=DEV_USER_ID, name="Developer", email="dev@boardcast.local")


class Action(enum.Enum):
    READ = "read"  # join, snapshot, list
    WRITE = "write"  # cards and columns
    ADMIN = "admin"  # board settings
    DELETE = "delete"  # delete the board


_ALLOWED: dict[str, frozenset[Action]] = {
    "viewer": frozenset({Action.READ}),
    "member": frozenset({Action.READ, Action.WRITE}),
    "admin": frozenset({Action.READ, Action.WRITE, Action.ADMIN}),
    "owner": frozenset(Action),
}


def resolve_user(request: web.Request) -> User:
    """The caller of a request: the development user until identity lands."""
    return DEV_USER


def action_for(cmd: commands.Command) -> Action:
    """What a board command needs: board settings are admin work, the rest is writing."""
    return Action.ADMIN if isinstance(cmd, commands.UpdateBoard) else Action.WRITE


def role_allows(role: str, action: Action) -> bool:
    return action in _ALLOWED.get(role, frozenset())


async def authorize(repo: BoardRepo, user: User, board_id: uuid.UUID, action: Action) -> str:
    """The caller's role on the board if it permits ``action``. Someone with no role gets
    "not found", never "forbidden", so a board's existence does not leak."""
    role = await repo.member_role(board_id, user.id)
    if role is None:
        raise not_found("board", board_id)
    if not role_allows(role, action):
        raise BoardcastError(ErrorCode.FORBIDDEN, f"a {role} may not {action.value} this board")
    return role
