"""The board model against a real server: every new command over the WebSocket in both
encodings and over REST, what a watching client rebuilds from the events equals the REST
snapshot and the board loaded again from PostgreSQL; concurrent checklist moves converge; WIP
limits hold under concurrent moves; refused commands change nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from actors import Execute
from protocol import commands as c
from protocol.model import Attachment
from server.access import DEV_USER_ID
from server.keys import REGISTRY
from tests.conftest import ENCODINGS, RunningServer, create_board, create_column
from tests.modelreplay import ModelCopy, normalised
from tests.wsclient import WsClient

API = "/api/v1/boards"
Connect = Callable[..., Awaitable[WsClient]]


async def rest(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, status: int | None = None
) -> Any:
    async with http.request(method, url, json=body) as r:
        data = await r.json() if r.status != 204 else None
        if status is not None:
            assert r.status == status, (method, url, body, r.status, data)
        return data


async def snapshot(http: aiohttp.ClientSession, base: str, bid: str) -> dict[str, Any]:
    data: dict[str, Any] = await rest(http, "GET", f"{base}{API}/{bid}", status=200)
    return data


async def add_attachment(srv: RunningServer, bid: str, card_id: str, n: int = 1) -> Attachment:
    """What the upload route does once the blob is stored: the board command, from the server."""
    att = Attachment(
        id=uuid.uuid4(),
        card_id=uuid.UUID(card_id),
        name=f"shot{n}.png",
        content_type="image/png",
        size=1234 * n,
        blob_key=f"b/{bid}/{n}",
        thumb_key=f"t/{bid}/{n}",
        created_by=DEV_USER_ID,
        created_at_ms=int(time.time() * 1000),
    )
    await srv.app[REGISTRY].ask(
        uuid.UUID(bid), Execute(author=DEV_USER_ID, rid=None, cmd=c.AddAttachment(attachment=att)), 10
    )
    return att


class Driver:
    """Sends commands on one connection, keeping the ids the events name."""

    def __init__(self, ws: WsClient, bid: str) -> None:
        self.ws, self.bid = ws, bid
        self.kinds: list[str] = []

    async def ok(self, op: dict[str, Any]) -> dict[str, Any]:
        answer = await self.ws.cmd(self.bid, op)
        assert answer["type"] == "ack", (op, answer)
        evs = await self.ws.wait_seq(self.bid, answer["seq"])
        ev = next(e for e in evs if e["seq"] == answer["seq"])["event"]
        self.kinds.append(ev["kind"])
        return ev  # type: ignore[no-any-return]

    async def refused(self, op: dict[str, Any], code: str) -> dict[str, Any]:
        answer = await self.ws.cmd(self.bid, op)
        assert answer["type"] == "error" and answer["code"] == code, (op, answer)
        return answer


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_every_model_command_over_the_websocket_rebuilds_the_same_board_everywhere(
    http, server, start_server, connect, encoding
):
    base = server.base
    bid = (await create_board(http, base))["id"]
    a, b = (
        (await create_column(http, base, bid, "A"))["id"],
        (await create_column(http, base, bid, "B"))["id"],
    )
    watcher = await connect("json" if encoding == "msgpack" else "msgpack")
    joined = await watcher.join(bid)
    copy = ModelCopy(joined["snapshot"])
    ws = await connect(encoding)
    await ws.join(bid)
    d = Driver(ws, bid)
    me = str(DEV_USER_ID)

    card = (await d.ok({"op": "card.create", "column_id": a, "title": "K", "description": "# Markdown"}))[
        "card"
    ]
    k = card["id"]
    other = (await d.ok({"op": "card.create", "column_id": a, "title": "L"}))["card"]["id"]
    await d.ok({"op": "board.configure", "allow_wip_overflow": False})
    col = (await d.ok({"op": "column.configure", "column_id": b, "colour": "#00aa00", "wip_limit": 2}))[
        "column"
    ]
    assert (col["colour"], col["wip_limit"]) == ("#00aa00", 2)
    await d.ok({"op": "column.archive", "column_id": b})
    await d.refused({"op": "card.move", "card_id": other, "column_id": b}, "conflict")
    await d.ok({"op": "column.restore", "column_id": b})
    ev = await d.ok(
        {"op": "card.schedule", "card_id": k, "start_ms": 1_000, "due_ms": 2**53 - 1, "done": True}
    )
    assert (ev["card"]["start_ms"], ev["card"]["due_ms"], ev["card"]["done"]) == (1_000, 2**53 - 1, True)
    assert (await d.ok({"op": "card.assign", "card_id": k, "user_id": me}))["card"]["assignees"] == [me]
    await d.refused({"op": "card.assign", "card_id": k, "user_id": str(uuid.uuid4())}, "bad_request")
    await d.ok({"op": "card.unassign", "card_id": k, "user_id": me})
    await d.ok({"op": "card.assign", "card_id": k, "user_id": me})
    label = (await d.ok({"op": "label.create", "name": "Bug", "colour": "red"}))["label"]["id"]
    await d.ok({"op": "label.update", "label_id": label, "name": "Defect"})
    await d.ok({"op": "card.add_label", "card_id": k, "label_id": label})
    await d.ok({"op": "card.add_label", "card_id": other, "label_id": label})
    await d.ok({"op": "card.remove_label", "card_id": other, "label_id": label})
    spare = (await d.ok({"op": "label.create", "name": "Spare", "colour": "#123abc"}))["label"]["id"]
    await d.ok({"op": "card.add_label", "card_id": other, "label_id": spare})
    ev = await d.ok({"op": "label.delete", "label_id": spare})
    assert [x["id"] for x in ev["cards"]] == [other] and ev["cards"][0]["label_ids"] == []
    field = (
        await d.ok({"op": "field.create", "name": "Prio", "kind": "select", "options": [{"name": "High"}]})
    )["field"]
    high = field["options"][0]["id"]
    low = (await d.ok({"op": "field.add_option", "field_id": field["id"], "name": "Low", "colour": "blue"}))[
        "field"
    ]["options"][1]["id"]
    await d.ok({"op": "field.update", "field_id": field["id"], "name": "Priority"})
    await d.ok({"op": "card.set_field", "card_id": k, "field_id": field["id"], "value": high})
    await d.ok({"op": "card.set_field", "card_id": other, "field_id": field["id"], "value": low})
    ev = await d.ok({"op": "field.remove_option", "field_id": field["id"], "option_id": low})
    assert [x["id"] for x in ev["cards"]] == [other]
    num = (await d.ok({"op": "field.create", "name": "Points", "kind": "number"}))["field"]["id"]
    await d.ok({"op": "card.set_field", "card_id": k, "field_id": num, "value": 3})
    await d.refused({"op": "card.set_field", "card_id": k, "field_id": num, "value": "three"}, "bad_request")
    gone = (await d.ok({"op": "field.create", "name": "Gone", "kind": "checkbox"}))["field"]["id"]
    await d.ok({"op": "card.set_field", "card_id": k, "field_id": gone, "value": True})
    await d.ok({"op": "field.delete", "field_id": gone})
    cl1 = (await d.ok({"op": "checklist.create", "card_id": k, "title": "One"}))["checklist"]["id"]
    cl2 = (await d.ok({"op": "checklist.create", "card_id": k, "title": "Two", "before": cl1}))["checklist"][
        "id"
    ]
    await d.ok({"op": "checklist.rename", "checklist_id": cl2, "title": "Second"})
    await d.ok({"op": "checklist.move", "checklist_id": cl2, "after": cl1})
    i1 = (
        await d.ok({"op": "item.create", "checklist_id": cl1, "text": "a", "assignee_id": me, "due_ms": 5})
    )["item"]["id"]
    i2 = (await d.ok({"op": "item.create", "checklist_id": cl1, "text": "b", "before": i1}))["item"]["id"]
    await d.ok({"op": "item.update", "item_id": i2, "done": True, "text": "b!"})
    await d.ok({"op": "item.move", "item_id": i1, "checklist_id": cl2})
    await d.ok({"op": "item.delete", "item_id": i2})
    cl3 = (await d.ok({"op": "checklist.create", "card_id": other, "title": "Three"}))["checklist"]["id"]
    await d.ok({"op": "item.create", "checklist_id": cl3, "text": "c"})
    await d.ok({"op": "checklist.delete", "checklist_id": cl3})
    cm = (await d.ok({"op": "comment.create", "card_id": k, "body": "ping @Developer"}))["comment"]
    assert cm["mentions"] == [me] and cm["author_id"] == me
    await d.ok({"op": "comment.edit", "comment_id": cm["id"], "body": "edited"})
    second = (await d.ok({"op": "comment.create", "card_id": k, "body": "another"}))["comment"]["id"]
    await d.ok({"op": "comment.delete", "comment_id": second})

    # attachments: the server adds them; clients may not
    forged = {"id": str(uuid.uuid4()), "card_id": k, "name": "x", "content_type": "text/plain", "size": 1}
    forged |= {"blob_key": "k", "created_by": me, "created_at_ms": 1}
    err = await d.refused({"op": "attachment.add", "attachment": forged}, "forbidden")
    assert err["details"]["reason"] == "server_only"
    att = await add_attachment(server, bid, k)
    await d.ok({"op": "card.set_cover", "card_id": k, "attachment_id": str(att.id)})
    att2 = await add_attachment(server, bid, k, 2)
    ev = await d.ok({"op": "attachment.delete", "attachment_id": str(att.id)})
    assert (ev["blob_key"], ev["thumb_key"], ev["card"]["cover_id"]) == (att.blob_key, att.thumb_key, None)
    await d.ok({"op": "card.archive", "card_id": other})
    await d.ok({"op": "card.restore", "card_id": other})
    third = (await d.ok({"op": "card.create", "column_id": b, "title": "doomed"}))["card"]["id"]
    await add_attachment(server, bid, third, 3)
    ev = await d.ok({"op": "card.delete", "card_id": third})
    assert ev["blob_keys"] == [f"b/{bid}/3", f"t/{bid}/3"]

    # the watcher, the REST snapshot and the board as PostgreSQL holds it agree
    seq = (await snapshot(http, base, bid))["seq"]
    for msg in await watcher.wait_seq(bid, seq):
        copy.apply(msg)
    assert copy.seq == seq
    now = normalised(await snapshot(http, base, bid))
    assert copy.normalised() == now
    assert [x["id"] for x in now["attachments"]] == [str(att2.id)]
    assert len(now["comments"]) == 1 and len(now["checklists"]) == 2 and len(now["items"]) == 1
    other_node = await start_server()  # a fresh activation, loaded from PostgreSQL
    assert normalised(await snapshot(http, other_node.base, bid)) == now


async def test_every_model_command_over_rest(http, server):
    base = server.base
    bid = (await create_board(http, base))["id"]
    B = f"{base}{API}/{bid}"
    a, b = (
        (await create_column(http, base, bid, "A"))["id"],
        (await create_column(http, base, bid, "B"))["id"],
    )
    k = (await rest(http, "POST", f"{B}/cards", {"column_id": a, "title": "K"}, 201))["id"]
    me = str(DEV_USER_ID)

    await rest(http, "PUT", f"{B}/settings", {"allow_wip_overflow": True}, 204)
    col = await rest(http, "PATCH", f"{B}/columns/{b}/settings", {"wip_limit": 1, "colour": "sky_light"}, 200)
    assert (col["wip_limit"], col["colour"]) == (1, "sky_light")
    assert (await rest(http, "POST", f"{B}/columns/{b}/archive", None, 200))["archived"] is True
    assert (await rest(http, "POST", f"{B}/columns/{b}/restore", None, 200))["archived"] is False
    card = await rest(http, "PATCH", f"{B}/cards/{k}/schedule", {"due_ms": 99, "done": True}, 200)
    assert (card["due_ms"], card["done"], card["start_ms"]) == (99, True, None)
    assert (await rest(http, "POST", f"{B}/cards/{k}/assignees", {"user_id": me}, 200))["assignees"] == [me]
    assert (await rest(http, "DELETE", f"{B}/cards/{k}/assignees/{me}", None, 200))["assignees"] == []
    label = await rest(http, "POST", f"{B}/labels", {"name": "Bug", "colour": "red"}, 201)
    assert (await rest(http, "PATCH", f"{B}/labels/{label['id']}", {"colour": "#ff0000"}, 200))[
        "colour"
    ] == "#ff0000"
    assert (await rest(http, "GET", f"{B}/labels", None, 200))["labels"][0]["colour"] == "#ff0000"
    put = await rest(http, "PUT", f"{B}/cards/{k}/labels/{label['id']}", None, 200)
    assert put["label_ids"] == [label["id"]]
    assert (await rest(http, "DELETE", f"{B}/cards/{k}/labels/{label['id']}", None, 200))["label_ids"] == []
    await rest(http, "PUT", f"{B}/cards/{k}/labels/{label['id']}", None, 200)
    await rest(http, "DELETE", f"{B}/labels/{label['id']}", None, 204)
    assert (await rest(http, "GET", f"{B}/cards/{k}", None, 200))["label_ids"] == []
    field = await rest(http, "POST", f"{B}/fields", {"name": "Prio", "kind": "select"}, 201)
    f = field["id"]
    opt = (await rest(http, "POST", f"{B}/fields/{f}/options", {"name": "High"}, 201))["options"][0]["id"]
    assert (await rest(http, "PATCH", f"{B}/fields/{f}", {"name": "P"}, 200))["name"] == "P"
    assert (await rest(http, "GET", f"{B}/fields", None, 200))["fields"][0]["name"] == "P"
    assert (await rest(http, "PUT", f"{B}/cards/{k}/fields/{f}", {"value": opt}, 200))["fields"] == {f: opt}
    await rest(http, "PUT", f"{B}/cards/{k}/fields/{f}", {"value": 1}, 400)
    await rest(http, "DELETE", f"{B}/fields/{f}/options/{opt}", None, 204)
    assert (await rest(http, "GET", f"{B}/cards/{k}", None, 200))["fields"] == {}
    await rest(http, "DELETE", f"{B}/fields/{f}", None, 204)
    cl = await rest(http, "POST", f"{B}/cards/{k}/checklists", {"title": "One"}, 201)
    cl2 = await rest(http, "POST", f"{B}/cards/{k}/checklists", {"title": "Two", "before": cl["id"]}, 201)
    assert (await rest(http, "PATCH", f"{B}/checklists/{cl['id']}", {"title": "1"}, 200))["title"] == "1"
    moved = await rest(http, "POST", f"{B}/checklists/{cl2['id']}/move", {"after": cl["id"]}, 200)
    assert moved["rank"] > cl["rank"]
    item = await rest(http, "POST", f"{B}/checklists/{cl['id']}/items", {"text": "do", "due_ms": 7}, 201)
    patched = await rest(http, "PATCH", f"{B}/items/{item['id']}", {"done": True, "due_ms": None}, 200)
    assert (patched["done"], patched["due_ms"]) == (True, None)
    assert (await rest(http, "POST", f"{B}/items/{item['id']}/move", {"checklist_id": cl2["id"]}, 200))[
        "checklist_id"
    ] == cl2["id"]
    await rest(http, "DELETE", f"{B}/items/{item['id']}", None, 204)
    await rest(http, "DELETE", f"{B}/checklists/{cl2['id']}", None, 204)
    cm = await rest(http, "POST", f"{B}/cards/{k}/comments", {"body": "hello @developer"}, 201)
    assert cm["mentions"] == [me]
    assert (await rest(http, "PATCH", f"{B}/comments/{cm['id']}", {"body": "bye"}, 200))["edited_at_ms"]
    assert [
        x["body"] for x in (await rest(http, "GET", f"{B}/cards/{k}/comments", None, 200))["comments"]
    ] == ["bye"]
    await rest(http, "DELETE", f"{B}/comments/{cm['id']}", None, 204)
    assert (await rest(http, "POST", f"{B}/cards/{k}/archive", None, 200))["archived"] is True
    assert (await rest(http, "POST", f"{B}/cards/{k}/restore", None, 200))["archived"] is False
    att = await add_attachment(server, bid, k)
    assert (await rest(http, "PUT", f"{B}/cards/{k}/cover", {"attachment_id": str(att.id)}, 200))["cover_id"]

    # the generic command route: any client command, the answer names its seq and event
    answer = await rest(http, "POST", f"{B}/commands", {"op": {"op": "card.archive", "card_id": k}}, 200)
    assert answer["event"]["kind"] == "card.archived" and answer["event"]["card"]["archived"] is True
    deleted = await rest(
        http, "POST", f"{B}/commands", {"op": {"op": "attachment.delete", "attachment_id": str(att.id)}}, 200
    )
    assert deleted["event"]["blob_key"] == att.blob_key
    forged = {"id": str(uuid.uuid4()), "card_id": k, "name": "x", "content_type": "text/plain", "size": 1}
    forged |= {"blob_key": "k", "created_by": me, "created_at_ms": 1}
    err = await rest(
        http, "POST", f"{B}/commands", {"op": {"op": "attachment.add", "attachment": forged}}, 403
    )
    assert err["error"]["details"]["reason"] == "server_only"
    await rest(http, "POST", f"{B}/commands", {"op": {"op": "nope"}}, 400)

    # the column delete policies over REST
    await rest(http, "DELETE", f"{B}/columns/{a}", None, 409)
    await rest(http, "DELETE", f"{B}/columns/{a}?cards=move", None, 400)
    await rest(http, "DELETE", f"{B}/columns/{a}?cards=sideways", None, 400)
    await rest(http, "DELETE", f"{B}/columns/{a}?cards=move&move_to={b}", None, 204)
    assert (await rest(http, "GET", f"{B}/cards/{k}", None, 200))["column_id"] == b


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_refused_model_commands_change_nothing(http, server, connect, encoding):
    base = server.base
    bid = (await create_board(http, base))["id"]
    a = (await create_column(http, base, bid, "A"))["id"]
    ws = await connect(encoding)
    await ws.join(bid)
    d = Driver(ws, bid)
    k = (await d.ok({"op": "card.create", "column_id": a, "title": "K"}))["card"]["id"]
    cl = (await d.ok({"op": "checklist.create", "card_id": k, "title": "C"}))["checklist"]["id"]
    before = await snapshot(http, base, bid)
    nobody = str(uuid.uuid4())
    for op, code in [
        ({"op": "card.schedule", "card_id": k}, "bad_request"),
        ({"op": "card.schedule", "card_id": k, "start_ms": -1}, "bad_request"),
        ({"op": "card.schedule", "card_id": k, "due_ms": 2**53}, "bad_request"),
        ({"op": "card.schedule", "card_id": k, "start_ms": 5, "due_ms": 4}, "bad_request"),
        ({"op": "column.configure", "column_id": a, "wip_limit": 0}, "bad_request"),
        ({"op": "column.configure", "column_id": a, "colour": "Red!"}, "bad_request"),
        ({"op": "column.restore", "column_id": a}, "conflict"),
        ({"op": "label.create", "name": "", "colour": "red"}, "bad_request"),
        ({"op": "label.delete", "label_id": nobody}, "not_found"),
        ({"op": "field.create", "name": "F", "kind": "colour"}, "bad_request"),
        ({"op": "card.set_field", "card_id": k, "field_id": nobody, "value": 1}, "not_found"),
        ({"op": "checklist.move", "checklist_id": cl, "after": cl}, "bad_request"),
        ({"op": "item.create", "checklist_id": cl, "text": "x", "assignee_id": nobody}, "bad_request"),
        ({"op": "item.move", "item_id": nobody, "checklist_id": cl}, "not_found"),
        ({"op": "comment.create", "card_id": k, "body": "x" * 20_001}, "bad_request"),
        ({"op": "comment.edit", "comment_id": nobody, "body": "x"}, "not_found"),
        ({"op": "card.set_cover", "card_id": k, "attachment_id": nobody}, "not_found"),
        ({"op": "column.delete", "column_id": a}, "conflict"),
        ({"op": "column.delete", "column_id": a, "cards": "move", "move_to": nobody}, "not_found"),
        ({"op": "card.assign", "card_id": k, "user_id": "NOT-A-UUID"}, "bad_request"),
    ]:
        await d.refused(op, code)
    assert await snapshot(http, base, bid) == before


async def test_concurrent_checklist_moves_converge(http, server, connect):
    base = server.base
    bid = (await create_board(http, base))["id"]
    a = (await create_column(http, base, bid, "A"))["id"]
    setup = await connect("json")
    await setup.join(bid)
    d = Driver(setup, bid)
    k = (await d.ok({"op": "card.create", "column_id": a, "title": "K"}))["card"]["id"]
    lists = [
        (await d.ok({"op": "checklist.create", "card_id": k, "title": f"L{n}"}))["checklist"]["id"]
        for n in range(3)
    ]
    items = [
        (await d.ok({"op": "item.create", "checklist_id": lists[n % 3], "text": f"i{n}"}))["item"]["id"]
        for n in range(12)
    ]
    clients = [await connect(enc) for enc in ("msgpack", "json", "msgpack")]
    copies = []
    for cl in clients:
        copies.append(ModelCopy((await cl.join(bid))["snapshot"]))

    async def mover(cl: WsClient, n: int) -> list[str]:
        rids = []
        for step in range(40):
            item = items[(n * 7 + step * 5) % len(items)]
            target = lists[(n + step) % 3]
            op: dict[str, Any] = {"op": "item.move", "item_id": item, "checklist_id": target}
            if step % 3 == 1:
                op["before"] = items[(step * 11 + n) % len(items)]  # may be elsewhere: refused
            rids.append(await cl.send_cmd(bid, op))
        return rids

    sent = await asyncio.gather(*(mover(cl, n) for n, cl in enumerate(clients)))
    answers = [await cl.wait_answers(rids) for cl, rids in zip(clients, sent, strict=True)]
    acked = sum(m["type"] == "ack" for ans in answers for m in ans.values())
    assert acked > 0
    assert all(m["type"] == "ack" or m["code"] in ("bad_request",) for ans in answers for m in ans.values())
    seq = (await snapshot(http, base, bid))["seq"]
    final = normalised(await snapshot(http, base, bid))
    for cl, copy in zip(clients, copies, strict=True):
        for msg in await cl.wait_seq(bid, seq):
            if msg["seq"] > copy.seq:
                copy.apply(msg)
        assert copy.normalised() == final
    by_list: dict[str, list[int]] = {}
    for item in final["items"]:
        by_list.setdefault(item["checklist_id"], []).append(item["rank"])
    assert sum(len(v) for v in by_list.values()) == len(items)
    assert all(len(set(v)) == len(v) for v in by_list.values())


async def test_wip_limits_hold_under_concurrent_moves(http, server, connect):
    base = server.base
    bid = (await create_board(http, base))["id"]
    src = (await create_column(http, base, bid, "Todo"))["id"]
    dst = (await create_column(http, base, bid, "Doing"))["id"]
    setup = await connect("json")
    await setup.join(bid)
    d = Driver(setup, bid)
    await d.ok({"op": "column.configure", "column_id": dst, "wip_limit": 3})
    cards = [
        (await d.ok({"op": "card.create", "column_id": src, "title": f"c{n}"}))["card"]["id"]
        for n in range(12)
    ]
    clients = [await connect(enc) for enc in ("msgpack", "json", "msgpack", "json")]
    for cl in clients:
        await cl.join(bid)
    sent = await asyncio.gather(
        *(
            asyncio.gather(
                *(cl.send_cmd(bid, {"op": "card.move", "card_id": k, "column_id": dst}) for k in cards[n::4])
            )
            for n, cl in enumerate(clients)
        )
    )
    answers = [
        m
        for cl, rids in zip(clients, sent, strict=True)
        for m in (await cl.wait_answers(list(rids))).values()
    ]
    assert sum(m["type"] == "ack" for m in answers) == 3
    refusals = [m for m in answers if m["type"] == "error"]
    assert len(refusals) == 9 and all(
        m["code"] == "conflict" and m["details"]["reason"] == "wip_limit" for m in refusals
    )
    snap = await snapshot(http, base, bid)
    assert sum(k["column_id"] == dst for k in snap["cards"]) == 3

    # allowed to overflow, the same race moves everything
    await d.ok({"op": "board.configure", "allow_wip_overflow": True})
    rest_ = [k["id"] for k in snap["cards"] if k["column_id"] == src]
    senders = [clients[n % len(clients)] for n in range(len(rest_))]
    sent2 = await asyncio.gather(
        *(
            cl.send_cmd(bid, {"op": "card.move", "card_id": k, "column_id": dst})
            for cl, k in zip(senders, rest_, strict=True)
        )
    )
    for cl in clients:
        mine = [rid for rid, sender in zip(sent2, senders, strict=True) if sender is cl]
        assert all(m["type"] == "ack" for m in (await cl.wait_answers(mine)).values())
    snap = await snapshot(http, base, bid)
    assert sum(k["column_id"] == dst for k in snap["cards"]) == 12
