"""Attachments over REST against real servers: upload streamed to the store (local, and S3 on
a real moto server), size limit, type check, names, thumbnails, signed downloads, access, and
blobs deleted only after the commit that drops them."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from PIL import Image

from actors import Execute, GetSnapshot
from protocol import commands as c
from server.access import DEV_USER
from server.keys import BLOB_LEDGER, BLOB_SWEEPER, BLOBS, POOL, REGISTRY, URL_SIGNER
from storage.blobs import new_key, put_bytes
from tests.conftest import RunningServer, ServerFactory, create_board, create_column
from tests.s3server import ACCESS_KEY, SECRET_KEY, create_bucket

API = "/api/v1/boards"
BOUNDARY = "boardcast-test-boundary"
Starter = Callable[..., Awaitable[RunningServer]]


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(params=["local", "s3"])
async def start(request: pytest.FixtureRequest, start_server: ServerFactory) -> Starter:
    """Start a server on the local store or on S3 (a fresh bucket on the moto server)."""

    async def go(**overrides: Any) -> RunningServer:
        if request.param == "s3":
            endpoint = request.getfixturevalue("s3_endpoint")
            bucket = f"test-{uuid.uuid4().hex[:12]}"
            await create_bucket(endpoint, bucket)
            overrides = {
                "blob_store": "s3",
                "blob_s3_bucket": bucket,
                "blob_s3_endpoint_url": endpoint,
                "blob_s3_access_key_id": ACCESS_KEY,
                "blob_s3_secret_access_key": SECRET_KEY,
                **overrides,
            }
        return await start_server(**overrides)

    return go


def png(width: int = 800, height: int = 600, mode: str = "RGB") -> bytes:
    im = Image.new(mode, (width, height), (200, 30, 30, 128) if mode == "RGBA" else (200, 30, 30))
    for x in range(0, width, 10):  # some content, so the encoders have something to do
        im.putpixel((x, x % height), (0, 0, 255, 255) if mode == "RGBA" else (0, 0, 255))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def jpeg(width: int = 1200, height: int = 400) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 40)).save(out, "JPEG", quality=90)
    return out.getvalue()


def multipart(data: bytes, filename: str, content_type: str | None, name: str = "file") -> bytes:
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"')  # a quoted-string, as browsers send it
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{quoted}"\r\n'
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + data + f"\r\n--{BOUNDARY}--\r\n".encode()


async def upload(
    http: aiohttp.ClientSession,
    base: str,
    board_id: str,
    card_id: str,
    data: bytes,
    filename: str = "file.bin",
    content_type: str | None = None,
    *,
    chunked: bool = False,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    body = multipart(data, filename, content_type)

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    async with http.post(
        f"{base}{API}/{board_id}/cards/{card_id}/attachments",
        data=pieces() if chunked else body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **(headers or {})},
    ) as r:
        return r.status, await r.json()


async def board_with_card(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None
) -> tuple[str, str]:
    if headers is None:
        board = await create_board(http, base)
        column = await create_column(http, base, board["id"])
    else:
        async with http.post(f"{base}{API}", json={"title": "B"}, headers=headers) as r:
            board = await r.json()
        async with http.post(f"{base}{API}/{board['id']}/columns", json={"title": "C"}, headers=headers) as r:
            column = await r.json()
    async with http.post(
        f"{base}{API}/{board['id']}/cards",
        json={"column_id": column["id"], "title": "Card"},
        headers=headers,
    ) as r:
        assert r.status == 201, await r.text()
        card = await r.json()
    return board["id"], card["id"]


async def blob_keys(srv: RunningServer) -> set[str]:
    return {info.key async for info in srv.app[BLOBS].scan("attachments")}


async def pending_uploads(srv: RunningServer) -> int:
    n: int = await srv.app[POOL].fetchval("SELECT count(*) FROM blob_uploads")
    return n


async def snapshot_attachments(http: aiohttp.ClientSession, base: str, board_id: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}{API}/{board_id}") as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body["attachments"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------ upload and download


async def test_png_upload_thumbnail_and_signed_download(start: Starter, http: aiohttp.ClientSession) -> None:
    srv = await start()
    board_id, card_id = await board_with_card(http, srv.base)
    data = png()
    status, att = await upload(http, srv.base, board_id, card_id, data, "Holiday photo.png", "image/png")
    assert status == 201, att
    assert att["card_id"] == card_id
    assert (att["name"], att["content_type"], att["size"]) == ("Holiday photo.png", "image/png", len(data))
    assert att["blob_key"].startswith(f"attachments/{board_id}/")
    assert att["thumb_key"] == att["blob_key"] + ".thumb.jpg"
    assert await blob_keys(srv) == {att["blob_key"], att["thumb_key"]}
    assert await pending_uploads(srv) == 0  # committed: the ledger forgot it
    assert [a["id"] for a in await snapshot_attachments(http, srv.base, board_id)] == [att["id"]]

    url = f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments/{att['id']}"
    async with http.get(url, allow_redirects=False) as r:
        assert r.status == 307
        assert r.headers["Cache-Control"] == "no-store"
        location = r.headers["Location"]
    async with http.get(url) as r:  # followed: the signed URL serves the bytes
        assert r.status == 200
        assert await r.read() == data
        assert r.headers["Content-Type"] == "image/png"
        assert r.headers["Content-Disposition"].startswith('inline; filename="Holiday photo.png"')
        if not location.startswith("http"):  # the server's own signed URL (local store)
            assert location.startswith("/api/v1/blobs/")
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert "sandbox" in r.headers["Content-Security-Policy"]
    async with http.get(f"{url}/thumbnail") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/jpeg"
        thumb = Image.open(io.BytesIO(await r.read()))
        assert thumb.format == "JPEG" and thumb.size == (320, 240)
    async with http.get(f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments") as r:
        assert [a["id"] for a in (await r.json())["attachments"]] == [att["id"]]


async def test_jpeg_and_transparent_png_thumbnails(start: Starter, http: aiohttp.ClientSession) -> None:
    srv = await start()
    board_id, card_id = await board_with_card(http, srv.base)
    _, att = await upload(http, srv.base, board_id, card_id, jpeg(), "wide.jpg", "image/jpeg")
    assert att["content_type"] == "image/jpeg" and att["thumb_key"].endswith(".thumb.jpg")
    async with http.get(f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments/{att['id']}/thumbnail") as r:
        assert Image.open(io.BytesIO(await r.read())).size == (320, 107)
    _, att = await upload(http, srv.base, board_id, card_id, png(100, 50, "RGBA"), "logo.png")
    assert att["thumb_key"].endswith(".thumb.png")  # transparency kept
    async with http.get(f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments/{att['id']}/thumbnail") as r:
        im = Image.open(io.BytesIO(await r.read()))
        assert (im.format, im.mode, im.size) == ("PNG", "RGBA", (100, 50))


async def test_a_non_image_has_no_thumbnail(start: Starter, http: aiohttp.ClientSession) -> None:
    srv = await start()
    board_id, card_id = await board_with_card(http, srv.base)
    status, att = await upload(http, srv.base, board_id, card_id, b"%PDF-1.7\n" + b"0" * 500, "doc.pdf")
    assert status == 201 and att["content_type"] == "application/pdf" and att["thumb_key"] is None
    base = f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments/{att['id']}"
    async with http.get(f"{base}/thumbnail") as r:
        assert r.status == 404
    async with http.get(base) as r:
        assert r.headers["Content-Disposition"].startswith('attachment; filename="doc.pdf"')


# ------------------------------------------------------------------ refusals leave nothing


@pytest.mark.parametrize("chunked", [False, True])
async def test_over_the_size_limit_is_413_and_leaves_nothing(
    start: Starter, http: aiohttp.ClientSession, chunked: bool
) -> None:
    srv = await start(blob_max_bytes=50_000)
    board_id, card_id = await board_with_card(http, srv.base)
    status, body = await upload(http, srv.base, board_id, card_id, b"a" * 120_000, "big.txt", chunked=chunked)
    assert status == 413, body
    assert body["error"]["code"] == "too_large" and body["error"]["details"] == {"max_bytes": 50_000}
    assert await blob_keys(srv) == set()
    assert await pending_uploads(srv) == 0
    assert await snapshot_attachments(http, srv.base, board_id) == []
    # exactly the limit is accepted
    status, att = await upload(http, srv.base, board_id, card_id, b"a" * 50_000, "exact.txt", chunked=chunked)
    assert status == 201 and att["size"] == 50_000


@pytest.mark.parametrize(
    ("data", "declared", "detected"),
    [
        (b"MZ\x90\x00\x03" + b"\x00" * 400, None, "application/x-msdownload"),  # not allowed
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 400, "application/octet-stream", "application/x-executable"),
        (b"%PDF-1.4 not an image", "image/png", "application/pdf"),  # declared otherwise
        (png(20, 20), "application/pdf", "image/png"),
        (b"<html><script>alert(1)</script></html>", "text/html", None),  # stored as text? no: html declared
    ],
)
async def test_type_is_sniffed_and_checked(
    start: Starter, http: aiohttp.ClientSession, data: bytes, declared: str | None, detected: str | None
) -> None:
    srv = await start()
    board_id, card_id = await board_with_card(http, srv.base)
    status, body = await upload(http, srv.base, board_id, card_id, data, "x.bin", declared)
    if detected is None:  # HTML is text to the sniffer: accepted, stored and served as text/plain
        assert status == 201 and body["content_type"] == "text/plain"
        return
    assert status == 415, body
    assert body["error"]["details"]["detected"] == detected
    assert await blob_keys(srv) == set()
    assert await pending_uploads(srv) == 0


async def test_declared_text_types_are_stored_as_plain_text(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    srv = await start(blob_allowed_types=("text/plain",))
    board_id, card_id = await board_with_card(http, srv.base)
    status, att = await upload(http, srv.base, board_id, card_id, b"a,b\n1,2\n", "t.csv", "text/csv")
    assert status == 201 and att["content_type"] == "text/plain"
    status, body = await upload(http, srv.base, board_id, card_id, png(4, 4), "p.png", "image/png")
    assert status == 415 and "may not be uploaded" in body["error"]["message"]


async def test_file_names_are_sanitised_and_never_reach_keys(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    srv = await start()
    board_id, card_id = await board_with_card(http, srv.base)
    cases = {
        "../../etc/passwd": "passwd",
        "..\\..\\windows\\system32\\evil.txt": "evil.txt",
        "report\u202egnp.exe.txt": "reportgnp.exe.txt",  # a bidi override that would hide .exe
        "  ...hidden  ": "hidden",
        'a"b<c>d;e.txt': "a_b_c_d_e.txt",
        "CON.txt": "_CON.txt",
        "": "file",
        "x" * 300 + ".txt": "x" * 196 + ".txt",
    }
    for raw, expected in cases.items():
        status, att = await upload(http, srv.base, board_id, card_id, b"some text", raw, "text/plain")
        assert status == 201, (raw, att)
        assert att["name"] == expected, raw
        assert att["blob_key"].count("/") == 2 and expected not in att["blob_key"]
    keys = await blob_keys(srv)
    assert len(keys) == len(cases) and all(k.startswith(f"attachments/{board_id}/") for k in keys)


async def test_bad_uploads(start: Starter, http: aiohttp.ClientSession) -> None:
    srv = await start()
    board_id, card_id = await board_with_card(http, srv.base)
    url = f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments"
    async with http.post(url, data=b"raw bytes", headers={"Content-Type": "image/png"}) as r:
        assert r.status == 415
    wrong_part = multipart(b"hello", "a.txt", "text/plain", name="other")
    async with http.post(
        url, data=wrong_part, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    ) as r:
        assert r.status == 400
    two_files = multipart(b"one", "a.txt", None)[: -len(f"--{BOUNDARY}--\r\n")] + multipart(
        b"two", "b.txt", None
    )
    for content_type, raw in (
        ("multipart/form-data", b"no boundary given"),
        (f"multipart/form-data; boundary={BOUNDARY}", b"not a multipart body at all"),
        (f"multipart/form-data; boundary={BOUNDARY}", two_files),  # one file per request
    ):
        async with http.post(url, data=raw, headers={"Content-Type": content_type}) as r:
            assert r.status == 400, (content_type, raw, await r.text())
    assert await blob_keys(srv) == set()
    # an epilogue after the closing boundary is allowed (RFC 2046)
    epilogue = multipart(b"x", "a.txt", None) + b"trailing words"
    async with http.post(
        url, data=epilogue, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    ) as r:
        assert r.status == 201
    async with http.get(f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments") as r:
        kept = (await r.json())["attachments"]
    status, body = await upload(http, srv.base, board_id, str(uuid.uuid4()), b"hello", "a.txt")
    assert status == 404 and set(body["error"]["details"]) == {"card"}
    assert await blob_keys(srv) == {a["blob_key"] for a in kept}


# ------------------------------------------------------------------ signed URLs


async def test_signed_url_tampering_and_expiry_are_refused(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    srv = await start()
    signer = srv.app[URL_SIGNER]
    key = new_key("attachments", uuid.uuid4())
    await put_bytes(srv.app[BLOBS], key, b"secret", content_type="text/plain")
    good = signer.url(key, content_type="text/plain", filename="s.txt", inline=False, expires_s=60)
    async with http.get(srv.base + good) as r:
        assert r.status == 200 and await r.read() == b"secret"
    payload, sig = good.rsplit("/", 1)[1].split(".")
    other = new_key("attachments", uuid.uuid4())
    forged = signer.url(other, content_type="text/plain", filename="s.txt", inline=False, expires_s=60)
    attempts = {
        "signature": f"{payload}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}",
        "swapped": f"{forged.rsplit('/', 1)[1].split('.')[0]}.{sig}",  # another payload, this signature
        "unsigned": payload,
    }
    for what, token in attempts.items():
        async with http.get(f"{srv.base}/api/v1/blobs/{token}") as r:
            assert r.status == 403, what
            assert (await r.json())["error"]["code"] == "forbidden"
    expired = signer.url(key, content_type="text/plain", filename="s.txt", inline=False, expires_s=-1)
    async with http.get(srv.base + expired) as r:
        assert r.status == 403
        assert (await r.json())["error"]["details"]["reason"] == "expired"


# ------------------------------------------------------------------ deletion after commit


async def _sweep(srv: RunningServer) -> None:
    await srv.app[BLOB_SWEEPER].sweep()


async def test_deleted_attachment_blobs_go_after_the_commit(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    srv = await start(blob_sweep_interval_s=3600.0)  # only the commit's notification wakes it
    board_id, card_id = await board_with_card(http, srv.base)
    _, att = await upload(http, srv.base, board_id, card_id, png(), "p.png")
    _, kept = await upload(http, srv.base, board_id, card_id, b"keep me", "k.txt")
    url = f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments/{att['id']}"
    sweeper = srv.app[BLOB_SWEEPER]
    swept = sweeper.next_sweep()
    async with http.delete(url) as r:
        assert r.status == 204
    async with asyncio.timeout(10):  # the sweeper wakes on the commit's NOTIFY
        while (await swept).deleted == 0:
            swept = sweeper.next_sweep()
    assert await blob_keys(srv) == {kept["blob_key"]}
    async with http.get(url) as r:
        assert r.status == 404
    count: int = await srv.app[POOL].fetchval("SELECT count(*) FROM blob_trash")
    assert count == 0


async def test_card_column_and_board_deletion_remove_their_blobs(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    srv = await start(blob_sweep_interval_s=3600.0)
    board_id, card_id = await board_with_card(http, srv.base)
    _, a = await upload(http, srv.base, board_id, card_id, png(), "p.png")
    board2, card2 = await board_with_card(http, srv.base)
    _, b = await upload(http, srv.base, board2, card2, b"text", "t.txt")
    _, c = await upload(http, srv.base, board2, card2, b"more", "u.txt")
    async with http.delete(f"{srv.base}{API}/{board_id}/cards/{card_id}") as r:
        assert r.status == 204
    await _sweep(srv)
    assert await blob_keys(srv) == {b["blob_key"], c["blob_key"]}
    async with http.delete(f"{srv.base}{API}/{board2}") as r:
        assert r.status == 204
    await _sweep(srv)
    assert await blob_keys(srv) == set()
    assert a["thumb_key"] is not None


async def test_a_referenced_blob_is_never_swept(start: Starter, http: aiohttp.ClientSession) -> None:
    """Whatever the ledger says: a trash entry or a stale upload row of a blob that a committed
    attachment refers to leaves the blob alone."""
    srv = await start(blob_orphan_grace_s=0.001)
    board_id, card_id = await board_with_card(http, srv.base)
    _, att = await upload(http, srv.base, board_id, card_id, b"precious", "p.txt")
    pool: asyncpg.Pool = srv.app[POOL]
    await pool.execute("INSERT INTO blob_trash (key) VALUES ($1)", att["blob_key"])
    await srv.app[BLOB_LEDGER].record_uploads([att["blob_key"]], uuid.UUID(board_id))
    await _sweep(srv)
    assert await blob_keys(srv) == {att["blob_key"]}
    assert await pool.fetchval("SELECT count(*) FROM blob_trash") == 0
    assert await pending_uploads(srv) == 0


async def test_an_upload_orphaned_by_a_crash_is_swept_after_the_grace(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    """A blob stored whose attachment never committed (the process died in between): kept
    during the grace period, removed after it."""
    srv = await start(blob_orphan_grace_s=3600.0)
    key = new_key("attachments", uuid.uuid4())
    await srv.app[BLOB_LEDGER].record_uploads([key], None)
    await put_bytes(srv.app[BLOBS], key, b"orphan", content_type="text/plain")
    await _sweep(srv)
    assert await blob_keys(srv) == {key}  # may still be about to commit
    await srv.app[POOL].execute("UPDATE blob_uploads SET created_at = now() - interval '2 hours'")
    await _sweep(srv)
    assert await blob_keys(srv) == set()
    assert await pending_uploads(srv) == 0


# ------------------------------------------------------------------ health and metrics


async def test_health_and_metrics_show_blob_store_failures(
    start_server: ServerFactory, s3_endpoint: str, http: aiohttp.ClientSession
) -> None:
    srv = await start_server(
        blob_store="s3",
        blob_s3_bucket="bucket-that-does-not-exist",
        blob_s3_endpoint_url=s3_endpoint,
        blob_s3_access_key_id=ACCESS_KEY,
        blob_s3_secret_access_key=SECRET_KEY,
    )
    async with http.get(f"{srv.base}/health") as r:
        report = await r.json()
        assert r.status == 200 and report["status"] == "degraded"
        assert report["blob_store"]["ok"] is False
    board_id, card_id = await board_with_card(http, srv.base)
    status, body = await upload(http, srv.base, board_id, card_id, b"hello", "a.txt")
    assert status == 503 and body["error"]["code"] == "unavailable"
    async with http.get(f"{srv.base}/metrics") as r:
        text = await r.text()
    assert 'boardcast_blob_failures_total{op="check"} 1.0' in text
    assert 'boardcast_blob_failures_total{op="put"} 1.0' in text
    assert 'boardcast_blob_failures_total{op="delete"} 1.0' in text
    # the store could not even be cleaned: the ledger keeps the key for the sweeper
    assert await pending_uploads(srv) == 1


async def test_a_websocket_deletion_sweeps_after_its_commit(
    http: aiohttp.ClientSession, server: RunningServer, connect: Callable[..., Awaitable[Any]]
) -> None:
    board_id, card_id = await board_with_card(http, server.base)
    _, att = await upload(http, server.base, board_id, card_id, png(), "p.png")
    ws = await connect("json")
    await ws.join(board_id)
    swept = server.app[BLOB_SWEEPER].next_sweep()
    answer = await ws.cmd(board_id, {"op": "attachment.delete", "attachment_id": att["id"]})
    assert answer["type"] == "ack", answer
    async with asyncio.timeout(10):
        while (await swept).deleted == 0:
            swept = server.app[BLOB_SWEEPER].next_sweep()
    assert await blob_keys(server) == set()
    # and a client cannot record a file of its own choosing
    forged = {**att, "id": str(uuid.uuid4())}
    refused = await ws.cmd(board_id, {"op": "attachment.add", "attachment": forged})
    assert refused["type"] == "error" and refused["code"] == "forbidden"


async def test_a_deletion_whose_commit_fails_keeps_the_blob(
    http: aiohttp.ClientSession, start_server: ServerFactory, database_url: str
) -> None:
    """PostgreSQL refuses the commit that would delete the row: the blob stays, the trash
    stays empty (it is written in that same transaction), and the attachment is still served."""
    srv = await start_server()
    board_id, card_id = await board_with_card(http, srv.base)
    _, att = await upload(http, srv.base, board_id, card_id, b"keep", "undeletable.txt")
    name = f"test_refuse_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF OLD.name = 'undeletable.txt' THEN
                        RAISE EXCEPTION 'refused' USING ERRCODE = '23514';
                    END IF;
                    RETURN OLD;
                END $$;
                CREATE TRIGGER {name} BEFORE DELETE ON attachments
                    FOR EACH ROW EXECUTE FUNCTION {name}();"""
        )
        url = f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments/{att['id']}"
        async with http.delete(url) as r:
            assert r.status >= 400
        await _sweep(srv)
        assert await blob_keys(srv) == {att["blob_key"]}
        assert await conn.fetchval("SELECT count(*) FROM blob_trash") == 0
        async with http.get(url) as r:
            assert r.status == 200 and await r.read() == b"keep"
    finally:
        await conn.execute(f"DROP TRIGGER IF EXISTS {name} ON attachments; DROP FUNCTION IF EXISTS {name}()")
        await conn.close()
    async with http.delete(url) as r:
        assert r.status == 204
    await _sweep(srv)
    assert await blob_keys(srv) == set()


async def test_s3_without_presigned_urls_is_served_by_the_server(
    start_server: ServerFactory, s3_endpoint: str, http: aiohttp.ClientSession
) -> None:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    await create_bucket(s3_endpoint, bucket)
    srv = await start_server(
        blob_store="s3",
        blob_s3_bucket=bucket,
        blob_s3_endpoint_url=s3_endpoint,
        blob_s3_access_key_id=ACCESS_KEY,
        blob_s3_secret_access_key=SECRET_KEY,
        blob_s3_presign=False,
    )
    board_id, card_id = await board_with_card(http, srv.base)
    data = jpeg()
    _, att = await upload(http, srv.base, board_id, card_id, data, "p.jpg")
    url = f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments/{att['id']}"
    async with http.get(url, allow_redirects=False) as r:
        assert r.headers["Location"].startswith("/api/v1/blobs/")
    async with http.get(url) as r:
        assert await r.read() == data
        assert r.headers["Content-Type"] == "image/jpeg"
        assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_an_upload_whose_outcome_is_unknown_keeps_its_blob(
    start_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """The request gives up waiting for the board (504) but the command is in its mailbox and
    commits after all: the blob must not have been deleted, and the sweeper keeps it."""
    srv = await start_server(ask_timeout_s=0.000001, blob_orphan_grace_s=0.001)
    board = await create_board(http, srv.base)
    registry = srv.app[REGISTRY]
    board_id = uuid.UUID(board["id"])
    # the REST routes would time out too: set the board up through the registry
    await registry.ask(board_id, Execute(author=DEV_USER.id, rid=None, cmd=c.CreateColumn(title="C")), 10)
    column_id = (await registry.ask(board_id, GetSnapshot(), 10)).columns[0].id
    await registry.ask(
        board_id,
        Execute(author=DEV_USER.id, rid=None, cmd=c.CreateCard(column_id=column_id, title="card")),
        10,
    )
    card_id = (await registry.ask(board_id, GetSnapshot(), 10)).cards[0].id
    status, body = await upload(http, srv.base, str(board_id), str(card_id), b"maybe", "m.txt")
    assert status == 504, body
    snap = await registry.ask(board_id, GetSnapshot(), 10)  # after the upload's command
    assert [a.name for a in snap.attachments] == ["m.txt"]
    key = snap.attachments[0].blob_key
    assert await blob_keys(srv) == {key}
    await _sweep(srv)
    assert await blob_keys(srv) == {key}  # referenced: kept, and its ledger row dropped
    assert await pending_uploads(srv) == 0


async def test_files_larger_than_the_json_body_limit_stream_through(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    """BOARDCAST_MAX_BODY_BYTES bounds JSON bodies read whole; an upload is streamed, bounded by
    BOARDCAST_BLOB_MAX_BYTES alone."""
    srv = await start(max_body_bytes=65_536)
    board_id, card_id = await board_with_card(http, srv.base)
    data = b"0123456789abcdef\n" * 200_000  # 3.4 MB
    status, att = await upload(http, srv.base, board_id, card_id, data, "log.txt", chunked=True)
    assert status == 201 and att["size"] == len(data)
    async with http.get(f"{srv.base}{API}/{board_id}/cards/{card_id}/attachments/{att['id']}") as r:
        assert await r.read() == data
