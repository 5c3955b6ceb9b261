"""Error codes shared by the WebSocket protocol and the REST API.

Every refusal anywhere in Boardcast is a :class:`BoardcastError` carrying one of these
codes; the WebSocket layer turns it into an ``error`` frame naming the request id and the
REST layer into ``{"error": {...}}`` with the status below.
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorCode(enum.StrEnum):
    BAD_FRAME = "bad_frame"  # not decodable msgpack/JSON
    BAD_REQUEST = "bad_request"  # decodable, but wrong type, field or value
    UNKNOWN_TYPE = "unknown_type"  # a message or op type this server does not know
    UNAUTHORIZED = "unauthorized"  # no credentials, or bad ones
    TOKEN_EXPIRED = "token_expired"  # the credentials were good but have expired: refresh
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    NOT_JOINED = "not_joined"  # a board command on a connection that has not joined it
    CONFLICT = "conflict"  # a request id reused for a different command, a stale move...
    GONE = "gone"  # a deleted board (told to its former members), an invitation used up or revoked
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"  # the commit failed: nothing was applied, retry
    TIMEOUT = "timeout"
    INTERNAL = "internal"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_FRAME: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_TYPE: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.NOT_JOINED: 409,
    ErrorCode.CONFLICT: 409,
    ErrorCode.GONE: 410,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.INTERNAL: 500,
}


class BoardcastError(Exception):
    """A refusal with a stable code; safe to show to the client."""

    def __init__(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


def not_found(what: str, ident: object) -> BoardcastError:
    return BoardcastError(ErrorCode.NOT_FOUND, f"{what} not found", {what: str(ident)})


def bad_request(message: str, **details: Any) -> BoardcastError:
    return BoardcastError(ErrorCode.BAD_REQUEST, message, details or None)


class CloseCode(enum.IntEnum):
    """WebSocket close codes Boardcast uses (documented in docs/PROTOCOL.md)."""

    GOING_AWAY = 1001  # server shutting down: reconnect and resume
    PROTOCOL_ERROR = 1002  # a frame breaking RFC 6455 (unmasked, reserved bits, bad opcode...)
    INVALID_TEXT = 1007  # a text frame that is not valid UTF-8
    MESSAGE_TOO_BIG = 1009  # a frame over max_frame_bytes
    SLOW_CONSUMER = 4000  # outbound queue overflowed: reconnect and resume from last seq
    IDLE_TIMEOUT = 4001  # no frame and no pong within the idle timeout
    UNSUPPORTED_PROTOCOL = 4002  # no boardcast.v1.* subprotocol offered
    TOKEN_EXPIRED = 4003  # the connection's token expired: reconnect with a fresh one and resume
    CREDENTIALS_REVOKED = 4004  # logged out, session revoked or API token revoked: sign in again
