"""Signed, expiring download URLs that this server serves itself, for stores that cannot sign
URLs of their own (the local store).

A URL is ``/api/v1/blobs/<payload>.<signature>``: the payload names the blob key, the
Content-Type and file name to serve it with and when the URL expires; the signature is
HMAC-SHA256 over the payload with a key derived from ``BOARDCAST_SECRET``. Whoever holds the URL
may fetch the blob until it expires, as with an S3 presigned URL: the access check happened when
the URL was handed out (server/api/attachments.py). A changed byte anywhere is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Annotated

import msgspec
import structlog
from aiohttp import web

from protocol.errors import BoardcastError, ErrorCode
from protocol.model import dec_hook
from server.http import Route
from server.keys import BLOBS, METRICS, URL_SIGNER
from storage.blobs import BadKey, BlobError, BlobNotFound, check_key
from storage.blobs.media import content_disposition

log = structlog.get_logger(__name__)
PATH = "/api/v1/blobs"
_CONTEXT = b"boardcast signed blob URL v1"
_MAX_TOKEN_CHARS = 2048


class SignedBlob(msgspec.Struct, forbid_unknown_fields=True):
    k: Annotated[str, msgspec.Meta(max_length=512)]  # blob key
    t: Annotated[str, msgspec.Meta(max_length=255)]  # Content-Type
    n: Annotated[str, msgspec.Meta(max_length=255)]  # file name
    i: bool  # inline (else attachment)
    e: int  # expires, unix seconds


_DECODER = msgspec.json.Decoder(SignedBlob, dec_hook=dec_hook)
_ENCODER = msgspec.json.Encoder()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _refused(reason: str) -> BoardcastError:
    return BoardcastError(
        ErrorCode.FORBIDDEN, "this download link is invalid or has expired", {"reason": reason}
    )


class UrlSigner:
    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), _CONTEXT, hashlib.sha256).digest()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def url(self, key: str, *, content_type: str, filename: str, inline: bool, expires_s: float) -> str:
        """A server-relative URL serving the blob until ``expires_s`` from now."""
        signed = SignedBlob(check_key(key), content_type, filename, inline, int(time.time() + expires_s))
        payload = _b64(_ENCODER.encode(signed))
        return f"{PATH}/{payload}.{self._sign(payload)}"

    def verify(self, token: str, now: float | None = None) -> SignedBlob:
        """What a token grants; 403 if it was not signed here or has expired."""
        payload, dot, signature = token.partition(".")
        if not dot or len(token) > _MAX_TOKEN_CHARS:
            raise _refused("malformed")
        if not hmac.compare_digest(self._sign(payload), signature):
            raise _refused("signature")
        try:
            signed = _DECODER.decode(_unb64(payload))
            check_key(signed.k)
        except (binascii.Error, ValueError, msgspec.DecodeError, BadKey):  # signed by us: never
            raise _refused("malformed") from None
        if signed.e <= (time.time() if now is None else now):
            raise _refused("expired")
        return signed


# ------------------------------------------------------------------ the route

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Should a browser render it after all: no script, no plugins, no requests, its own origin.
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


async def get_blob(request: web.Request) -> web.StreamResponse:
    signed = request.app[URL_SIGNER].verify(request.match_info["token"])
    store, metrics = request.app[BLOBS], request.app[METRICS]
    try:
        async with store.open(signed.k) as blob:
            resp = web.StreamResponse(
                headers={
                    "Content-Type": signed.t,
                    "Content-Disposition": content_disposition(signed.n, inline=signed.i),
                    "Cache-Control": f"private, max-age={max(0, signed.e - int(time.time()))}",
                    **SECURITY_HEADERS,
                }
            )
            resp.content_length = blob.size
            await resp.prepare(request)
            try:
                async for chunk in blob:
                    await resp.write(chunk)
                await resp.write_eof()
            except ConnectionResetError:  # the client went away
                pass
            except BlobError as e:
                # Too late for an error answer: cut the connection, so the client sees a body
                # shorter than its Content-Length rather than a file that looks complete.
                metrics.blob_failures.labels(op="get").inc()
                log.warning("blob_stream_failed", error=repr(e))
                if request.transport is not None:
                    request.transport.close()
            return resp
    except BlobNotFound:
        raise BoardcastError(ErrorCode.NOT_FOUND, "this file no longer exists") from None
    except BlobError as e:
        metrics.blob_failures.labels(op="get").inc()
        raise BoardcastError(ErrorCode.UNAVAILABLE, "the file store cannot be reached; retry") from e


ROUTES: list[Route] = [
    Route(
        "GET",
        f"{PATH}/{{token}}",
        get_blob,
        "Download a file through a signed link (from an attachment's download route)",
        public=True,
        errors=(403, 404),
    ),
]
