"""Board members and invitations over REST (docs/ACCESS.md).

Who may change whom is decided by :func:`server.access.check_membership_change`, inside the
transaction that makes the change. After a change, the board's live viewers are told in
mailbox order (:class:`actors.AccessChanged`), so a removed member's connections lose the board
before anything else is sent to them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec
import structlog
from aiohttp import web

from actors import AccessChanged
from protocol.errors import BoardcastError, ErrorCode, bad_request, not_found
from protocol.model import BoardInfo, Uuid
from server.access import (
    ROLES,
    Action,
    Grant,
    User,
    authorize,
    check_invitation_role,
    check_membership_change,
    current_user,
    forbidden,
    role_allows,
)
from server.accounts import Email, Opaque
from server.auth import INVITATION_PREFIX, new_secret_token, token_hash
from server.guard import Tier
from server.http import Body, Route, exactly_one, json_response, path_uuid, read_body
from server.keys import GUARD, MEMBERS, REGISTRY
from storage.members import InvitationGone, InvitationRecord, MemberRecord, MembershipTx

log = structlog.get_logger(__name__)

Role = Literal["owner", "admin", "member", "commenter", "viewer"]
InviteRole = Literal["admin", "member", "commenter", "viewer"]

# ------------------------------------------------------------------ bodies


class MemberAdd(Body):
    rules = exactly_one("user_id", "email")
    user_id: Uuid | None = None
    email: Email | None = None
    role: Role = "member"


class MemberPatch(Body):
    role: Role


class Transfer(Body):
    user_id: Uuid


class InvitationCreate(Body):
    role: InviteRole = "member"
    expires_in_s: Annotated[int, msgspec.Meta(ge=1, le=30 * 86400)] = 7 * 86400
    max_uses: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1


class InvitationAccept(Body):
    token: Opaque


class MemberOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    user_id: uuid.UUID
    name: str
    role: str
    email: str | None = None  # shown to admins and owners only


class MemberList(msgspec.Struct):
    members: list[MemberOut]


class InvitationOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    role: str
    created_at: dt.datetime
    expires_at: dt.datetime
    max_uses: int
    uses: int


class InvitationCreated(InvitationOut, kw_only=True):
    token: str  # shown this once; Boardcast keeps only its hash


class InvitationList(msgspec.Struct):
    invitations: list[InvitationOut]


# ------------------------------------------------------------------ helpers


async def _access(request: web.Request, action: Action) -> tuple[User, uuid.UUID, Grant]:
    user = current_user(request)
    board_id = path_uuid(request, "board_id")
    return user, board_id, await authorize(request.app[MEMBERS], user, board_id, action)


def _member_out(m: MemberRecord, with_email: bool) -> MemberOut:
    return MemberOut(user_id=m.user_id, name=m.name, role=m.role, email=m.email if with_email else None)


def _tx_or_404(tx: MembershipTx | None, board_id: uuid.UUID) -> MembershipTx:
    if tx is None:
        raise not_found("board", board_id)
    return tx


def _push_access(request: web.Request, board_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Tell the board, after the change committed, that ``user_id``'s access changed. It reads
    the access itself when it gets there (in mailbox order), so nothing can fail between the
    commit and the telling, and of two changes the later one always wins."""
    request.app[REGISTRY].tell_if_active(board_id, AccessChanged(user_id=user_id))


async def _change(
    request: web.Request, board_id: uuid.UUID, actor: User, target_id: uuid.UUID, new_role: str | None
) -> MemberRecord | None:
    """Move ``target_id`` to ``new_role`` (None: remove) if ``actor`` may, atomically."""
    async with request.app[MEMBERS].change(board_id) as maybe_tx:
        tx = _tx_or_404(maybe_tx, board_id)
        actor_role = await tx.role_of(actor.id)
        target = await tx.role_of(target_id)
        if target is None:
            raise not_found("member", target_id)
        owners = await tx.owners() if target == "owner" else 0
        check_membership_change(actor_role, target, new_role, owners, self_change=target_id == actor.id)
        if new_role is None:
            await tx.remove(target_id)
            result = None
        else:
            result = await tx.set_role(target_id, new_role)
    log.info(
        "member_changed", board_id=str(board_id), by=str(actor.id), user_id=str(target_id), role=new_role
    )
    _push_access(request, board_id, target_id)
    return result


# ------------------------------------------------------------------ members


