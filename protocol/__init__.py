"""Boardcast wire types and codecs: pure, no I/O."""

from protocol import commands, messages, model
from protocol.codec import CODECS, JSON, MSGPACK, SUBPROTOCOLS, Codec, FrameError
from protocol.errors import BoardcastError, CloseCode, ErrorCode

__all__ = [
    "CODECS",
    "JSON",
    "MSGPACK",
    "SUBPROTOCOLS",
    "BoardcastError",
    "CloseCode",
    "Codec",
    "ErrorCode",
    "FrameError",
    "commands",
    "messages",
    "model",
]
