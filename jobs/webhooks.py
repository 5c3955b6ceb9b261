"""The webhook dispatcher: delivers board events to webhooks, in seq order, at least once.

It never touches a board actor's path: events are read from the event log after they were
committed, so a slow or dead receiver costs the board nothing. Any number of processes on one
database may run a dispatcher. Each loop claims due webhooks (``FOR UPDATE SKIP LOCKED`` and a
lease in the webhook's row, storage/webhooks.py), reads the events after the webhook's cursor,
delivers them one by one and moves the cursor after each success, each write conditional on
still holding the lease. A failure stops the webhook at that event until its next attempt
(exponential backoff with jitter, capped), so order is kept; a process that dies mid-delivery
leaves a lease that expires, and another delivers the event again (receivers de-duplicate by
the event id header).

Wake-ups are a poll of ``poll_s``: one indexed query per interval, and nothing on the commit
path (a NOTIFY per commit would take PostgreSQL's global notify lock on every group commit).

The dispatcher needs a :class:`~storage.webhooks.WebhookRepo`, a resolver for the SSRF guard
and a way to tell a board that a webhook was disabled (:data:`Notify`): an arq worker can run
it with the same three.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from jobs.targets import GuardedResolver, TargetRefused, literal_ip
from protocol import commands as c
from protocol import webhooks as wire
from storage.webhooks import ClaimedWebhook, LoggedEvent, WebhookRepo

log = structlog.get_logger(__name__)

# (board_id, request id, command): submit a command to the board as the server itself. The
# request id makes a repeat (after a crash between telling and recording it) a duplicate.
Notify = Callable[[uuid.UUID, str, c.Command], Awaitable[None]]

_ENCODER = msgspec.json.Encoder()
_USER_AGENT = "Boardcast-Webhooks/1"
_MAX_ERROR = 500


@dataclass(frozen=True, slots=True)
class DispatcherSettings:
    poll_s: float = 0.5
    timeout_s: float = 10.0
    max_response_bytes: int = 65_536
    backoff_base_s: float = 1.0
    backoff_max_s: float = 900.0
    max_failures: int = 25
    max_failing_s: float = 86_400.0
    concurrency: int = 16
    lease_s: float = 60.0
    events_per_claim: int = 100  # then the lease is given back and the webhook claimed again


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "boardcast_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, failed, refused by the SSRF guard)",
            ["outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "boardcast_webhook_delivery_seconds",
            "Duration of webhook delivery attempts",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.disabled = Counter(
            "boardcast_webhooks_disabled", "Webhooks disabled after failing", registry=registry
        )
        self.errors = Counter(
            "boardcast_webhook_dispatcher_errors",
            "Dispatcher loops that failed (database...)",
            registry=registry,
        )


def backoff_s(failures: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before the next attempt after ``failures`` failures in a row: doubling from
    ``base_s``, capped at ``max_s``, with jitter over its upper half (so many webhooks that failed
    together do not retry together)."""
    ceiling = min(max_s, base_s * 2.0 ** min(failures - 1, 60))
    return rng.uniform(ceiling / 2, ceiling)


