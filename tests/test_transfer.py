"""Export and import against a real server: export -> import -> export, the Trello fixture,
background jobs and their refusals."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from server.api.transfer import IMPORTS
from tests import roles
from tests.conftest import create_board
from tests.identity import register
from tests.test_rest import API, assert_error, call

FIXTURE = Path(__file__).parent / "fixtures" / "trello_board.json"
DEV = "00000000-0000-4000-8000-000000000001"


async def _import(http, server, doc: Any, kind: str = "boardcast", who=None, **params: str) -> dict[str, Any]:
    """POST the document, wait for the job to end, return the job as GET reports it."""
    headers = who.headers if who is not None else {}
    r = await call(
        http,
        "POST",
        f"{server.base}{API}/import",
        params={"kind": kind, **params},
        data=json.dumps(doc),
        headers={"Content-Type": "application/json", **headers},
    )
    assert r.status == 202, r.body
    assert r.body["state"] in ("queued", "running", "succeeded") and r.headers["Location"].endswith(
        r.body["id"]
    )
    await server.app[IMPORTS].wait_idle()
    job = await call(http, "GET", f"{server.base}/api/v1/imports/{r.body['id']}", headers=headers)
    assert job.status == 200, job.body
    return job.body  # type: ignore[no-any-return]


async def _export(http, server, board_id: str, who=None) -> dict[str, Any]:
    headers = who.headers if who is not None else {}
    r = await call(http, "GET", f"{server.base}{API}/{board_id}/export", headers=headers)
    assert r.status == 200, r.body
    return r.body  # type: ignore[no-any-return]


async def _rich_board(http, server, connect) -> str:
    """A board using every part of the model, built by a real WebSocket client."""
    bid = (await create_board(http, server.base, "Roadmap"))["id"]
    ws = await connect()
    await ws.join(bid)

    async def do(op: dict[str, Any]) -> dict[str, Any]:
        before = len(ws.events(bid))
        ack = await ws.cmd(bid, op)
        assert ack["type"] == "ack", (op, ack)
        await ws.wait_seq(bid, ack["seq"])
        return ws.events(bid)[before:][-1]["event"]  # type: ignore[no-any-return]

    await do({"op": "board.update", "description": "The **plan**"})
    await do({"op": "board.configure", "allow_wip_overflow": True})
    todo = (await do({"op": "column.create", "title": "Todo"}))["column"]["id"]
    done = (await do({"op": "column.create", "title": "Done"}))["column"]["id"]
    old = (await do({"op": "column.create", "title": "Old"}))["column"]["id"]
    await do({"op": "column.configure", "column_id": todo, "colour": "#12ab34", "wip_limit": 2})
    red = (await do({"op": "label.create", "name": "urgent", "colour": "red"}))["label"]["id"]
    await do({"op": "label.create", "name": "docs", "colour": "sky"})
    prio = (
        await do(
            {
                "op": "field.create",
                "name": "Priority",
                "kind": "select",
                "options": [{"name": "hi"}, {"name": "lo"}],
            }
        )
    )["field"]
    est = (await do({"op": "field.create", "name": "Estimate", "kind": "number"}))["field"]["id"]
    due = (await do({"op": "field.create", "name": "Ship", "kind": "date"}))["field"]["id"]
    ok = (await do({"op": "field.create", "name": "OK", "kind": "checkbox"}))["field"]["id"]
    cards = []
    for i, col in enumerate([todo, todo, todo, done, old]):
        cards.append(
            (await do({"op": "card.create", "column_id": col, "title": f"card {i}", "description": f"d{i}"}))[
                "card"
            ]["id"]
        )
    a, b, _, d, e = cards
    await do({"op": "card.move", "card_id": b, "column_id": todo, "before": a})
    await do(
        {"op": "card.schedule", "card_id": a, "start_ms": 1_700_000_000_000, "due_ms": 1_700_100_000_000}
    )
    await do({"op": "card.schedule", "card_id": d, "done": True})
    await do({"op": "card.add_label", "card_id": a, "label_id": red})
    await do({"op": "card.assign", "card_id": a, "user_id": DEV})
    await do(
        {"op": "card.set_field", "card_id": a, "field_id": prio["id"], "value": prio["options"][1]["id"]}
    )
    await do({"op": "card.set_field", "card_id": a, "field_id": est, "value": 2.5})
    await do({"op": "card.set_field", "card_id": b, "field_id": due, "value": 1_700_000_000_000})
    await do({"op": "card.set_field", "card_id": b, "field_id": ok, "value": True})
    cl = (await do({"op": "checklist.create", "card_id": a, "title": "Steps"}))["checklist"]["id"]
    await do({"op": "checklist.create", "card_id": a, "title": "Empty"})
    one = (await do({"op": "item.create", "checklist_id": cl, "text": "one", "due_ms": 5}))["item"]["id"]
    await do({"op": "item.create", "checklist_id": cl, "text": "two", "assignee_id": DEV})
    await do({"op": "item.update", "item_id": one, "done": True})
    await do({"op": "comment.create", "card_id": a, "body": "first @Developer"})
    await do({"op": "comment.create", "card_id": b, "body": "second"})
    await do({"op": "card.archive", "card_id": e})
    await do({"op": "column.archive", "column_id": old})
    return bid


def _without_comment_times(doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for cm in out["comments"]:
        cm.pop("created_at_ms", None)
        cm.pop("edited_at_ms", None)
    return out


async def test_export_import_export_gives_the_same_document(http, server, connect):
    bid = await _rich_board(http, server, connect)
    first = await _export(http, server, bid)
    assert first["format"] == "boardcast.board" and first["version"] == 1
    assert [c["title"] for c in first["columns"]] == ["Todo", "Done", "Old"]
    assert [c["title"] for c in first["cards"]] == ["card 1", "card 0", "card 2", "card 3", "card 4"]
    assert first["cards"][1]["fields"] == {"field-1": "opt-2", "field-2": 2.5}
    assert first["checklists"][0]["items"][0] == {"ref": "item-1", "text": "one", "done": True, "due_ms": 5}
    assert first["comments"][0]["author"] == "member-1"

    job = await _import(http, server, first)
    assert job["state"] == "succeeded", job
    assert job["done"] == job["total"] > 0
    report = job["report"]
    assert report.get("skipped_count", 0) == 0, report
    assert report["created"] == {
        "labels": 2,
        "fields": 4,
        "columns": 3,
        "cards": 5,
        "checklists": 2,
        "items": 2,
        "comments": 2,
    }
    second = await _export(http, server, job["board_id"])
    assert job["board_id"] != bid
    # Comments are written through the board as new ones: their times are the import's.
    assert _without_comment_times(second) == _without_comment_times(first)
    assert [cm["body"] for cm in second["comments"]] == ["first @Developer", "second"]

    # The imported board has an event log: its history replays to it.
    snap = await call(http, "GET", f"{server.base}{API}/{job['board_id']}")
    seq = snap.body["seq"]
    assert seq > 30
    travelled = await call(http, "GET", f"{server.base}{API}/{job['board_id']}", params={"at_seq": str(seq)})
    assert travelled.body == snap.body
    feed = await call(http, "GET", f"{server.base}{API}/{job['board_id']}/activity", params={"order": "asc"})
    assert feed.body["items"][0]["kind"] == "board.configured"


async def test_trello_fixture_imports_completely_with_a_correct_report(http, start_server):
    srv = await start_server(auth="jwt")
    importer = await register(http, srv.base, name="Importer")
    alice = await register(http, srv.base, email="alice.trello@example.test", name="Alice M")
    trello = json.loads(FIXTURE.read_text())
    job = await _import(http, srv, trello, "trello", who=importer)
    assert job["state"] == "succeeded", job
    bid = job["board_id"]
    doc = await _export(http, srv, bid, who=importer)

    assert doc["title"] == "Website relaunch" and doc["description"].startswith("Everything")
    assert [(c["title"], c.get("archived", False), c.get("wip_limit")) for c in doc["columns"]] == [
        ("Backlog", False, None),
        ("Doing", False, 3),
        ("Done", False, None),
        ("Old ideas", True, None),
    ]
    cards = {c["title"]: c for c in doc["cards"]}
    assert [c["title"] for c in doc["cards"]] == [
        "Pick a hosting provider",
        "Write copy for the landing page",
        "Set up CI",
        "Old logo review",
        "Domain name",
        "Blog section",
        "Archived in an archived list",
    ]
    assert cards["Old logo review"]["archived"] and cards["Archived in an archived list"]["archived"]
    assert not cards["Set up CI"].get("archived", False)
    labels = {lb["ref"]: (lb["name"], lb["colour"]) for lb in doc["labels"]}
    assert sorted(labels.values()) == [
        ("Blocker", "red"),
        ("Design", "purple_dark"),
        ("Ready", "green"),
        ("Someday", "gray"),
        ("yellow", "yellow"),
    ]
    copy_card = cards["Write copy for the landing page"]
    assert sorted(labels[r][0] for r in copy_card["labels"]) == ["Design", "Ready"]
    assert copy_card["start_ms"] == 1711958400000 and copy_card["due_ms"] == 1712764800000
    assert cards["Domain name"]["done"] is True
    members = {m["ref"]: m for m in doc["members"]}
    assert {(m["name"], m["role"]) for m in members.values()} == {("Importer", "owner"), ("Alice M", "admin")}
    alice_ref = next(r for r, m in members.items() if m["email"] == alice.email)
    assert copy_card["assignees"] == [alice_ref] and cards["Domain name"]["assignees"] == [alice_ref]
    # Attachment links are kept in the description.
    assert "[Brief (Google Docs)](https://docs.example.com/brief)" in copy_card["description"]
    assert "https://registrar.example.com/order/123" in cards["Domain name"]["description"]
    fields = {f["name"]: f for f in doc["fields"]}
    assert [f["name"] for f in doc["fields"]] == [
        "Priority",
        "Estimate (h)",
        "Reviewed",
        "Launch date",
        "Owner note",
    ]
    assert [(o["name"], o.get("colour")) for o in fields["Priority"]["options"]] == [
        ("High", "red"),
        ("Low", "none"),
    ]
    assert copy_card["fields"] == {
        fields["Priority"]["ref"]: fields["Priority"]["options"][0]["ref"],
        fields["Estimate (h)"]["ref"]: 6.5,
        fields["Reviewed"]["ref"]: True,
        fields["Launch date"]["ref"]: 1714521600000,
        fields["Owner note"]["ref"]: "ask Bob",
    }
    checklists = [
        (cl["title"], [(i["text"], i.get("done", False)) for i in cl.get("items", [])])
        for cl in doc["checklists"]
    ]
    assert checklists == [
        ("Sections", [("Hero", True), ("Features", False), ("Pricing", False)]),
        ("Notes", []),
        ("Pipeline", [("Lint and test", True), ("Deploy preview", False)]),
    ]
    deploy = doc["checklists"][2]["items"][1]
    assert deploy["assignee"] == alice_ref and deploy["due_ms"] == 1710763200000
    comments = [(cm["body"], cm.get("author")) for cm in doc["comments"]]
    assert comments == [
        ("**Dana Guest** wrote:\n\nCan we use the EU region?", "member-1"),
        ("First draft is in the brief, @bobstone please review.", alice_ref),
        ("**Bob Stone** wrote:\n\nPricing needs numbers from finance.", "member-1"),
    ]

    report = job["report"]
    assert report.get("history_cut", False) is False
    assert report["created"] == {
        "members": 1,
        "labels": 5,
        "fields": 5,
        "columns": 4,
        "cards": 7,
        "checklists": 3,
        "items": 5,
        "comments": 3,
    }
    skipped = sorted((s["what"], s.get("name") or s.get("ref")) for s in report["skipped"])
    assert skipped == sorted(
        [
            ("member", "Bob Stone"),
            ("member", "Carol Diaz"),
            ("card", "Orphan from a deleted list"),
            ("comment", "65a1f0c2e4b0a1b2c3d4e906"),
            ("assignee", next(c["ref"] for c in doc["cards"] if c["title"] == "Pick a hosting provider")),
            ("assignee", next(c["ref"] for c in doc["cards"] if c["title"] == "Domain name")),
            ("assignee", doc["checklists"][0]["items"][2]["ref"]),
        ]
    ), report["skipped"]
    assert report["skipped_count"] == len(report["skipped"])
    assert any("linked, not copied" in n for n in report["notes"]), report["notes"]

    # Alice (mapped by email) is an admin of the new board and sees it.
    assert bid in [b["id"] for b in (await roles.call(http, "GET", f"{srv.base}{API}", alice)).body["boards"]]
    # Someone else's import does not exist for you.
    roles.assert_error(
        await roles.call(http, "GET", f"{srv.base}/api/v1/imports/{job['id']}", alice), 404, "not_found"
    )


async def test_a_trello_export_at_the_action_limit_is_reported_as_cut(http, server):
    trello = json.loads(FIXTURE.read_text())
    filler = [
        {
            "id": f"{i:024x}",
            "type": "updateCard",
            "date": f"2024-04-01T{i // 60 % 24:02d}:{i % 60:02d}:00.000Z",
            "data": {},
        }
        for i in range(1000 - len(trello["actions"]))
    ]
    trello["actions"] = filler + trello["actions"]
    job = await _import(http, server, trello, "trello", title="Cut")
    assert job["state"] == "succeeded", job
    report = job["report"]
    assert report["history_cut"] is True and report["oldest_action_at"] == "2024-02-28T08:00:00.000Z"
    assert any("latest 1000 actions" in n for n in report["notes"])
    snap = await call(http, "GET", f"{server.base}{API}/{job['board_id']}")
    assert snap.body["title"] == "Cut"


async def test_bad_imports_are_refused_and_create_nothing(http, start_server, database_url):
    srv = await start_server(import_max_bytes=4096)
    url = f"{srv.base}{API}/import"
    conn = await asyncpg.connect(database_url)
    counts = "SELECT (SELECT count(*) FROM import_jobs), (SELECT count(*) FROM boards)"
    before = await conn.fetchrow(counts)
    json_headers = {"Content-Type": "application/json"}
    cases = [
        ({"kind": "asana"}, json_headers, b"{}", 400, "bad_request"),
        ({}, json_headers, b"{not json", 400, "bad_request"),
        ({}, json_headers, b'{"title": "x", "surprise": 1}', 400, "bad_request"),
        ({}, json_headers, b'{"format": "boardcast.board", "version": 2, "title": "x"}', 400, "bad_request"),
        (
            {},
            json_headers,
            json.dumps({"title": "x", "cards": [{"ref": "card-1", "column": "col-1", "title": ""}]}).encode(),
            400,
            "bad_request",
        ),
        ({"kind": "trello"}, json_headers, b'{"name": "no id"}', 400, "bad_request"),
        ({}, {"Content-Type": "text/plain"}, b'{"title": "x"}', 415, "bad_request"),
        ({}, json_headers, b'{"title": "' + b"x" * 5000 + b'"}', 413, "too_large"),
        ({"title": ""}, json_headers, b'{"title": "x"}', 400, "bad_request"),
    ]
    for params, headers, body, status, code in cases:
        assert_error(await call(http, "POST", url, params=params, data=body, headers=headers), status, code)
    assert_error(await call(http, "GET", f"{srv.base}/api/v1/imports/{uuid.uuid4()}"), 404, "not_found")
    assert_error(await call(http, "GET", f"{srv.base}/api/v1/imports/nope"), 404, "not_found")
    try:
        assert await conn.fetchrow(counts) == before
    finally:
        await conn.close()


async def test_an_import_skips_what_the_board_refuses_and_says_so(http, server):
    # Valid as a document: a card in a column the document lacks is skipped, a field value of
    # the wrong kind is refused by the board's own checks; both reported, neither fatal.
    doc = {
        "title": "Partial",
        "fields": [{"ref": "field-1", "name": "n", "kind": "number"}],
        "columns": [{"ref": "col-1", "title": "A"}],
        "cards": [
            {"ref": "card-1", "column": "col-1", "title": "ok", "fields": {"field-1": "not a number"}},
            {"ref": "card-2", "column": "col-9", "title": "lost"},
        ],
    }
    job = await _import(http, server, doc)
    assert job["state"] == "succeeded", job
    assert [(s["what"], s["ref"]) for s in job["report"]["skipped"]] == [
        ("card", "card-2"),
        ("field_value", "card-1"),
    ]
    assert job["report"]["created"] == {"fields": 1, "columns": 1, "cards": 1}


async def test_export_needs_read_access(http, start_server):
    srv = await start_server(auth="jwt")
    people = await roles.accounts(http, srv.base, "owner", "viewer", "stranger")
    bid = await roles.board_with_roles(http, srv.base, people)
    url = roles.board_url(srv.base, bid, "/export")
    for who in ("owner", "viewer"):
        r = await roles.call(http, "GET", url, people[who])
        assert r.status == 200 and {m["name"] for m in r.body["members"]} == {"owner", "viewer"}
    roles.assert_error(await roles.call(http, "GET", url, people["stranger"]), 404, "not_found")
    roles.assert_unauthorized(await roles.call(http, "GET", url))
    roles.assert_unauthorized(await roles.call(http, "POST", f"{srv.base}{API}/import", json={"title": "x"}))


@pytest.mark.parametrize("kind", ["boardcast", "trello"])
def test_documents_decode_with_the_inbound_rules(kind):
    from jobs.imports import parse_source
    from protocol.errors import BoardcastError
    from protocol.transfer import ImportReport

    raw = FIXTURE.read_bytes() if kind == "trello" else b'{"title": "x"}'
    assert parse_source(kind, raw, ImportReport()).title
    with pytest.raises(BoardcastError):
        parse_source(kind, b"[" * 100_000, ImportReport())


async def test_a_job_whose_runner_died_runs_again_on_the_next_start(http, server, start_server, database_url):
    partial = (await create_board(http, server.base, "half-built"))["id"]
    doc = {"title": "Recovered", "columns": [{"ref": "col-1", "title": "A"}]}
    conn = await asyncpg.connect(database_url)
    try:
        job_id = uuid.uuid4()
        await conn.execute(
            """INSERT INTO import_jobs (id, owner_id, kind, state, source, board_id, attempts, updated_at)
               VALUES ($1, $2, 'boardcast', 'running', $3, $4, 1, now() - interval '1 hour')""",
            job_id,
            uuid.UUID(DEV),
            json.dumps(doc),
            uuid.UUID(partial),
        )
    finally:
        await conn.close()
    srv = await start_server()  # its runner finds the stale job at start
    await srv.app[IMPORTS].wait_idle()
    job = (await call(http, "GET", f"{srv.base}/api/v1/imports/{job_id}")).body
    assert job["state"] == "succeeded" and job["board_id"] != partial, job
    assert (await call(http, "GET", f"{srv.base}{API}/{job['board_id']}")).body["columns"][0]["title"] == "A"
    # The half-built board is gone; its owner is told it was deleted.
    assert_error(await call(http, "GET", f"{srv.base}{API}/{partial}"), 410, "gone")
    async with http.get(f"{srv.base}/metrics") as r:
        text = await r.text()
    assert 'boardcast_imports_total{kind="boardcast",outcome="succeeded"} 1.0' in text


async def test_a_job_that_cannot_run_fails_with_its_reason(http, start_server, database_url):
    conn = await asyncpg.connect(database_url)
    try:
        job_id = uuid.uuid4()
        await conn.execute(
            """INSERT INTO import_jobs (id, owner_id, kind, state, source)
               VALUES ($1, $2, 'trello', 'queued', '{"no": "id"}')""",
            job_id,
            uuid.UUID(DEV),
        )
        srv = await start_server()
        await srv.app[IMPORTS].wait_idle()
        job = (await call(http, "GET", f"{srv.base}/api/v1/imports/{job_id}")).body
        assert job["state"] == "failed" and "not a trello board export" in job["error"], job
        assert "board_id" not in job
        assert await conn.fetchval("SELECT source FROM import_jobs WHERE id = $1", job_id) is None
    finally:
        await conn.close()


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e2217bc80000000049454e44ae426082"
)


async def _zip_export(http, server, board_id: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    async with http.get(f"{server.base}{API}/{board_id}/export", params={"files": "zip"}) as r:
        assert r.status == 200 and r.content_type == "application/zip", await r.text()
        raw = await r.read()
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    return json.loads(files.pop("board.json")), files


async def test_a_zip_export_carries_the_files_and_imports_with_them(http, server, connect):
    bid = await _rich_board(http, server, connect)
    card_id = (await call(http, "GET", f"{server.base}{API}/{bid}")).body["cards"][1]["id"]
    url = f"{server.base}{API}/{bid}/cards/{card_id}/attachments"
    made = []
    for name, data, kind in (
        ("notes.txt", b"remember the milk\n", "text/plain"),
        ("dot.png", PNG, "image/png"),
    ):
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name, content_type=kind)
        r = await call(http, "POST", url, data=form)
        assert r.status == 201, r.body
        made.append(r.body)
    ws = await connect()
    await ws.join(bid)
    ack = await ws.cmd(bid, {"op": "card.set_cover", "card_id": card_id, "attachment_id": made[1]["id"]})
    assert ack["type"] == "ack", ack

    first, files = await _zip_export(http, server, bid)
    assert [(a["name"], a["file"], a.get("cover", False)) for a in first["attachments"]] == [
        ("notes.txt", "files/file-1", False),
        ("dot.png", "files/file-2", True),
    ]
    assert files == {"files/file-1": b"remember the milk\n", "files/file-2": PNG}

    async with http.get(f"{server.base}{API}/{bid}/export", params={"files": "zip"}) as r:
        body = await r.read()
    r = await call(
        http, "POST", f"{server.base}{API}/import", data=body, headers={"Content-Type": "application/zip"}
    )
    assert r.status == 202, r.body
    await server.app[IMPORTS].wait_idle()
    job = (await call(http, "GET", f"{server.base}/api/v1/imports/{r.body['id']}")).body
    assert job["state"] == "succeeded", job
    assert job["report"]["created"]["attachments"] == 2 and job["report"].get("skipped_count", 0) == 0, job
    second, files2 = await _zip_export(http, server, job["board_id"])
    assert _without_comment_times(second) == _without_comment_times(first)
    assert files2 == files
    # The new board's attachments are its own blobs, not the old board's.
    got = (await call(http, "GET", f"{server.base}{API}/{job['board_id']}")).body["attachments"]
    assert {a["blob_key"] for a in got}.isdisjoint({a["blob_key"] for a in made})


async def test_bad_zip_imports_are_refused(http, server):
    def zipped(entries: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in entries.items():
                zf.writestr(name, data)
        return buf.getvalue()

    doc = {
        "title": "x",
        "columns": [{"ref": "col-1", "title": "A"}],
        "cards": [{"ref": "card-1", "column": "col-1", "title": "c"}],
    }
    with_file = {
        **doc,
        "attachments": [
            {
                "ref": "file-1",
                "card": "card-1",
                "name": "a.txt",
                "content_type": "text/plain",
                "size": 1,
                "file": "files/file-1",
            }
        ],
    }
    for body in (
        b"not a zip",
        zipped({"other.json": b"{}"}),
        zipped({"board.json": json.dumps(with_file).encode()}),
        zipped({"board.json": b"{bad"}),
    ):
        assert_error(
            await call(
                http,
                "POST",
                f"{server.base}{API}/import",
                data=body,
                headers={"Content-Type": "application/zip"},
            ),
            400,
            "bad_request",
        )
    assert_error(
        await call(http, "GET", f"{server.base}{API}/{uuid.uuid4()}/export", params={"files": "tar"}),
        400,
        "bad_request",
    )


async def test_a_server_stopping_mid_import_queues_the_job_again(http, start_server, database_url):
    doc = {
        "title": "Big",
        "columns": [{"ref": "col-1", "title": "A"}],
        "cards": [
            {"ref": f"card-{i}", "column": "col-1", "title": f"c{i}", "due_ms": 1_700_000_000_000}
            for i in range(1, 6001)
        ],
    }
    first = await start_server()
    r = await call(http, "POST", f"{first.base}{API}/import", json=doc)
    assert r.status == 202, r.body
    job_id = uuid.UUID(r.body["id"])
    conn = await asyncpg.connect(database_url)
    try:
        async with asyncio.timeout(30):
            while True:  # until the job has built part of its board
                row = await conn.fetchrow(
                    "SELECT state, board_id, done FROM import_jobs WHERE id = $1", job_id
                )
                if row["board_id"] is not None and row["done"] > 0:
                    break
                await asyncio.sleep(0.01)
        partial = row["board_id"]
        await first.stop()
        row = await conn.fetchrow("SELECT state, board_id FROM import_jobs WHERE id = $1", job_id)
        assert (row["state"], row["board_id"]) == ("queued", None)
        assert await conn.fetchval("SELECT count(*) FROM boards WHERE id = $1", partial) == 0
        second = await start_server()
        await second.app[IMPORTS].wait_idle()
        job = (await call(http, "GET", f"{second.base}/api/v1/imports/{job_id}")).body
        assert job["state"] == "succeeded" and job["report"]["created"]["cards"] == 6000, job
    finally:
        await conn.close()
