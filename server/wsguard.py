"""RFC 6455 rules that aiohttp's WebSocket reader does not enforce on a server.

Section 5.1: "The server MUST close the connection upon receiving a frame that is not
masked" (close code 1002). aiohttp's reader serves clients and servers alike and unmasks
whatever arrives, masked or not, and it offers no option for this. Its parser is compiled
(Cython), so it cannot be subclassed at the point where it reads the mask bit.

What is done instead: :class:`StrictWebSocketResponse` puts a small protocol in front of
aiohttp's connection handler on the socket's transport (``transport.set_protocol``, public
asyncio API). :class:`_MaskGuard` follows the frame boundaries of the bytes the client sends
(a frame header is 2-14 bytes; the payload is skipped without being looked at), checks the
mask bit of every frame header and passes the bytes on unchanged. At the first unmasked frame
it passes on only the bytes before it and fails the connection's message queue with aiohttp's
own ``WebSocketError(1002)``, exactly as aiohttp reports its own protocol errors: the
application reads the error, aiohttp closes with 1002, and the unmasked frame is never parsed.

The cost is one Python call per socket read plus a few operations per frame header.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WebSocketError, WSCloseCode, web
from aiohttp.web_request import BaseRequest

UNMASKED = "unmasked client frame (RFC 6455 5.1)"


class StrictWebSocketResponse(web.WebSocketResponse):
    """A :class:`aiohttp.web.WebSocketResponse` that refuses unmasked client frames (1002)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._guard: _MaskGuard | None = None
        # Frames that arrived with the upgrade request itself (before the 101 was sent) are
        # parsed by aiohttp as it starts; if one of them was unmasked, the connection's reader
        # must stop before handling any frame.
        self.refused_early = False

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: Any) -> None:
        # The one aiohttp hook that runs while the upgrade completes, before any frame is
        # read. The bytes aiohttp already holds (sent with the upgrade request) are checked
        # first so that the guard starts at a frame boundary.
        handler = request.protocol
        transport = request.transport
        early: bytes = getattr(handler, "_message_tail", b"")
        super()._post_start(request, protocol, writer)
        if transport is None or handler is None:
            return
        guard = _MaskGuard(handler, self._fail)
        if early and guard.check(early) is not None:
            self.refused_early = True
            self._fail()
            return
        self._guard = guard
        transport.set_protocol(guard)

    def _fail(self) -> None:
        # aiohttp's reader reports its own protocol errors the same way (set_exception on
        # the message queue); receive() then closes with the error's code.
        reader = self._reader
        if reader is not None:
            reader.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, UNMASKED))


class _MaskGuard(asyncio.Protocol):
    """Sits between the transport and aiohttp's handler; see the module docstring."""

    __slots__ = ("_fail", "_failed", "_handler", "_head", "_skip")

    def __init__(self, handler: Any, fail: Any) -> None:
        self._handler = handler
        self._fail = fail
        self._failed = False
        self._head = b""  # the start of a frame header split across reads
        self._skip = 0  # payload bytes of the current frame still to come

    def check(self, data: bytes) -> int | None:
        """Follow ``data`` (the next bytes from the client); the offset in it where an
        unmasked frame starts, or None if every frame header seen so far was masked."""
        pos, n = 0, len(data)
        skip, head = self._skip, self._head
        while True:
            if skip:
                if n - pos <= skip:
                    self._skip, self._head = skip - (n - pos), b""
                    return None
                pos += skip
                skip = 0
            start = pos - len(head)  # where this header began (negative: in an earlier read)
            buf = head + data[pos : pos + 14] if head else data[pos : pos + 14]
            if len(buf) < 2:
                self._skip, self._head = 0, buf
                return None
            second = buf[1]
            if not second & 0x80:
                return max(start, 0)
            length = second & 0x7F
            size = 6 if length < 126 else 8 if length == 126 else 14  # with the 4 mask bytes
            if len(buf) < size:
                self._skip, self._head = 0, buf
                return None
            if length == 126:
                length = int.from_bytes(buf[2:4], "big")
            elif length == 127:
                length = int.from_bytes(buf[2:10], "big")
            pos = start + size
            head = b""
            skip = length
            if pos >= n and not skip:
                self._skip, self._head = 0, b""
                return None

    # ------------------------------------------------------------------ asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return
        bad = self.check(data)
        if bad is None:
            self._handler.data_received(data)
            return
        self._failed = True
        if bad:
            self._handler.data_received(data[:bad])
        self._fail()

    def connection_lost(self, exc: Exception | None) -> None:
        self._handler.connection_lost(exc)

    def eof_received(self) -> bool | None:
        result: bool | None = self._handler.eof_received()
        return result

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()
