"""A small actor runtime: mailbox, lifecycle, supervision, passivation.

An actor handles its mailbox one drained batch at a time, so its state needs no locks.
Callers hold an :class:`ActorRef`-like handle and use ``tell`` or ``ask(timeout=...)``; an
envelope carries the reply future. When an actor stops, every waiting ask fails with a clear
error, so nothing waits forever.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from protocol.errors import BoardcastError, ErrorCode

log = structlog.get_logger(__name__)


class ActorState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ActorStopped(BoardcastError):
    def __init__(self, name: str) -> None:
        super().__init__(ErrorCode.UNAVAILABLE, f"{name} is not running; retry")


class Envelope:
    __slots__ = ("msg", "reply")

    def __init__(self, msg: Any, reply: asyncio.Future[Any] | None) -> None:
        self.msg = msg
        self.reply = reply

    def resolve(self, value: Any) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(value)

    def fail(self, exc: BaseException) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(exc)


class Actor:
    """Subclasses implement :meth:`on_start`, :meth:`handle` and optionally
    :meth:`on_restart`, :meth:`should_passivate` and :meth:`on_stop`."""

    name = "actor"
    max_batch = 512
    idle_check_s = 30.0
    max_restarts = 5

    def __init__(self) -> None:
        self._mailbox: deque[Envelope] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The loop the actor runs on, kept: CPython 3.11's get_running_loop() makes a getpid()
        # system call on every lookup, and submit() runs once per WebSocket command.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._stopped_callbacks: list[Callable[[Actor], None]] = []
        self.state = ActorState.STARTING

    # ------------------------------------------------------------------ callers' side

    def start(self) -> None:
        assert self._task is None, "actor already started"
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name=self.name)

    @property
    def accepting(self) -> bool:
        return self.state in (ActorState.STARTING, ActorState.RUNNING)

    def tell(self, msg: Any) -> None:
        self._enqueue(Envelope(msg, None))

    async def ask(self, msg: Any, timeout_s: float) -> Any:
        fut: asyncio.Future[Any] = (self._loop or asyncio.get_running_loop()).create_future()
        self._enqueue(Envelope(msg, fut))
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError:
            raise BoardcastError(
                ErrorCode.TIMEOUT, f"{self.name} did not answer within {timeout_s}s"
            ) from None

    def submit(self, msg: Any) -> asyncio.Future[Any]:
        """Enqueue and return the reply future without waiting: for callers that pipeline
        many messages and react to completions (a WebSocket connection)."""
        fut: asyncio.Future[Any] = (self._loop or asyncio.get_running_loop()).create_future()
        self._enqueue(Envelope(msg, fut))
        return fut

    def mailbox_depth(self) -> int:
        return len(self._mailbox)

    def on_stopped(self, callback: Callable[[Actor], None]) -> None:
        self._stopped_callbacks.append(callback)

    async def stop(self) -> None:
        """Stop after the messages already queued; waits until stopped."""
        self._stop_requested = True
        self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    def _enqueue(self, env: Envelope) -> None:
        if not self.accepting:
            raise ActorStopped(self.name)
        self._mailbox.append(env)
        self._wake.set()

    def requeue_front(self, envs: list[Envelope]) -> None:
        """Put envelopes taken from the mailbox back at its head, in order."""
        self._mailbox.extendleft(reversed(envs))

    # ------------------------------------------------------------------ actor's side

    async def on_start(self) -> None:
        """Load state. Raising stops the actor and fails every waiting ask with the error."""

    async def on_restart(self) -> None:
        """Reload state after :meth:`handle` raised."""
        await self.on_start()

    async def handle(self, batch: list[Envelope]) -> None:
        raise NotImplementedError

    def should_passivate(self) -> bool:
        return False

    async def on_stop(self) -> None:
        """Release what the actor holds; runs once, whatever the reason for stopping."""

    async def _run(self) -> None:
        restarts = 0
        try:
            try:
                await self.on_start()
            except Exception as e:
                self._fail_all(e)
                return
            self.state = ActorState.RUNNING
            while True:
                if not self._mailbox:
                    if self._stop_requested:
                        break
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(self.idle_check_s):
                            await self._wake.wait()
                    except TimeoutError:
                        # Checked and acted on without an await in between, so no message can
                        # slip into a mailbox that is about to be abandoned.
                        if not self._mailbox and self.should_passivate():
                            log.info("actor_passivated", actor=self.name)
                            break
                    continue
                n = min(len(self._mailbox), self.max_batch)
                batch = [self._mailbox.popleft() for _ in range(n)]
                try:
                    await self.handle(batch)
                    restarts = 0  # the limit is on consecutive crashes
                except Exception as e:
                    log.exception("actor_crashed", actor=self.name)
                    err = BoardcastError(ErrorCode.INTERNAL, "internal error; nothing was applied")
                    for env in batch:
                        env.fail(err)
                    restarts += 1
                    if restarts > self.max_restarts:
                        self._fail_all(e)
                        return
                    try:
                        await self.on_restart()
                    except Exception as e2:
                        log.error("actor_restart_failed", actor=self.name, error=str(e2))
                        self._fail_all(e2)
                        return
        finally:
            self.state = ActorState.STOPPED
            self._fail_all(ActorStopped(self.name))
            try:
                await self.on_stop()
            finally:
                for cb in self._stopped_callbacks:
                    cb(self)

    def _fail_all(self, exc: BaseException) -> None:
        self.state = ActorState.STOPPED
        err = exc if isinstance(exc, BoardcastError) else ActorStopped(self.name)
        while self._mailbox:
            self._mailbox.popleft().fail(err)