async def list_members(request: web.Request) -> web.Response:
    _, board_id, grant = await _access(request, Action.READ)
    members = await request.app[MEMBERS].members(board_id)
    with_email = role_allows(grant.role, Action.ADMIN)  # who manages members sees their emails
    return json_response(MemberList([_member_out(m, with_email) for m in members]))


async def add_member(request: web.Request) -> web.Response:
    body: MemberAdd = await read_body(request, MemberAdd)
    if (body.user_id is None) == (body.email is None):
        raise bad_request("give exactly one of user_id and email")
    user, board_id, _ = await _access(request, Action.ADMIN)
    if body.email is not None:
        # The answer tells whether an address has an account: such look-ups are limited like
        # sign-in attempts (per user), so a board of one's own is no fast oracle for them.
        await request.app[GUARD].admit(request, Tier.AUTH, f"lookup:{user.id}", report=False)
    repo = request.app[MEMBERS]
    target_id = await repo.find_user(user_id=body.user_id, email=body.email)
    if target_id is None:
        raise not_found("user", body.user_id or body.email)
    async with repo.change(board_id) as maybe_tx:
        tx = _tx_or_404(maybe_tx, board_id)
        if await tx.role_of(target_id) is not None:
            raise BoardcastError(ErrorCode.CONFLICT, "already a member; change their role instead")
        check_membership_change(await tx.role_of(user.id), None, body.role, 0, self_change=False)
        added = await tx.add(target_id, body.role)
    log.info("member_added", board_id=str(board_id), by=str(user.id), user_id=str(target_id), role=body.role)
    _push_access(request, board_id, target_id)
    return json_response(_member_out(added, True), 201)


async def patch_member(request: web.Request) -> web.Response:
    body: MemberPatch = await read_body(request, MemberPatch)
    user, board_id, _ = await _access(request, Action.ADMIN)
    changed = await _change(request, board_id, user, path_uuid(request, "user_id"), body.role)
    assert changed is not None
    return json_response(_member_out(changed, True))


async def remove_member(request: web.Request) -> web.Response:
    target_id = path_uuid(request, "user_id")
    user = current_user(request)
    # Anyone may remove themselves (leave); removing others is admin work.
    user, board_id, _ = await _access(request, Action.READ if target_id == user.id else Action.ADMIN)
    await _change(request, board_id, user, target_id, None)
    return web.Response(status=204)


async def leave(request: web.Request) -> web.Response:
    user, board_id, grant = await _access(request, Action.READ)
    if not grant.member:
        raise not_found("member", user.id)
    await _change(request, board_id, user, user.id, None)
    return web.Response(status=204)


async def transfer(request: web.Request) -> web.Response:
    body: Transfer = await read_body(request, Transfer)
    user, board_id, _ = await _access(request, Action.TRANSFER)
    if body.user_id == user.id:
        raise bad_request("you already own this board")
    async with request.app[MEMBERS].change(board_id) as maybe_tx:
        tx = _tx_or_404(maybe_tx, board_id)
        role = await tx.role_of(user.id)  # again, under the board's lock
        if role is None or not role_allows(role, Action.TRANSFER):
            raise forbidden(role or "non-member", Action.TRANSFER)
        if await tx.role_of(body.user_id) is None:
            raise not_found("member", body.user_id)
        await tx.set_role(body.user_id, "owner")
        await tx.set_role(user.id, "admin")
    log.info("ownership_transferred", board_id=str(board_id), by=str(user.id), to=str(body.user_id))
    _push_access(request, board_id, body.user_id)
    _push_access(request, board_id, user.id)
    return web.Response(status=204)


# ------------------------------------------------------------------ invitations


def _invitation_out(inv: InvitationRecord) -> InvitationOut:
    return InvitationOut(
        id=inv.id,
        role=inv.role,
        created_at=inv.created_at,
        expires_at=inv.expires_at,
        max_uses=inv.max_uses,
        uses=inv.uses,
    )


async def create_invitation(request: web.Request) -> web.Response:
    body: InvitationCreate = await read_body(request, InvitationCreate)
    user, board_id, grant = await _access(request, Action.ADMIN)
    check_invitation_role(grant.role, body.role)
    token, digest = new_secret_token(INVITATION_PREFIX)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=body.expires_in_s)
    inv = await request.app[MEMBERS].create_invitation(
        board_id, digest, body.role, user.id, expires, body.max_uses
    )
    log.info("invitation_created", board_id=str(board_id), by=str(user.id), invitation_id=str(inv.id))
    out = _invitation_out(inv)
    return json_response(InvitationCreated(**msgspec.structs.asdict(out), token=token), 201)


