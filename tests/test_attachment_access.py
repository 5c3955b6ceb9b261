"""Who may upload, list, download and delete attachments (server/access.py decides):
members write, viewers and commenters read, others get the answer for a board that does not
exist. The signed link itself is the credential, as an S3 presigned URL is."""

from __future__ import annotations

from typing import Any

import aiohttp

from server.keys import BLOBS
from tests.conftest import RunningServer, ServerFactory
from tests.identity import Account, add_member, register
from tests.test_attachments import API, board_with_card, png, upload


async def _setup(
    start_server: ServerFactory, http: aiohttp.ClientSession
) -> tuple[RunningServer, dict[str, Account], str, str, dict[str, Any]]:
    srv = await start_server(auth="jwt")
    people = {
        role: await register(http, srv.base)
        for role in ("owner", "member", "commenter", "viewer", "stranger")
    }
    board_id, card_id = await board_with_card(http, srv.base, people["owner"].headers)
    for role in ("member", "commenter", "viewer"):
        await add_member(http, srv.base, board_id, people["owner"], people[role], role)
    status, att = await upload(
        http, srv.base, board_id, card_id, png(), "p.png", headers=people["owner"].headers
    )
    assert status == 201, att
    return srv, people, board_id, card_id, att


async def test_upload_needs_write_access(start_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    srv, people, board_id, card_id, _ = await _setup(start_server, http)
    expected = {"member": 201, "commenter": 403, "viewer": 403, "stranger": 404}
    for role, status in expected.items():
        got, body = await upload(
            http, srv.base, board_id, card_id, b"hi", "a.txt", headers=people[role].headers
        )
        assert got == status, (role, body)
    got, _ = await upload(http, srv.base, board_id, card_id, b"hi", "a.txt")  # anonymous
    assert got == 401
    keys = {info.key async for info in srv.app[BLOBS].scan("attachments")}
    assert len(keys) == 3  # the owner's image and its thumbnail, the member's file


async def test_readers_download_through_a_signed_link(
    start_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    srv, people, board_id, card_id, att = await _setup(start_server, http)
    url = f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments/{att['id']}"
    for role in ("owner", "member", "commenter", "viewer"):
        async with http.get(url, headers=people[role].headers, allow_redirects=False) as r:
            assert r.status == 307, role
            location = r.headers["Location"]
        async with http.get(
            f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments", headers=people[role].headers
        ) as r:
            assert r.status == 200, role
    for who in (people["stranger"].headers, {}):
        async with http.get(url, headers=who, allow_redirects=False) as r:
            assert r.status in (401, 404)
            assert "Location" not in r.headers
        async with http.get(f"{url}/thumbnail", headers=who, allow_redirects=False) as r:
            assert r.status in (401, 404)
    async with http.get(srv.base + location) as r:  # no credentials needed: the link is signed
        assert r.status == 200 and r.headers["Content-Type"] == "image/png"


async def test_delete_needs_write_access(start_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    srv, people, board_id, card_id, att = await _setup(start_server, http)
    url = f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments/{att['id']}"
    for role, status in {"stranger": 404, "viewer": 403, "commenter": 403}.items():
        async with http.delete(url, headers=people[role].headers) as r:
            assert r.status == status, role
    async with http.delete(url, headers=people["member"].headers) as r:
        assert r.status == 204
    async with http.get(url, headers=people["owner"].headers, allow_redirects=False) as r:
        assert r.status == 404


async def test_an_attachment_is_found_only_under_its_own_card(
    start_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    srv, people, board_id, _card_id, att = await _setup(start_server, http)
    other_board, other_card = await board_with_card(http, srv.base, people["owner"].headers)
    for b, c in ((other_board, other_card), (board_id, other_card)):
        async with http.get(
            f"{srv.base}{API}/{b}/cards/{c}/attachments/{att['id']}",
            headers=people["owner"].headers,
            allow_redirects=False,
        ) as r:
            assert r.status == 404
