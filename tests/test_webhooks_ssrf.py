"""The webhook SSRF guard (docs/WEBHOOKS.md): internal targets refused at creation and at
delivery, DNS rebinding included; what configuration allows; no redirects followed and
bounded answers."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from server.keys import WEBHOOK_GUARD
from tests.conftest import create_board, create_column, free_port
from tests.webhook_receiver import (
    FAST,
    create_webhook,
    get_json,
    no_webhooks_left,  # noqa: F401 (an autouse fixture)
    receiver,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

STRICT = {**FAST, "webhook_allowed_networks": ()}

# (address in a URL, the range the refusal names)
INTERNAL = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link_local"),  # cloud metadata services
    ("100.64.0.1", "shared"),
    ("224.0.0.251", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("240.0.0.1", "private"),  # reserved (Python files it under private)
    ("192.0.2.10", "private"),  # documentation
    ("255.255.255.255", "private"),  # broadcast
    ("[::1]", "loopback"),
    ("[::]", "unspecified"),
    ("[fe80::1]", "link_local"),
    ("[fc00::1]", "private"),
    ("[fd12:3456::1]", "private"),
    ("[ff02::1]", "multicast"),
    ("[2001:db8::1]", "private"),  # documentation
    ("[::ffff:127.0.0.1]", "loopback"),  # IPv4-mapped
    ("[::ffff:169.254.169.254]", "link_local"),
    ("[::ffff:10.0.0.1]", "private"),
    ("[::127.0.0.1]", "loopback"),  # IPv4-compatible
    ("[64:ff9b::a00:1]", "private"),  # NAT64 of 10.0.0.1
    ("[2002:7f00:1::1]", "loopback"),  # 6to4 of 127.0.0.1
]


class FakeDNS(AbstractResolver):
    """A stand-in for the outside DNS: answers what the test says a name resolves to now."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in self.answers[host]
        ]

    async def close(self) -> None:
        pass


def _hooks(base: str, bid: str, rest: str = "") -> str:
    return f"{base}/api/v1/boards/{bid}/webhooks{rest}"