async def list_invitations(request: web.Request) -> web.Response:
    _, board_id, _ = await _access(request, Action.ADMIN)
    invitations = await request.app[MEMBERS].invitations(board_id)
    return json_response(InvitationList([_invitation_out(i) for i in invitations]))


async def revoke_invitation(request: web.Request) -> web.Response:
    user, board_id, _ = await _access(request, Action.ADMIN)
    inv_id = path_uuid(request, "invitation_id")
    if not await request.app[MEMBERS].revoke_invitation(board_id, inv_id):
        raise not_found("invitation", inv_id)
    log.info("invitation_revoked", board_id=str(board_id), by=str(user.id), invitation_id=str(inv_id))
    return web.Response(status=204)


def _gone(reason: str) -> BoardcastError:
    return BoardcastError(ErrorCode.GONE, reason)


async def accept_invitation(request: web.Request) -> web.Response:
    body: InvitationAccept = await read_body(request, InvitationAccept)
    user = current_user(request)
    repo = request.app[MEMBERS]
    inv = await repo.find_invitation(token_hash(body.token))
    if inv is None:
        raise BoardcastError(ErrorCode.NOT_FOUND, "invitation not found")
    if inv.expires_at <= dt.datetime.now(dt.UTC):
        raise _gone("invitation expired")
    # Whether uses are left is decided in the transaction, and only when the invitation is
    # used: someone already a member (at that role or above) uses nothing, whatever is left.
    async with repo.change(inv.board_id) as maybe_tx:
        if maybe_tx is None:
            raise BoardcastError(ErrorCode.NOT_FOUND, "invitation not found")
        tx = maybe_tx
        current = await tx.role_of(user.id)
        role = current
        if current is None or ROLES.index(inv.role) < ROLES.index(current):
            try:
                await tx.use_invitation(inv.id)
            except InvitationGone as e:
                raise _gone(e.reason) from None
            role = inv.role
            if current is None:
                await tx.add(user.id, inv.role)
            else:
                await tx.set_role(user.id, inv.role)
    assert role is not None
    if role != current:
        log.info("invitation_accepted", board_id=str(inv.board_id), user_id=str(user.id), role=role)
        _push_access(request, inv.board_id, user.id)
    info: BoardInfo | None = await repo.board_info(inv.board_id, role)
    if info is None:
        raise BoardcastError(ErrorCode.NOT_FOUND, "invitation not found")
    return json_response(info)


_B = "/api/v1/boards/{board_id}"
ROUTES: list[Route] = [
    Route("GET", f"{_B}/members", list_members, "The board's members", response=MemberList),
    Route(
        "POST", f"{_B}/members", add_member, "Add a member (admin)", MemberAdd, MemberOut, 201, errors=(409,)
    ),
    Route(
        "PATCH",
        f"{_B}/members/{{user_id}}",
        patch_member,
        "Change a member's role (admin)",
        MemberPatch,
        MemberOut,
        errors=(409,),
    ),
    Route(
        "DELETE",
        f"{_B}/members/{{user_id}}",
        remove_member,
        "Remove a member (admin) or yourself",
        status=204,
        errors=(409,),
    ),
    Route("POST", f"{_B}/leave", leave, "Leave the board", status=204, errors=(409,)),
    Route("POST", f"{_B}/transfer", transfer, "Hand ownership to a member (owner)", Transfer, status=204),
    Route(
        "POST",
        f"{_B}/invitations",
        create_invitation,
        "Create an invitation link token (admin)",
        InvitationCreate,
        InvitationCreated,
        201,
    ),
    Route("GET", f"{_B}/invitations", list_invitations, "Open invitations (admin)", response=InvitationList),
    Route(
        "DELETE",
        f"{_B}/invitations/{{invitation_id}}",
        revoke_invitation,
        "Revoke an invitation (admin)",
        status=204,
    ),
    Route(
        "POST",
        "/api/v1/invitations/accept",
        accept_invitation,
        "Join a board with an invitation token",
        InvitationAccept,
        BoardInfo,
        errors=(404, 410),
    ),
]
