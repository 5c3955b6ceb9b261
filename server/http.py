"""REST plumbing shared by every route module: the route record, JSON in and out, errors."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
from aiohttp import web

from protocol.errors import BoardcastError, ErrorCode, bad_request, not_found
from protocol.model import CanonicalUUID, dec_hook
from server.guard import Tier

# A header value: visible ASCII, with spaces only inside (HTTP strips them at the ends). The same
# pattern is in /openapi.json, in a dialect Python and ECMA-262 read alike.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,62}[\x21-\x7e])?$"
IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A request body: unknown fields are refused, not ignored. ``rules`` are the JSON Schema
    keywords of what the handler checks across fields (msgspec checks each field alone), for
    /openapi.json."""

    rules: ClassVar[dict[str, Any]] = {}


# Each rule is one ``not``: generators of clients ignore it, where an ``anyOf`` or ``oneOf``
# beside the properties would turn the body into a union of partial types.


def _given(name: str) -> dict[str, Any]:
    # Present and not null: every field these rules name is a string (or null) in the schema.
    return {"required": [name], "properties": {name: {"type": "string"}}}


def _none_given(*names: str) -> dict[str, Any]:
    return {"properties": {n: {"type": "null"} for n in names}}


def at_most_one(a: str, b: str) -> dict[str, Any]:
    return {"not": {"allOf": [_given(a), _given(b)]}}


def exactly_one(a: str, b: str) -> dict[str, Any]:
    return {"not": {"anyOf": [_none_given(a, b), {"allOf": [_given(a), _given(b)]}]}}


def at_least_one(*names: str) -> dict[str, Any]:
    return {"not": _none_given(*names)}


class ErrorDetail(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: ErrorCode
    message: str
    request_id: str
    details: dict[str, Any] | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


_ENCODER = msgspec.json.Encoder()


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_ENCODER.encode(value), status=status, content_type="application/json")


async def read_body(request: web.Request, kind: type[Any]) -> Any:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw, type=kind, dec_hook=dec_hook)
    except msgspec.ValidationError as e:
        raise bad_request(str(e)) from e
    except msgspec.DecodeError as e:
        raise bad_request(f"malformed JSON: {e}") from e
    except RecursionError as e:
        # msgspec stops at the interpreter's recursion limit (several hundred levels of
        # arrays or maps); no valid body nests more than a few.
        raise bad_request("malformed JSON: nested too deeply") from e


class UnsupportedMediaType(BoardcastError):
    """415: a body refused for its declared media type. The code is ``bad_request``, as for a
    wrong method (405): the status says which."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, message, details)

    @property
    def http_status(self) -> int:
        return 415


def require_json(request: web.Request, what: str) -> None:
    """Refuse (415) a request not sent as ``Content-Type: application/json``. Other sites'
    pages can post text/plain, form-encoded and multipart bodies with the visitor's cookies,
    but not JSON: that needs a CORS preflight, which Boardcast does not grant."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"{what} must be sent with Content-Type: application/json", {"reason": "content_type"}
        )


def parse_uuid(text: str) -> uuid.UUID | None:
    """``text`` as a UUID if it is in canonical form (lower-case, hyphenated, 36 characters:
    the only form Boardcast sends and accepts), else None. ``uuid.UUID()`` alone would also
    take upper-case, braces, ``urn:uuid:`` and 32 hex digits."""
    try:
        return dec_hook(CanonicalUUID, text)  # type: ignore[no-any-return]
    except ValueError:
        return None


def path_uuid(request: web.Request, name: str) -> uuid.UUID:
    """A UUID in the path; any other text names no such thing (404)."""
    value = parse_uuid(request.match_info[name])
    if value is None:
        raise not_found(name.removesuffix("_id"), request.match_info[name])
    return value


@dataclass(frozen=True, slots=True)
class QueryParam:
    """An optional query parameter other than a UUID, for /openapi.json."""

    name: str
    description: str
    schema: tuple[tuple[str, Any], ...]  # JSON Schema keywords, as pairs


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    body: type[Any] | None = None
    response: type[Any] | None = None
    status: int = 200
    public: bool = False  # served without credentials (sign-up, sign-in)
    tier: Tier | None = None  # rate limit tier; None: reads for GET, writes otherwise
    # What /openapi.json says beyond the types (server/openapi.py turns these into the document).
    idempotency_key: bool = False  # a board command: takes the Idempotency-Key header
    body_optional: bool = False  # the body may be left out (the cookie stands in for it)
    query: tuple[str, ...] = ()  # optional UUID query parameters
    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()  # optional query parameters: (name, values)
    params: tuple[QueryParam, ...] = ()  # other optional query parameters
    int_query: tuple[tuple[str, int, int], ...] = ()  # optional integer ones: (name, minimum, maximum)
    errors: tuple[int, ...] = ()  # statuses of this route's own refusals (409, 410, 415...)

    @property
    def rate_tier(self) -> Tier:
        return self.tier or Tier.for_method(self.method)


def query_int(request: web.Request, name: str, low: int, high: int, default: int | None = None) -> int | None:
    """An optional integer query parameter within [low, high]; anything else is 400."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not low <= int(raw) <= high:
        raise bad_request(f"{name} must be an integer from {low} to {high}")
    return int(raw)
