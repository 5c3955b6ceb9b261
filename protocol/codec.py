"""The two encodings of one protocol: MessagePack (binary frames) and JSON (text frames).

Encoders and decoders are built once. Outbound messages are encoded once and the same bytes
are sent to every viewer; several waiting messages can be joined into one frame with
:meth:`Codec.batch`, which wraps already-encoded messages in an array without re-encoding.
"""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.errors import BoardcastError, ErrorCode
from protocol.messages import ClientMessage, RidProbe
from protocol.model import dec_hook

MSGPACK_SUBPROTOCOL = "boardcast.v1.msgpack"
JSON_SUBPROTOCOL = "boardcast.v1.json"
SUBPROTOCOLS = (MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL)


class Codec:
    """Encoding of one wire format."""

    def __init__(self, name: str, binary: bool) -> None:
        self.name = name
        self.binary = binary
        if binary:
            self._encoder: msgspec.msgpack.Encoder | msgspec.json.Encoder = msgspec.msgpack.Encoder()
            self._decoder: Any = msgspec.msgpack.Decoder(ClientMessage, dec_hook=dec_hook)
            self._probe: Any = msgspec.msgpack.Decoder(RidProbe)
        else:
            self._encoder = msgspec.json.Encoder()
            self._decoder = msgspec.json.Decoder(ClientMessage, dec_hook=dec_hook)
            self._probe = msgspec.json.Decoder(RidProbe)

    def encode(self, msg: Any) -> bytes:
        return self._encoder.encode(msg)

    def decode(self, data: bytes | str) -> ClientMessage:
        """Decode one client frame, raising :class:`BoardcastError` with the frame's
        request id when it is malformed or invalid."""
        if self.binary and isinstance(data, str):
            # A text frame is JSON's kind of frame: on a MessagePack connection it cannot be a
            # message (its bytes may even parse as some MessagePack value), so it is refused
            # unread. A binary frame on a JSON connection is decoded as JSON: it is bytes
            # either way, and some client libraries send only binary frames.
            raise FrameError(ErrorCode.BAD_FRAME, "text frame on a MessagePack connection", None)
        try:
            return self._decoder.decode(data)  # type: ignore[no-any-return]
        except msgspec.ValidationError as e:
            text = str(e)
            code = ErrorCode.UNKNOWN_TYPE if _is_unknown_tag(text) else ErrorCode.BAD_REQUEST
            try:
                rid = self._rid_of(data)
            except RecursionError:
                raise self._too_deep() from e
            raise FrameError(code, text, rid) from e
        except msgspec.DecodeError as e:
            raise FrameError(ErrorCode.BAD_FRAME, f"malformed {self.name}: {e}", None) from e
        except RecursionError as e:
            raise self._too_deep() from e

    def _too_deep(self) -> FrameError:
        # msgspec reads nested arrays and maps (and skips unknown values) recursively and
        # stops with RecursionError at the interpreter's recursion limit, several hundred
        # levels down, long before the C stack is in danger. No valid message nests more than
        # four levels, so such a frame is as unreadable as malformed input: `bad_frame`, and
        # no rid (looking for it recurses just as deep).
        return FrameError(ErrorCode.BAD_FRAME, f"{self.name} nested too deeply", None)

    def _rid_of(self, data: bytes | str) -> str | None:
        try:
            rid = self._probe.decode(data).rid
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return rid if isinstance(rid, str) and len(rid) <= 64 else None

    def frame(self, encoded: list[bytes]) -> bytes:
        """A complete server-to-client WebSocket frame (RFC 6455, unmasked, final) carrying
        these already-encoded messages: one message alone, several as an array. Built once
        and written as the same bytes to every connection of this encoding."""
        payload = encoded[0] if len(encoded) == 1 else self.batch(encoded)
        n = len(payload)
        first = 0x82 if self.binary else 0x81
        if n < 126:
            head = bytes((first, n))
        elif n < 0x10000:
            head = bytes((first, 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((first, 127)) + n.to_bytes(8, "big")
        return head + payload

    def batch(self, encoded: list[bytes]) -> bytes:
        """One frame holding several already-encoded messages, as an array."""
        n = len(encoded)
        if self.binary:
            if n < 16:
                head = bytes((0x90 | n,))
            elif n < 0x10000:
                head = b"\xdc" + n.to_bytes(2, "big")
            else:
                head = b"\xdd" + n.to_bytes(4, "big")
            return head + b"".join(encoded)
        return b"[" + b",".join(encoded) + b"]"


def _is_unknown_tag(text: str) -> bool:
    return text.startswith("Invalid value") and ("`$.type`" in text or "`$.op.op`" in text)


class FrameError(BoardcastError):
    """A client frame that could not be accepted; carries the frame's request id if any."""

    def __init__(self, code: ErrorCode, message: str, rid: str | None) -> None:
        super().__init__(code, message)
        self.rid = rid


MSGPACK = Codec("msgpack", binary=True)
JSON = Codec("json", binary=False)
CODECS = {MSGPACK_SUBPROTOCOL: MSGPACK, JSON_SUBPROTOCOL: JSON}