def _retry_after(raw: str | None) -> float | None:
    """Seconds of a Retry-After header (the date form is not honoured)."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 <= value < 1e9 else None


@dataclass(frozen=True, slots=True)
class _Result:
    outcome: str  # delivered | failed | refused
    status: int | None
    error: str | None
    duration_ms: float
    retry_after_s: float | None = None


class Dispatcher:
    def __init__(
        self,
        repo: WebhookRepo,
        resolver: GuardedResolver,
        notify: Notify,
        settings: DispatcherSettings,
        metrics: WebhookMetrics,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.repo = repo
        self.resolver = resolver
        self.settings = settings
        self.metrics = metrics
        self.node_id = uuid.uuid4()  # this dispatcher's lease owner id
        self._notify = notify
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._log = log.bind(node=str(self.node_id))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=self.resolver,
            use_dns_cache=False,  # every connection resolves (and is checked) afresh
            limit=self.settings.concurrency * 2,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            auto_decompress=False,
            trust_env=False,  # no proxy from the environment: the guard must see the target
        )
        self._task = asyncio.create_task(self._loop(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """Stop claiming; let deliveries in flight finish for a moment, then cancel them and
        give their leases back (a cancelled delivery is delivered again: at least once)."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        held = list(self._running)
        if self._running:
            _, pending = await asyncio.wait(self._running.values(), timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if held:
            with contextlib.suppress(Exception):
                await self.repo.release(held, self.node_id)
        if self._session is not None:
            await self._session.close()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            claimed = 0
            free = self.settings.concurrency - len(self._running)
            if free > 0:
                try:
                    hooks = await self.repo.claim(self.node_id, self.settings.lease_s, free)
                except Exception as e:
                    self.metrics.errors.inc()
                    self._log.warning("webhook_claim_failed", error=repr(e))
                    hooks = []
                claimed = len(hooks)
                for hook in hooks:
                    task = asyncio.create_task(self._work(hook), name=f"webhook:{hook.id}")
                    self._running[hook.id] = task
                    task.add_done_callback(functools.partial(self._done, hook.id))
            if claimed and claimed == free:
                await asyncio.sleep(0)  # more may be due: claim again at once
                continue
            self._wake.clear()
            waiters = [asyncio.ensure_future(self._stopping.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waiters, timeout=self.settings.poll_s, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()

    def _done(self, webhook_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        # The webhook may already be claimed again (its lease was given back before this ran).
        if self._running.get(webhook_id) is task:
            del self._running[webhook_id]
        if not task.cancelled() and task.exception() is not None:
            self.metrics.errors.inc()
            self._log.warning("webhook_work_failed", webhook_id=str(webhook_id), error=repr(task.exception()))
        if not self._stopping.is_set():
            self._wake.set()  # a slot is free

    async def _work(self, hook: ClaimedWebhook) -> None:
        try:
            if hook.notify_pending:
                await self._tell_disabled(
                    hook, hook.consecutive_failures, hook.disabled_at, hook.disabled_reason
                )
            if hook.active:
                await self._deliver_pending(hook)
        finally:
            if not self._stopping.is_set():  # when stopping, stop() gives every lease back at once
                await self.repo.release([hook.id], self.node_id)

    async def _deliver_pending(self, hook: ClaimedWebhook) -> None:
        s = self.settings
        events = await self.repo.events_after(hook.board_id, hook.cursor_seq, s.events_per_claim)
        failures = hook.consecutive_failures
        skipped_to = None
        for event in events:
            if self._stopping.is_set():
                break
            if hook.kinds is not None and event.kind not in hook.kinds:
                skipped_to = event.seq
                continue
            attempt = failures + 1
            result = await self._send(hook, event, attempt)
            self.metrics.deliveries.labels(outcome=result.outcome).inc()
            self.metrics.latency.observe(result.duration_ms / 1000)
            bound = self._log.bind(
                webhook_id=str(hook.id), board_id=str(hook.board_id), seq=event.seq, attempt=attempt
            )
            if result.outcome == "delivered":
                assert result.status is not None
                if not await self.repo.delivered(
                    hook.id, self.node_id, event, attempt, result.status, result.duration_ms, s.lease_s
                ):
                    bound.warning("webhook_lease_lost")
                    return
                bound.debug(
                    "webhook_delivered", status=result.status, duration_ms=round(result.duration_ms, 1)
                )
                failures, skipped_to = 0, None
                continue
            delay = backoff_s(attempt, s.backoff_base_s, s.backoff_max_s, self._rng)
            if result.retry_after_s is not None:
                delay = min(s.backoff_max_s, max(delay, result.retry_after_s))
            outcome = await self.repo.failed(
                hook.id,
                self.node_id,
                event,
                attempt,
                result.outcome,
                result.status,
                result.error or "",
                result.duration_ms,
                delay,
                s.max_failures,
                s.max_failing_s,
            )
            bound.info(
                "webhook_delivery_failed",
                outcome=result.outcome,
                status=result.status,
                error=result.error,
                retry_in_s=round(delay, 3),
                disabled=outcome.disabled,
            )
            if outcome.disabled:
                self.metrics.disabled.inc()
                bound.warning("webhook_disabled", failures=outcome.failures, host=_host(hook.url))
                await self._tell_disabled(hook, outcome.failures, outcome.disabled_at, outcome.reason)
            return  # order: nothing after a failed event goes before it
        if skipped_to is not None:
            await self.repo.skip_to(hook.id, self.node_id, skipped_to, s.lease_s)

    async def _tell_disabled(
        self, hook: ClaimedWebhook, failures: int, disabled_at: dt.datetime | None, reason: str | None
    ) -> None:
        """Submit ``webhook.disabled`` to the board; recorded as told only once the board took
        it (else the next claim tries again, under the same request id)."""
        stamp = 0 if disabled_at is None else int(disabled_at.timestamp() * 1000)
        cmd = c.ReportWebhookDisabled(
            webhook_id=hook.id, host=_host(hook.url), reason=reason or "failing", failures=failures
        )
        try:
            await self._notify(hook.board_id, f"whd:{hook.id}:{stamp}", cmd)
        except Exception as e:
            self._log.warning("webhook_disabled_notice_failed", webhook_id=str(hook.id), error=repr(e))
            return
        await self.repo.notified(hook.id, self.node_id)

    # ------------------------------------------------------------------ one attempt

    async def _send(self, hook: ClaimedWebhook, event: LoggedEvent, attempt: int) -> _Result:
        assert self._session is not None
        body = _ENCODER.encode(
            wire.Delivery(
                id=wire.event_id(hook.board_id, event.seq),
                webhook_id=hook.id,
                board_id=hook.board_id,
                seq=event.seq,
                kind=event.kind,
                author=event.author,
                ts_ms=event.ts_ms,
                event=msgspec.Raw(event.body.encode()),
            )
        )
        now = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            wire.EVENT_ID_HEADER: wire.event_id(hook.board_id, event.seq),
            wire.EVENT_KIND_HEADER: event.kind,
            wire.WEBHOOK_ID_HEADER: str(hook.id),
            wire.ATTEMPT_HEADER: str(attempt),
            wire.SIGNATURE_HEADER: wire.signature_header(hook.secret, now, body),
        }
        t0 = time.perf_counter()

        def took() -> float:
            return (time.perf_counter() - t0) * 1000

        try:
            # aiohttp resolves names through the guarded resolver; a literal address is checked
            # here, since aiohttp never asks a resolver about one.
            host = urlsplit(hook.url).hostname or ""
            ip = literal_ip(host)
            if ip is not None:
                self.resolver.policy.check([str(ip)])
            async with self._session.post(
                hook.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                await self._drain(resp)
                if 200 <= resp.status < 300:
                    return _Result("delivered", resp.status, None, took())
                error = f"HTTP {resp.status}"
                if 300 <= resp.status < 400:
                    error += " (redirects are not followed)"
                return _Result(
                    "failed", resp.status, error, took(), _retry_after(resp.headers.get("Retry-After"))
                )
        except TargetRefused as e:
            return _Result("refused", None, e.message, took())
        except aiohttp.ClientConnectorError as e:
            cause = e.os_error if isinstance(e.os_error, TargetRefused) else e.__cause__
            if isinstance(cause, TargetRefused):
                return _Result("refused", None, cause.message, took())
            return _Result("failed", None, _short(f"cannot connect: {e.os_error}"), took())
        except TimeoutError:
            return _Result("failed", None, f"timed out after {self.settings.timeout_s:g} s", took())
        except aiohttp.ClientError as e:
            return _Result("failed", None, _short(f"{type(e).__name__}: {e}"), took())
        except (ValueError, UnicodeError, OSError) as e:  # a URL the client cannot use, a socket error
            return _Result("failed", None, _short(f"{type(e).__name__}: {e}"), took())

    async def _drain(self, resp: aiohttp.ClientResponse) -> None:
        """Read at most ``max_response_bytes`` of the answer (nothing in it is used); a longer
        one has its connection closed rather than read."""
        left = self.settings.max_response_bytes
        while left > 0:
            chunk = await resp.content.read(min(left, 16_384))
            if not chunk:
                return
            left -= len(chunk)
        if not resp.content.at_eof():
            resp.close()


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _short(text: str) -> str:
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "…"
