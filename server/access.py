"""What a caller may do to a board: decided here and nowhere else.

Every REST handler and every WebSocket join and command calls :func:`authorize` (or, for a
connection that already joined, :func:`role_allows` with the role it was granted, which the
board keeps current). Membership changes are checked by :func:`check_membership_change`,
inside the transaction that makes them.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from aiohttp import web

from protocol import commands
from protocol.errors import BoardcastError, ErrorCode, not_found
from server.keys import USER
from storage.members import DeletedBoard, MemberRepo

DEV_USER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")

ROLES = ("owner", "admin", "member", "commenter", "viewer")  # most powerful first


class Via(enum.Enum):
    """How the caller proved who they are."""

    DEV = "dev"  # BOARDCAST_AUTH=none
    SESSION = "session"  # an access token from login, register or refresh
    API_TOKEN = "api_token"
    OIDC = "oidc"


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    name: str
    email: str | None = None
    via: Via = Via.DEV
    session_id: uuid.UUID | None = None
    token_id: uuid.UUID | None = None  # the personal API token used
    expires_at: float | None = None  # unix seconds; when the credentials stop working
    cookie: bool = False  # authenticated by the access cookie (mutations need CSRF)

    @property
    def manages_credentials(self) -> bool:
        """May change the password and manage API tokens: a signed-in person, not a script
        holding an API token nor an external identity (which has no password here)."""
        return self.via in (Via.SESSION, Via.DEV)


DEV_USER = User(id=DEV_USER_ID, name="Developer", email="dev@boardcast.local")


class Action(enum.Enum):
    READ = "read"  # join, snapshot, list, members
    COMMENT = "comment"  # comment on cards; edit and delete one's own comments
    WRITE = "write"  # cards, columns, checklists, assignees, label and field values, attachments
    ADMIN = "admin"  # board settings, labels, custom fields, others' comments, members, invitations
    DELETE = "delete"  # delete the board
    TRANSFER = "transfer"  # hand ownership to another member
    WEBHOOKS = "manage webhooks of"  # create, change, delete webhooks; see their deliveries
    SYSTEM = "act as the server on"  # commands only the server itself sends; no role has it


_ALLOWED: dict[str, frozenset[Action]] = {
    "viewer": frozenset({Action.READ}),
    "commenter": frozenset({Action.READ, Action.COMMENT}),
    "member": frozenset({Action.READ, Action.COMMENT, Action.WRITE}),
    "admin": frozenset({Action.READ, Action.COMMENT, Action.WRITE, Action.ADMIN, Action.WEBHOOKS}),
    "owner": frozenset(Action) - {Action.SYSTEM},
}

# Board commands that are admin work: the board's settings and its vocabulary (labels and
# custom fields), which every card shares.
_ADMIN_OPS: tuple[type, ...] = (
    commands.UpdateBoard,
    commands.ConfigureBoard,
    commands.CreateLabel,
    commands.UpdateLabel,
    commands.DeleteLabel,
    commands.CreateField,
    commands.UpdateField,
    commands.AddFieldOption,
    commands.RemoveFieldOption,
    commands.DeleteField,
)
_COMMENT_OPS: tuple[type, ...] = (commands.CreateComment, commands.EditComment, commands.DeleteComment)
# Commands only the server builds (the upload route, once the blob is stored): a client
# sending one over the WebSocket or a generic command route is refused.
SERVER_ONLY_OPS: tuple[type, ...] = (commands.AddAttachment,)


@dataclass(frozen=True, slots=True)
class Grant:
    """The caller's role on a board; ``member`` is False for a signed-in user reading a board
    that is visible to everyone signed in."""

    role: str
    member: bool


def current_user(request: web.Request) -> User:
    """The caller, as the authentication middleware established."""
    user: User | None = request.get(USER)
    if user is None:
        raise BoardcastError(ErrorCode.UNAUTHORIZED, "authentication required")
    return user


def action_for(cmd: commands.Command, own: bool = True) -> Action:
    """What a board command needs: board settings, labels and custom fields are admin work;
    what only the server says (a webhook's disabling) nobody's;
    comments need the comment right (deleting someone else's comment, ``own`` False, is admin
    work: editing it is refused to everyone but its author by the board); the rest is
    writing."""
    if isinstance(cmd, _ADMIN_OPS):
        return Action.ADMIN
    if isinstance(cmd, commands.ReportWebhookDisabled):
        return Action.SYSTEM
    if isinstance(cmd, _COMMENT_OPS):
        return Action.COMMENT if own or isinstance(cmd, commands.EditComment) else Action.ADMIN
    return Action.WRITE


def client_may_send(cmd: commands.Command) -> None:
    """Refuse a command that only the server may build, when a client sent it (WebSocket
    frames and generic REST command bodies)."""
    if isinstance(cmd, SERVER_ONLY_OPS):
        raise BoardcastError(
            ErrorCode.FORBIDDEN,
            f"{cmd.__struct_config__.tag} is made by the server when a file is uploaded: "
            "POST the file to /api/v1/boards/{board_id}/cards/{card_id}/attachments",
            {"op": cmd.__struct_config__.tag, "reason": "server_only"},
        )


def needs_author(cmd: commands.Command) -> uuid.UUID | None:
    """The comment whose author decides what ``cmd`` needs (see :func:`action_for`), if any."""
    if isinstance(cmd, commands.EditComment | commands.DeleteComment):
        return cmd.comment_id
    return None


def check_command(role: str, cmd: commands.Command, own: bool = True) -> None:
    """Refuse ``cmd`` unless ``role`` may apply it (``own``: the caller wrote what it is about)."""
    action = action_for(cmd, own)
    if not role_allows(role, action):
        raise forbidden(role, action)


def role_allows(role: str, action: Action) -> bool:
    return action in _ALLOWED.get(role, frozenset())


def forbidden(role: str, action: Action) -> BoardcastError:
    return BoardcastError(ErrorCode.FORBIDDEN, f"a {role} may not {action.value} this board", {"role": role})


def grant_for(role: str | None, visibility: str) -> Grant | None:
    """What a user with membership ``role`` (None: not a member) has on a board of this
    visibility: members their role, anyone signed in a viewer's access to a ``signed_in``
    board, others nothing."""
    if role is not None:
        return Grant(role, member=True)
    if visibility == "signed_in":
        return Grant("viewer", member=False)
    return None


def command_refusal(grant: Grant, cmd: commands.Command, own: bool = True) -> BoardcastError | None:
    """Why a viewer holding ``grant`` may not apply ``cmd`` (None: it may); ``own``: whether
    the viewer wrote what the command is about (see :func:`action_for`)."""
    action = action_for(cmd, own)
    return None if role_allows(grant.role, action) else forbidden(grant.role, action)


_GRANT_ENCODER = msgspec.msgpack.Encoder()
_GRANT_DECODER = msgspec.msgpack.Decoder(Grant | None)


class GrantPolicy:
    """The rules above for viewers whose connection is on another node
    (:class:`actors.remote.ViewerPolicy`): the board's owner decides with them, and the grant
    travels to the connection's node."""

    def keeps(self, grant: object | None) -> bool:
        return isinstance(grant, Grant)

    def refusal(self, grant: object, cmd: commands.Command, own: bool = True) -> BoardcastError | None:
        assert isinstance(grant, Grant)
        return command_refusal(grant, cmd, own)

    def encode_grant(self, grant: object | None) -> bytes:
        return _GRANT_ENCODER.encode(grant if isinstance(grant, Grant) else None)

    def decode_grant(self, data: bytes) -> object | None:
        return _GRANT_DECODER.decode(data)


class BoardDeleted(BoardcastError):
    """The board was deleted, told only to someone who was its member then (410)."""

    def __init__(self, board_id: uuid.UUID, tomb: DeletedBoard) -> None:
        super().__init__(
            ErrorCode.GONE, "the board was deleted", {"board_id": str(board_id), "seq": tomb.seq}
        )
        self.tomb = tomb


async def authorize(members: MemberRepo, user: User, board_id: uuid.UUID, action: Action) -> Grant:
    """The caller's grant on the board if it permits ``action``. Someone with no access gets
    exactly the answer for a board that does not exist, so existence does not leak."""
    access = await members.access(board_id, user.id)
    grant = None if access is None else grant_for(access.role, access.visibility)
    if grant is None:
        tomb = None if access is not None else await members.deleted(board_id, user.id)
        if tomb is not None:
            raise BoardDeleted(board_id, tomb)
        raise not_found("board", board_id)
    if not role_allows(grant.role, action):
        raise forbidden(grant.role, action)
    return grant


async def grants(
    members: MemberRepo, board_id: uuid.UUID, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Grant]:
    """The grants of these users on the board, in one query; those without access are left
    out. What a board actor reads when it (re)checks its viewers (actors.AccessLookup)."""
    found = await members.access_many(board_id, user_ids)
    if found is None:
        return {}
    visibility, roles = found
    out = {}
    for user_id in user_ids:
        grant = grant_for(roles.get(user_id), visibility)
        if grant is not None:
            out[user_id] = grant
    return out


def check_membership_change(
    actor: str | None, target: str | None, new_role: str | None, owners: int, *, self_change: bool
) -> None:
    """May someone with role ``actor`` move a member from ``target`` to ``new_role`` (None:
    remove)? Only an owner touches owners; the last owner always stays. A member may always
    remove themselves (leave), unless they are the last owner."""
    if actor is None:
        raise BoardcastError(ErrorCode.NOT_FOUND, "board not found")
    if not (self_change and new_role is None) and not role_allows(actor, Action.ADMIN):
        raise forbidden(actor, Action.ADMIN)
    if (new_role == "owner" or target == "owner") and actor != "owner" and not self_change:
        raise BoardcastError(ErrorCode.FORBIDDEN, "only an owner may grant, change or remove ownership")
    if new_role == "owner" and actor != "owner":
        raise BoardcastError(ErrorCode.FORBIDDEN, "only an owner may grant ownership")
    if target == "owner" and new_role != "owner" and owners <= 1:
        raise BoardcastError(
            ErrorCode.CONFLICT,
            "the last owner cannot leave or be demoted or removed; transfer ownership first",
        )


def check_invitation_role(actor: str, role: str) -> None:
    """May someone with role ``actor`` create an invitation granting ``role``? An invitation is
    a link anyone holding it can use, so granting admin to whoever that turns out to be is the
    owner's call; an admin may still make a person they name an admin (members routes)."""
    if role == "owner" or (role == "admin" and actor != "owner"):
        raise BoardcastError(ErrorCode.FORBIDDEN, "only an owner may invite admins", {"role": actor})