async def _post(http: Any, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with http.post(url, json=body) as r:
        return r.status, await r.json()


async def test_internal_targets_are_refused_at_creation(http, start_server):
    srv = await start_server(**STRICT)
    bid = (await create_board(http, srv.base))["id"]
    refused = []
    for host, _ in INTERNAL:
        status, body = await _post(http, _hooks(srv.base, bid), {"url": f"https://{host}:8443/hook"})
        assert status == 400, (host, body)
        err = body["error"]
        assert err["code"] == "bad_request"
        assert err["details"]["reason"] == "target_refused"
        refused.append((host, err["details"]["range"]))
        expected = ipaddress.ip_address(host.strip("[]"))
        assert ipaddress.ip_address(err["details"]["address"]) == expected
    assert refused == INTERNAL
    # a name is resolved and checked too (localhost is in /etc/hosts)
    status, body = await _post(http, _hooks(srv.base, bid), {"url": "http://localhost:8080/"})
    assert status == 400 and body["error"]["details"]["range"] == "loopback", body
    # a global address is fine (nothing is sent at creation)
    status, body = await _post(http, _hooks(srv.base, bid), {"url": "https://93.184.216.34/hook"})
    assert status == 201, body
    assert (await get_json(http, _hooks(srv.base, bid)))["webhooks"][0]["url"] == "https://93.184.216.34/hook"


async def test_bad_urls_are_refused(http, start_server):
    srv = await start_server(**STRICT)
    bid = (await create_board(http, srv.base))["id"]
    for url in (
        "ftp://93.184.216.34/x",
        "file:///etc/passwd",
        "http://user:pw@93.184.216.34/",
        "http://93.184.216.34/#frag",
        "http:///nohost",
        "http://93.184.216.34:99999/",
        "http://exa mple.com/",
        "http://93.184.216.34/\x7f",
        "https://" + "a" * 2050 + ".com/",
        "not a url",
    ):
        status, body = await _post(http, _hooks(srv.base, bid), {"url": url})
        assert status == 400, (url, body)
    assert (await get_json(http, _hooks(srv.base, bid)))["webhooks"] == []


async def test_configuration_allows_internal_targets(http, start_server):
    srv = await start_server(**{**STRICT, "webhook_allowed_networks": (ipaddress.ip_network("10.1.0.0/16"),)})
    bid = (await create_board(http, srv.base))["id"]
    assert (await _post(http, _hooks(srv.base, bid), {"url": "http://10.1.2.3/h"}))[0] == 201
    assert (await _post(http, _hooks(srv.base, bid), {"url": "http://[::ffff:10.1.2.3]/h"}))[0] == 201
    assert (await _post(http, _hooks(srv.base, bid), {"url": "http://10.2.0.1/h"}))[0] == 400
    open_srv = await start_server(**{**STRICT, "webhook_allow_private": True})
    for host, _ in INTERNAL[:3] + INTERNAL[12:14]:
        status, body = await _post(http, _hooks(open_srv.base, bid), {"url": f"http://{host}/h"})
        assert status == 201, (host, body)


async def test_a_refused_url_cannot_be_patched_in(http, start_server):
    srv = await start_server(**STRICT)
    bid = (await create_board(http, srv.base))["id"]
    hook = await create_webhook(http, srv.base, bid, "https://93.184.216.34/hook")
    url = _hooks(srv.base, bid, f"/{hook['id']}")
    async with http.patch(url, json={"url": "http://169.254.169.254/"}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["details"]["range"] == "link_local"
    after = await get_json(http, _hooks(srv.base, bid, f"/{hook['id']}"))
    assert after["url"] == "https://93.184.216.34/hook"


async def _attempts(http: Any, base: str, bid: str, hook_id: str) -> list[dict[str, Any]]:
    body = await get_json(http, _hooks(base, bid, f"/{hook_id}/deliveries"))
    return list(body["deliveries"])


async def test_delivery_refuses_a_target_that_configuration_no_longer_allows(http, start_server):
    """Created while 127.0.0.1 was allowed; a node without that allowance refuses to deliver."""
    async with receiver() as rec:
        allowing = await start_server(**{**FAST, "webhook_dispatch": False})
        bid = (await create_board(http, allowing.base))["id"]
        hook = await create_webhook(http, allowing.base, bid, rec.url)
        await allowing.stop()
        strict = await start_server(**STRICT)
        await create_column(http, strict.base, bid)
        attempts = await wait_until(lambda: _attempts(http, strict.base, bid, hook["id"]))
        assert attempts[0]["outcome"] == "refused"
        assert attempts[0]["status"] is None
        assert "127.0.0.1" in attempts[0]["error"] and "loopback" in attempts[0]["error"]
        assert rec.received == []
        async with http.get(f"{strict.base}/metrics") as r:
            assert 'boardcast_webhook_deliveries_total{outcome="refused"}' in await r.text()


async def test_dns_rebinding_to_an_internal_address_is_refused_at_delivery(http, start_server):
    async with receiver() as rec:
        srv = await start_server(**STRICT)
        dns = FakeDNS()
        srv.app[WEBHOOK_GUARD].dns = dns
        port = rec.url.split(":")[2].split("/")[0]
        name = "hooks.rebind.test"
        dns.answers[name] = ["93.184.216.34"]  # public when the webhook is created
        bid = (await create_board(http, srv.base))["id"]
        hook = await create_webhook(http, srv.base, bid, f"http://{name}:{port}/hook")
        assert dns.asked == [name]
        dns.answers[name] = ["127.0.0.1"]  # and loopback when it is delivered to
        await create_column(http, srv.base, bid)
        attempts = await wait_until(lambda: _attempts(http, srv.base, bid, hook["id"]))
        assert attempts[0]["outcome"] == "refused", attempts
        assert "loopback" in attempts[0]["error"]
        assert rec.received == []  # the checked lookup was the one used: nothing reached 127.0.0.1
        # one internal address among public ones is refused as well
        dns.answers[name] = ["93.184.216.34", "10.0.0.7"]
        status, body = await _post(http, _hooks(srv.base, bid), {"url": f"http://{name}/x"})
        assert status == 400 and body["error"]["details"]["address"] == "10.0.0.7"
        dns.answers.pop(name)
        status, body = await _post(http, _hooks(srv.base, bid), {"url": f"http://{name}/x"})
        assert status == 400 and body["error"]["details"]["range"] == "unresolvable"


async def test_redirects_are_not_followed(http, start_server):
    hit: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hit.append(request.path)
        if request.path == "/hook":
            raise web.HTTPFound("/elsewhere")
        return web.Response(text="followed")

    app = web.Application()
    app.router.add_post("/{tail:.*}", redirect)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        srv = await start_server(**{**FAST, "webhook_max_failures": 2})
        bid = (await create_board(http, srv.base))["id"]
        hook = await create_webhook(http, srv.base, bid, f"http://127.0.0.1:{port}/hook")
        await create_column(http, srv.base, bid)
        attempts = await wait_until(lambda: _attempts(http, srv.base, bid, hook["id"]))
        assert attempts[-1]["status"] == 302 and attempts[-1]["outcome"] == "failed"
        assert "redirects are not followed" in attempts[-1]["error"]
        assert set(hit) == {"/hook"}
    finally:
        await runner.cleanup()


async def test_a_huge_answer_is_not_read(http, start_server):
    served: list[int] = []

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        chunk = b"x" * 65536
        try:
            for _ in range(2048):  # 128 MiB if anyone read it all
                await resp.write(chunk)
                served.append(len(chunk))
        except (ConnectionResetError, ConnectionError):
            pass
        return resp

    app = web.Application()
    app.router.add_post("/hook", huge)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        srv = await start_server(**{**FAST, "webhook_max_response_bytes": 1024})
        bid = (await create_board(http, srv.base))["id"]
        hook = await create_webhook(http, srv.base, bid, f"http://127.0.0.1:{port}/hook")
        await create_column(http, srv.base, bid)
        attempts = await wait_until(lambda: _attempts(http, srv.base, bid, hook["id"]))
        assert attempts[0]["outcome"] == "delivered" and attempts[0]["status"] == 200
        assert sum(served) < 64 * 1024 * 1024  # the connection was closed, not drained
    finally:
        await runner.cleanup()
