"""Access changes across nodes (docs/ACCESS.md, issue 9 "One way in"): a member removed
through the REST API of one node loses the board at once on every node where they have it
open, wherever the board's owner runs; the others keep it. Real accounts (JWT auth)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.identity import ws_url_with_token
from tests.nodes import JWT_ENV, start_nodes
from tests.roles import accounts, board_url, board_with_roles, call
from tests.test_access_ws import _expect_revoked, _presence_gone, _presence_joined
from tests.wsclient import WsClient

pytestmark = pytest.mark.timeout(60)


async def test_a_member_removed_on_one_node_loses_the_board_at_once_on_every_node(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}-access-{uuid.uuid4().hex[:8]}"
    async with start_nodes(3, tmp_path, database_url, redis_url, prefix, JWT_ENV) as nodes:
        http = nodes.http
        people = await accounts(http, nodes[0].base, "owner", "member")
        owner, bob = people["owner"], people["member"]
        bid = await board_with_roles(http, nodes[0].base, people)
        r = await call(http, "POST", board_url(nodes[0].base, bid, "/columns"), owner, json={"title": "c"})
        assert r.status == 201, r.body
        col = r.body["id"]

        async def connect(i: int, token: str, enc: str = "json") -> WsClient:
            return await WsClient.connect(http, ws_url_with_token(nodes[i].ws_url, token), enc)

        watcher = await connect(0, owner.access_token)
        assert (await watcher.join(bid))["type"] == "joined"
        board_owner = await nodes.owner(bid)
        tabs = [await connect(i, bob.access_token, ("json", "msgpack")[i % 2]) for i in range(3)]
        for i, tab in enumerate(tabs):
            assert (await tab.join(bid))["type"] == "joined"
            ack = await tab.cmd(bid, {"op": "card.create", "column_id": col, "title": f"bob {i}"})
            assert ack["type"] == "ack", ack
        await _presence_joined(watcher, bid, tabs)

        # removed through a node that does not run the board
        via = next(n for n in nodes.nodes if n is not board_owner)
        t0 = time.monotonic()
        r = await call(http, "DELETE", board_url(via.base, bid, f"/members/{bob.user_id}"), owner)
        assert r.status == 204, r.body
        for tab in tabs:
            await _expect_revoked(tab, bid)  # access (role null), then left access_revoked
        told_s = time.monotonic() - t0
        print(
            f"\nremoved on node {via.index} (owner: node {board_owner.index}): "
            f"told on 3 nodes in {told_s:.3f} s"
        )
        assert told_s < 2.0, told_s
        await _presence_gone(watcher, bid, tabs)

        # and nothing more gets through on any node: commands, joins
        for tab in tabs:
            answer = await tab.cmd(bid, {"op": "card.create", "column_id": col, "title": "after"})
            assert answer["type"] == "error" and answer["code"] == "not_joined", answer
            answer = await tab.join(bid)
            assert answer["type"] == "error" and answer["code"] in ("not_found", "forbidden"), answer
        ack = await watcher.cmd(bid, {"op": "card.create", "column_id": col, "title": "owner"})
        assert ack["type"] == "ack", ack
        assert [m for m in watcher.log if m["type"] in ("access", "left")] == []
        for w in (watcher, *tabs):
            await w.close()
