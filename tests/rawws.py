"""A raw-socket WebSocket client for tests that must send what real clients never do:
unmasked frames, invalid UTF-8, bytes glued to the upgrade request."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from urllib.parse import urlsplit


def frame(opcode: int, payload: bytes, *, masked: bool = True, fin: bool = True) -> bytes:
    """One RFC 6455 frame, masked with a random key unless ``masked`` is false."""
    n = len(payload)
    head = bytes(((0x80 if fin else 0) | opcode,))
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes((bit | n,))
    elif n < 0x10000:
        head += bytes((bit | 126,)) + struct.pack("!H", n)
    else:
        head += bytes((bit | 127,)) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


TEXT, BINARY, CLOSE, PING = 0x1, 0x2, 0x8, 0x9


class RawWs:
    """A WebSocket connection over a plain TCP stream, frames read one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, ws_url: str, protocol: str, after_request: bytes = b"") -> RawWs:
        """Perform the upgrade; ``after_request`` is written in the same write as the request
        (before the server's 101)."""
        url = urlsplit(ws_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
        ).encode()
        writer.write(request + after_request)
        status = await reader.readuntil(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101"), status
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload). Server frames are unmasked."""
        b0, b1 = await self.reader.readexactly(2)
        assert not b1 & 0x80, "the server masked a frame"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def recv_until_close(self) -> tuple[list[tuple[int, bytes]], int]:
        """Every data frame until the server's close frame, and the close code."""
        frames = []
        while True:
            op, payload = await self.recv()
            if op == CLOSE:
                return frames, struct.unpack("!H", payload[:2])[0]
            frames.append((op, payload))

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass
