"""The cookie WebSocket's origin check behind a reverse proxy that rewrites ``Host``: pages of
``BOARDCAST_ALLOWED_ORIGINS`` are accepted, and so is the host in ``X-Forwarded-Host`` when
(and only when) a trusted proxy sent it."""

from __future__ import annotations

import ipaddress

import pytest

from tests.identity import register
from tests.test_auth_ws import cookie_session, refused_upgrade, ws  # noqa: F401 (fixture)

PUBLIC = "https://boards.example.com"
# what a proxy in front of the node sends: its own upstream name as Host
PROXIED_HOST = "boardcast-node-1:8080"
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


async def cookie_headers(http, srv) -> dict[str, str]:
    acct = await register(http, srv.base)
    return {"Cookie": await cookie_session(http, srv.base, acct), "Host": PROXIED_HOST}


async def test_a_configured_allowed_origin_is_accepted_whatever_the_host(http, start_server, ws):  # noqa: F811
    srv = await start_server(auth="jwt", allowed_origins=(PUBLIC, "http://localhost:3000"))
    headers = await cookie_headers(http, srv)
    for origin in (PUBLIC, "https://Boards.Example.com/", "http://localhost:3000"):
        client = await ws(srv.ws_url, headers={**headers, "Origin": origin})
        assert client.welcome["type"] == "welcome"
    for origin in ("https://evil.example", "http://boards.example.com", "https://boards.example.com:444"):
        assert await refused_upgrade(http, srv.ws_url, headers={**headers, "Origin": origin}) == 403


@pytest.mark.parametrize("forwarded", ["boards.example.com", "a.internal, boards.example.com"])
async def test_the_forwarded_host_of_a_trusted_proxy_is_the_host(http, start_server, ws, forwarded):  # noqa: F811
    srv = await start_server(auth="jwt", trusted_proxies=LOOPBACK)
    headers = {**await cookie_headers(http, srv), "X-Forwarded-Host": forwarded}
    client = await ws(srv.ws_url, headers={**headers, "Origin": PUBLIC})
    assert client.welcome["type"] == "welcome"
    # the rewritten Host no longer counts, nor does another site
    for origin in (f"http://{PROXIED_HOST}", "https://evil.example"):
        assert await refused_upgrade(http, srv.ws_url, headers={**headers, "Origin": origin}) == 403


async def test_the_forwarded_host_of_an_untrusted_peer_is_ignored(http, start_server, ws):  # noqa: F811
    srv = await start_server(auth="jwt", trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    headers = {**await cookie_headers(http, srv), "X-Forwarded-Host": "boards.example.com"}
    assert await refused_upgrade(http, srv.ws_url, headers={**headers, "Origin": PUBLIC}) == 403
    # the Host it did send still counts
    client = await ws(srv.ws_url, headers={**headers, "Origin": f"http://{PROXIED_HOST}"})
    assert client.welcome["type"] == "welcome"
