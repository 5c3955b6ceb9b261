"""Where a webhook may send: the SSRF guard (docs/WEBHOOKS.md).

A webhook URL is chosen by a board admin, and the server POSTs to it from inside the
network: without a guard, an admin could make the server talk to its own metrics, to the cloud
provider's metadata service (169.254.169.254) or to anything else on the private network. So
every address a target resolves to must be global: loopback, link-local, private, shared
(CGNAT), multicast, unspecified, documentation and other reserved ranges are refused, in IPv4
and IPv6 alike, and so are IPv6 addresses that embed such an IPv4 address (IPv4-mapped,
IPv4-compatible, 6to4, Teredo, NAT64). Configuration may allow them all
(``BOARDCAST_WEBHOOK_ALLOW_PRIVATE``) or some networks (``BOARDCAST_WEBHOOK_ALLOWED_NETWORKS``).

The check runs at creation and again at every delivery. At delivery the HTTP client's own
resolver is :class:`GuardedResolver`, so the addresses that were checked are the ones it
connects to: a name that resolves to a public address when checked and to 127.0.0.1 a moment
later (DNS rebinding) cannot slip through, since there is no second lookup.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT


class TargetRefused(OSError):
    """The target may not be delivered to; ``reason`` is a stable word (see :func:`refusal`).

    An OSError, so that aiohttp's connector, which wraps resolver errors in its own
    ``ClientConnectorError``, keeps it as the cause."""

    def __init__(self, reason: str, message: str, address: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.address = address


def _embedded_ipv4(ip: IPAddress) -> tuple[ipaddress.IPv4Address | None, bool]:
    """The IPv4 address an IPv6 address carries, if any, and whether the IPv6 address *is*
    that IPv4 address (IPv4-mapped, IPv4-compatible, NAT64) rather than a tunnel towards it
    (6to4, Teredo), whose own IPv6 address is checked as well."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None, False
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, True
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), True
    if int(ip) >> 32 == 0 and int(ip) > 1:  # IPv4-compatible ::a.b.c.d (deprecated)
        return ipaddress.IPv4Address(int(ip)), True
    if ip.sixtofour is not None:
        return ip.sixtofour, False
    if ip.teredo is not None:
        return ip.teredo[1], False  # the client's address
    return None, False


def _range(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "shared"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


def range_of(ip: IPAddress) -> str | None:
    """The internal range ``ip`` is in (None: a global address)."""
    embedded, same = _embedded_ipv4(ip)
    if embedded is not None:
        where = _range(embedded)
        if where is not None or same:
            return where
    return _range(ip)


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    def refusal(self, ip: IPAddress) -> str | None:
        """Why ``ip`` may not be delivered to (None: it may)."""
        if self.allow_private:
            return None
        where = range_of(ip)
        if where is None:
            return None
        embedded, _ = _embedded_ipv4(ip)
        for net in self.allowed_networks:
            if ip in net or (embedded is not None and embedded in net):
                return None
        return where

    def check(self, addresses: Iterable[str]) -> None:
        """Raise :class:`TargetRefused` unless every address is allowed."""
        found = False
        for text in addresses:
            found = True
            ip = ipaddress.ip_address(text.split("%", 1)[0])  # no zone index in the check
            where = self.refusal(ip)
            if where is not None:
                raise TargetRefused(
                    where, f"the target resolves to {ip}, a {where.replace('_', '-')} address", str(ip)
                )
        if not found:
            raise TargetRefused("unresolvable", "the target's host name has no address")


def literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_url(url: str) -> tuple[str, int]:
    """The host and port of a webhook URL, or ValueError saying what is wrong with it."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"a URL of at most {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("no user name or password in the URL (deliveries are signed instead)")
    if parts.fragment or "#" in url:
        raise ValueError("no fragment (#...) in the URL")
    if any(ch.isspace() or ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise ValueError("no spaces or control characters in the URL")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise ValueError(f"a valid host and port: {e}") from None
    if not host:
        raise ValueError("a host")
    if literal_ip(host) is None and not all(ch.isalnum() or ch in "-._" for ch in host):
        raise ValueError("a host name of letters, digits, '-' and '.'")
    return host, port or (443 if parts.scheme == "https" else 80)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that answers only addresses the policy allows; anything else is
    :class:`TargetRefused`. ``dns`` is the resolver it asks (replaceable, for tests)."""

    def __init__(self, policy: TargetPolicy, dns: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.dns: AbstractResolver = dns or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        ip = literal_ip(host)
        if ip is not None:  # aiohttp does not ask a resolver for literals; check_target does
            self.policy.check([str(ip)])
            return [
                ResolveResult(
                    hostname=host,
                    host=str(ip),
                    port=port,
                    family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                    proto=0,
                    flags=socket.AI_NUMERICHOST,
                )
            ]
        try:
            found = await self.dns.resolve(host, port, family)
        except OSError as e:
            raise TargetRefused("unresolvable", f"the target's host name does not resolve: {e}") from e
        self.policy.check(r["host"] for r in found)
        return found

    async def check_target(self, url: str) -> None:
        """Resolve and check a URL's host (raises :class:`TargetRefused`)."""
        host, port = check_url(url)
        await self.resolve(host, port, socket.AF_UNSPEC)

    async def close(self) -> None:
        await self.dns.close()
