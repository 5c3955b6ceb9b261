"""``boardcast watch BOARD_ID``: follow a board live, one readable line per message.

A small client of the server's own WebSocket protocol (the JSON subprotocol, as a browser
would speak it), for the README's tour and for looking at a board while developing. It only
reads: it joins, prints what arrives, and leaves when interrupted.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

import aiohttp

DEFAULT_URL = "ws://127.0.0.1:8080/ws"
SUBPROTOCOL = "boardcast.v1.json"


class WatchError(Exception):
    """The watch could not start or ended abnormally; the message is the one line to print."""


def _short(ident: object) -> str:
    return str(ident)[:8]


class Printer:
    """Turns server messages into lines; remembers names (user ids, columns) to show them."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.users: dict[str, str] = {}
        self.columns: dict[str, str] = {}
        self.cards: dict[str, str] = {}
        self.conn_id: str | None = None  # our own connection, not news in presence

    def on_welcome(self, msg: dict[str, Any]) -> None:
        self.conn_id = msg.get("conn_id")

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        handler: Callable[[dict[str, Any]], None] | None = getattr(self, f"on_{kind}", None)
        if handler is not None:
            handler(msg)

    def on_joined(self, msg: dict[str, Any]) -> None:
        for viewer in msg.get("viewers", []):
            self.users[viewer["user_id"]] = viewer.get("name") or _short(viewer["user_id"])
        snap = msg.get("snapshot")
        if snap is not None:
            self.columns.update((col["id"], col["title"]) for col in snap.get("columns", []))
            self.cards.update((card["id"], card["title"]) for card in snap.get("cards", []))
            self.line(
                f"joined {snap.get('title', '')!r} at seq {msg['seq']}: {len(snap.get('columns', []))} "
                f"columns, {len(snap.get('cards', []))} cards, {len(self.users)} viewing"
            )
        else:
            self.line(f"joined at seq {msg['seq']}")
        for ev in msg.get("events", []):
            self.on_event(ev)

    def on_event(self, msg: dict[str, Any]) -> None:
        ev: dict[str, Any] = msg.get("event", {})
        kind = str(ev.get("kind", "?"))
        author = self.users.get(msg.get("author", ""), _short(msg.get("author", "?")))
        self.line(f"#{msg.get('seq')} {author} {kind} {self.summary(ev)}".rstrip())

    def summary(self, ev: dict[str, Any]) -> str:
        """The event's object by name, then what changed: `"Write the README" in Todo`."""
        kind = str(ev.get("kind", ""))
        if "card" in ev:  # card.created
            card = ev["card"]
            self.cards[card["id"]] = card["title"]
            return f"{json.dumps(card['title'], ensure_ascii=False)} in {self._column(card['column_id'])}"
        if "column" in ev:  # column.created
            column = ev["column"]
            self.columns[column["id"]] = column["title"]
            return json.dumps(column["title"], ensure_ascii=False)
        parts: list[str] = []
        if "card_id" in ev:
            parts.append(self._card(ev["card_id"]))
        elif "column_id" in ev:
            parts.append(self._column(ev["column_id"]))
        if kind == "card.moved":
            parts.append(f"to {self._column(ev['column_id'])}")
        changed = [k for k in ("title", "description") if k in ev]
        if changed:
            parts.append(", ".join(f"{k}={json.dumps(ev[k], ensure_ascii=False)[:40]}" for k in changed))
        if ev.get("card_ids"):
            parts.append(f"with {len(ev['card_ids'])} cards")
        if "title" in ev:  # the new name from now on
            names = self.cards if "card_id" in ev else self.columns if "column_id" in ev else {}
            names[ev.get("card_id") or ev.get("column_id") or ""] = ev["title"]
        return " ".join(parts)

    def _column(self, column_id: str) -> str:
        name = self.columns.get(column_id)
        return json.dumps(name, ensure_ascii=False) if name is not None else f"column {_short(column_id)}"

    def _card(self, card_id: str) -> str:
        name = self.cards.get(card_id)
        return json.dumps(name, ensure_ascii=False) if name is not None else f"card {_short(card_id)}"

    def on_presence(self, msg: dict[str, Any]) -> None:
        for who in msg.get("joined", []):
            if who.get("conn_id") == self.conn_id:
                continue
            name = who.get("name") or _short(who["user_id"])
            self.users[who["user_id"]] = name
            self.line(f"+ {name} is viewing")
        for who in msg.get("left", []):
            self.line(f"- {self.users.get(who['user_id'], _short(who['user_id']))} stopped viewing")

    def on_left(self, msg: dict[str, Any]) -> None:
        raise WatchError(f"left the board: {msg.get('reason')}")

    def on_error(self, msg: dict[str, Any]) -> None:
        raise WatchError(f"refused: {msg.get('code')}: {msg.get('message')}")


async def watch(board_id: str, token: str | None, url: str, out: TextIO = sys.stdout) -> None:
    """Join ``board_id`` and print until the connection ends; raises :class:`WatchError`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    printer = Printer(out)
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, protocols=[SUBPROTOCOL], headers=headers, heartbeat=None)
        except aiohttp.WSServerHandshakeError as e:
            hint = "; pass --token (or set BOARDCAST_TOKEN)" if e.status == 401 else ""
            raise WatchError(f"{url} refused the connection: {e.status} {e.message}{hint}") from None
        except aiohttp.ClientError as e:
            raise WatchError(f"cannot connect to {url} ({e}); is `boardcast serve` running?") from None
        async with ws:
            await ws.send_json({"type": "join", "rid": "watch-join", "board_id": board_id})
            while True:
                frame = await ws.receive()
                if frame.type is aiohttp.WSMsgType.TEXT:
                    data = json.loads(frame.data)
                    for msg in data if isinstance(data, list) else [data]:
                        printer.message(msg)
                elif frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
                    raise WatchError(f"the server closed the connection: {ws.close_code} {frame.extra or ''}")
                elif frame.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    raise WatchError(f"the connection ended: {ws.exception() or ws.close_code}")


def run_watch(board_id: str, token: str | None, url: str) -> int:
    try:
        asyncio.run(watch(board_id, token, url))
    except WatchError as e:
        print(f"boardcast watch: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
