"""The guard in front of every request: authentication, then the rate limit of the route's
tier. One middleware, so each request pays for one identity check and one limiter round trip.

When Redis does not answer, reads and writes are served unlimited (fail open) and
authentication attempts are refused (fail closed): better a short sign-in outage than an open
door for password guessing. The outage is logged once, counted and shown in ``/health``.
"""

from __future__ import annotations

import enum
import math

import structlog
from aiohttp import web

from actors import Metrics
from protocol.errors import BoardcastError, ErrorCode
from server.access import User
from server.config import Rate, Settings
from server.keys import RATE
from server.ratelimit import Decision, RateLimiter, RateLimiterUnavailable, address_bucket, client_ip

log = structlog.get_logger(__name__)
_RETRY_WHEN_DOWN_S = 5


class Tier(enum.Enum):
    READS = "reads"
    WRITES = "writes"
    AUTH = "auth"
    EXEMPT = "exempt"  # health, metrics, the OpenAPI document

    @staticmethod
    def for_method(method: str) -> Tier:
        return Tier.READS if method in ("GET", "HEAD", "OPTIONS") else Tier.WRITES


class Guard:
    def __init__(self, settings: Settings, limiter: RateLimiter, metrics: Metrics) -> None:
        self._s = settings
        self._limiter = limiter
        self._metrics = metrics
        self._rates = {
            Tier.READS: settings.rate_reads,
            Tier.WRITES: settings.rate_writes,
            Tier.AUTH: settings.rate_auth,
        }
        self._down = False
        self._outcomes = {
            (tier, outcome): metrics.rate_limit.labels(tier=tier.value, outcome=outcome)
            for tier in self._rates
            for outcome in ("allowed", "limited", "fail_open", "fail_closed")
        }
        metrics.rate_limiter_up.set(1)

    @property
    def enabled(self) -> bool:
        return self._s.rate_limit

    def client(self, request: web.Request) -> str:
        # Several header lines are one comma-separated list (RFC 9110 5.3); a proxy may add its
        # own line after one the client sent.
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", ())) or None
        return client_ip(request.remote, forwarded, self._s.trusted_proxies)

    def subject(self, request: web.Request, user: User | None, tier: Tier) -> str:
        """Whose bucket: the user's when signed in, else (and always for sign-in attempts) the
        client address."""
        if user is not None and tier is not Tier.AUTH:
            return f"user:{user.id}"
        return f"ip:{address_bucket(self.client(request))}"

    async def admit(self, request: web.Request, tier: Tier, subject: str, *, report: bool = True) -> None:
        """Count one request of ``tier`` for ``subject``; raise 429 when over the limit.
        ``report`` puts the decision in the answer's RateLimit-* headers."""
        if tier is Tier.EXEMPT or not self._s.rate_limit:
            return
        rate = self._rates[tier]
        try:
            decision = await self._limiter.check(tier.value, subject, rate)
        except RateLimiterUnavailable as e:
            self._unavailable(tier, e)
            return
        if self._down:
            self._down = False
            self._metrics.rate_limiter_up.set(1)
            log.info("rate_limiter_recovered")
        if report:
            # With two limits on one request (login: address and email), the headers report
            # the tighter one.
            shown = request.get(RATE)
            if shown is None or not decision.allowed or decision.remaining < shown.remaining:
                request[RATE] = decision
        if decision.allowed:
            self._outcomes[tier, "allowed"].inc()
            return
        self._outcomes[tier, "limited"].inc()
        raise too_many(tier.value, decision, rate)

    def _unavailable(self, tier: Tier, e: Exception) -> None:
        if not self._down:
            self._down = True
            self._metrics.rate_limiter_up.set(0)
            log.warning(
                "rate_limiter_unavailable",
                error=repr(e),
                policy="reads and writes unlimited, sign-in refused",
            )
        if tier is Tier.EXEMPT:  # the health probe: reported, not counted
            return
        if tier is Tier.AUTH:
            self._outcomes[tier, "fail_closed"].inc()
            raise BoardcastError(
                ErrorCode.UNAVAILABLE,
                "sign-in is briefly unavailable (the rate limiter cannot be reached); retry shortly",
                {"retry_after_s": _RETRY_WHEN_DOWN_S},
            )
        self._outcomes[tier, "fail_open"].inc()

    async def probe(self) -> dict[str, object]:
        """For /health: one real decision on a key of its own."""
        if not self._s.rate_limit:
            return {"ok": True, "enabled": False}
        try:
            await self._limiter.check("health", "probe", Rate(1_000_000, 1))
        except RateLimiterUnavailable as e:
            self._unavailable(Tier.EXEMPT, e)
            return {
                "ok": False,
                "enabled": True,
                "policy": "fail open for reads and writes, closed for sign-in",
            }
        if self._down:
            self._down = False
            self._metrics.rate_limiter_up.set(1)
            log.info("rate_limiter_recovered")
        return {"ok": True, "enabled": True}


def too_many(tier: str, decision: Decision, rate: Rate) -> BoardcastError:
    wait = decision.retry_after_s
    return BoardcastError(
        ErrorCode.RATE_LIMITED,
        f"too many {tier} requests (at most {rate.count} per {rate.period_s:g} s); "
        f"retry in {math.ceil(wait)} s",
        {"tier": tier, "retry_after_s": round(wait, 3)},
    )


def rate_headers(resp: web.StreamResponse, decision: Decision) -> None:
    h = resp.headers
    h["RateLimit-Limit"] = str(decision.limit)
    h["RateLimit-Remaining"] = str(decision.remaining)
    h["RateLimit-Reset"] = str(math.ceil(decision.reset_s))
