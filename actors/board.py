"""The board actor: one per open board, the only thing that changes a board.

It drains its mailbox, applies every waiting command to the in-memory state, persists the
whole batch in one transaction (group commit), and only then acknowledges the senders and
broadcasts the events, each encoded once per wire format.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence, Set
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

from actors.gc_pause import gc_paused
from actors.messages import (
    AccessChanged,
    AccessLookup,
    BoardSettings,
    CommandResult,
    DeleteBoard,
    Execute,
    GetSnapshot,
    GetSnapshotJson,
    SetPresenceState,
    Subscribe,
    Subscriber,
    Unsubscribe,
)
from actors.metrics import Metrics
from actors.presence import Presence
from actors.runtime import Actor, Envelope
from actors.state import BoardState
from protocol import commands as c
from protocol.codec import JSON, Codec
from protocol.errors import BoardcastError, ErrorCode, bad_request, not_found
from protocol.messages import Ack, EventMsg, Joined, ServerMessage
from protocol.model import dec_hook
from storage import BoardRepo, FencedOut, StaleBoard, StoredEvent

log = structlog.get_logger(__name__)

_EVENT_JSON = msgspec.json.Encoder()
_EVENT_DECODER: msgspec.json.Decoder[c.Event] = msgspec.json.Decoder(c.Event, dec_hook=dec_hook)
_FINGERPRINT = msgspec.msgpack.Encoder()


def _not_saved() -> BoardcastError:
    return BoardcastError(ErrorCode.UNAVAILABLE, "the change could not be saved; nothing was applied")


def _no_answer() -> BoardcastError:
    return BoardcastError(ErrorCode.UNAVAILABLE, "the board could not answer; retry")


def _fenced_out() -> BoardcastError:
    return BoardcastError(
        ErrorCode.UNAVAILABLE, "the board moved to another activation; nothing was applied; retry"
    )


def fingerprint(cmd: c.Command) -> int:
    """A stable 64-bit hash of a command (the same in every process and after a restart, unlike
    ``hash()``), kept with its request id in the event log to tell a retry from a reuse."""
    digest = hashlib.blake2b(_FINGERPRINT.encode(cmd), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _is_data_error(exc: BaseException) -> bool:
    """A commit refused for what the batch holds (SQLSTATE class 22 data exception or 23
    integrity constraint violation), not because the database or the fence failed."""
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and state[:2] in ("22", "23")


@dataclass(slots=True)
class _FlushPresence:
    pass


@dataclass(slots=True)
class _Pending:
    env: Envelope
    msg: Execute
    seq: int
    event: EventMsg | None  # None for a duplicate of an earlier request
    fp: int | None  # fingerprint of the command, when it has a request id
    entity: msgspec.Struct | None = None
    lookup: bool = False  # a REST duplicate whose entity must be found from the event log


class BoardActor(Actor):
    def __init__(
        self,
        board_id: uuid.UUID,
        repo: BoardRepo,
        metrics: Metrics,
        settings: BoardSettings,
        access: AccessLookup,
    ) -> None:
        super().__init__()
        self.board_id = board_id
        self.name = f"board:{board_id}"
        self.max_batch = settings.max_batch
        self.idle_check_s = settings.idle_passivate_s
        self._repo = repo
        self._access = access
        self._metrics = metrics
        self._settings = settings
        self._state: BoardState | None = None
        self._recent: deque[EventMsg] = deque(maxlen=settings.recent_events)
        # (author, rid) -> (seq, fingerprint of the command); the fingerprint is unknown (None)
        # only for requests logged before fingerprints were stored.
        self._requests: OrderedDict[tuple[uuid.UUID, str], tuple[int, int | None]] = OrderedDict()
        self._subs: dict[str, Subscriber] = {}
        self._presence = Presence(board_id)
        # viewers who joined since the last presence diff, by the presence version their
        # viewer list showed
        self._fresh: dict[int, list[str]] = {}
        self._presence_timer: asyncio.TimerHandle | None = None
        self._log = log.bind(board_id=str(board_id))
        self._deleted = False
        # The snapshot at one seq, encoded once per codec: every joiner of a storm and every
        # REST read until the next change gets the same bytes.
        self._snapshot_seq = -1
        self._snapshots: dict[Codec, bytes] = {}
        self._epoch = 0  # taken on activation; fences every commit (see BoardRepo.claim_epoch)
        self._fenced = False

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        t0 = time.perf_counter()
        # A new epoch per activation, before the load: an older activation of this board (in
        # another process on the same database) can no longer commit.
        epoch = await self._repo.claim_epoch(self.board_id)
        if epoch is None:
            raise not_found("board", self.board_id)
        self._epoch = epoch
        await self._load(t0)
        self._metrics.activation.observe(time.perf_counter() - t0)

    async def _load(self, t0: float | None = None) -> None:
        """Read the board from Postgres, keeping this activation's epoch: a reload after a
        failure is the same activation, and one that was replaced finds out at its next
        commit (FencedOut). ``t0``: when the activation started (for the log line)."""
        t_read = time.perf_counter()
        with gc_paused():  # hundreds of thousands of objects, none of them garbage: see gc_pause
            loaded = await self._repo.load_board(self.board_id, self._settings.remembered_requests)
            if loaded is None:
                raise not_found("board", self.board_id)
            t_built = time.perf_counter()
            self._state = BoardState(loaded)
        t_end = time.perf_counter()
        self._snapshot_seq, self._snapshots = -1, {}  # a reload may bring back a seq with other content
        self._recent.clear()
        self._requests = OrderedDict(((a, r), (s, f)) for a, r, s, f in loaded.recent_requests)
        self._log.info(
            "board_activated",
            seq=loaded.seq,
            epoch=self._epoch,
            cards=len(loaded.cards),
            # claiming the epoch, reading every table, building the in-memory state
            epoch_ms=round((t_read - (t0 if t0 is not None else t_read)) * 1000, 2),
            read_ms=round((t_built - t_read) * 1000, 2),
            build_ms=round((t_end - t_built) * 1000, 2),
        )

    async def on_restart(self) -> None:
        self._metrics.actor_restarts.inc()
        # A flush message lost in a crashed batch must not leave presence unscheduled forever.
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
            self._schedule_presence()
        await self._load()
        # Whatever the crashed batch held is lost (the runtime failed it): an AccessChanged, or
        # the Unsubscribe of a connection that left or closed. The viewers' grants are read
        # again with the board, and a connection that no longer wants the board drops out.
        await self._read_access_or_drop(list(self._subs.values()))

    def should_passivate(self) -> bool:
        return not self._subs

    async def on_stop(self) -> None:
        if self._presence_timer is not None:
            self._presence_timer.cancel()
        for sub in self._subs.values():
            sub.board_closed(self.board_id, "board_unavailable")
        self._subs.clear()

    # ------------------------------------------------------------------ the loop

    async def handle(self, batch: list[Envelope]) -> None:
        self._metrics.mailbox_depth.observe(len(batch) + self.mailbox_depth())
        pending: list[_Pending] = []
        i = 0
        while i < len(batch):
            if self._fenced:  # see _fence_out: nothing more is applied here
                for env in batch[i:]:
                    env.fail(_fenced_out())
                return
            env = batch[i]
            msg = env.msg
            if isinstance(msg, Execute):
                try:
                    self._execute(env, msg, pending)
                except Exception:
                    # A bug while applying: the state may be half-changed. Nothing of this
                    # batch was committed; fail what was applied, keep what was not yet
                    # looked at, and start again from Postgres.
                    self._log.exception("apply_crashed", op=msg.cmd.__struct_config__.tag)
                    crashed = BoardcastError(ErrorCode.INTERNAL, "internal error; nothing was applied")
                    env.fail(crashed)
                    for p in pending:
                        p.env.fail(crashed)
                    # Requeued only once the reload worked: if it raises, the runtime fails
                    # the whole batch, and what it fails must not be applied later.
                    await self.on_restart()
                    self.requeue_front(batch[i + 1 :])
                    return
                i += 1
                continue
            # Everything else must observe committed state: commit what is waiting first.
            if pending:
                if not await self._commit(pending):
                    self.requeue_front(batch[i:])
                    return
                pending = []
            if isinstance(msg, Subscribe):
                # A run of joins (a reconnect storm) shares one access read instead of queueing
                # one query per join behind each other.
                j = i + 1
                while j < len(batch) and isinstance(batch[j].msg, Subscribe):
                    j += 1
                await self._subscribe_run(batch[i:j])
                i = j
                continue
            await self._handle_other(env, msg)
            i += 1
        if pending:
            await self._commit(pending)
        self._flush_presence_joins()

    def _execute(self, env: Envelope, msg: Execute, pending: list[_Pending]) -> None:
        st = self._board
        if self._deleted:
            env.fail(not_found("board", self.board_id))
            return
        fp = None
        reused_at = None  # the seq of an earlier, different command under the same rid
        # Only a REST caller answers with the entity; a WebSocket sender (origin) gets an ack.
        for_rest = env.reply is not None and msg.origin is None
        if msg.rid is not None:
            fp = fingerprint(msg.cmd)
            seen = self._requests.get((msg.author, msg.rid))
            if seen is not None:
                seq, known = seen
                if known is None or known == fp:
                    # A retry of what was applied (while it was allowed) changes nothing and
                    # is acknowledged as before, whatever the sender's role is now.
                    original = self._recent_event(seq)
                    entity = st.entity_after(original.event) if for_rest and original else None
                    # A REST retry whose event left memory (a restart, a failover): its entity
                    # is read from the log before the answer (_entities_from_log).
                    lookup = for_rest and original is None
                    pending.append(_Pending(env, msg, seq, None, None, entity, lookup))
                    return
                reused_at = seq
        # Before the conflict answer, which would tell someone without access about the board.
        refused = (
            msg.origin.refusal(self.board_id, msg.cmd, st.owns(msg.cmd, msg.author))
            if msg.origin is not None
            else None
        )
        if refused is not None:
            self._metrics.commands.labels(op=msg.cmd.__struct_config__.tag, outcome=refused.code).inc()
            env.fail(refused)
            return
        if reused_at is not None:
            env.fail(
                BoardcastError(
                    ErrorCode.CONFLICT,
                    "this request id was already used for a different command",
                    {"seq": reused_at},
                )
            )
            return
        now_ms = int(time.time() * 1000)
        try:
            event = st.apply(msg.cmd, msg.author, now_ms)
        except BoardcastError as e:
            self._metrics.commands.labels(op=msg.cmd.__struct_config__.tag, outcome=e.code).inc()
            env.fail(e)
            return
        st.seq += 1
        if msg.rid is not None:
            self._remember(msg.author, msg.rid, st.seq, fp)
        em = EventMsg(
            board_id=self.board_id,
            seq=st.seq,
            author=msg.author,
            ts_ms=now_ms,
            event=event,
            rid=msg.rid,
        )
        entity = st.entity_after(event) if for_rest else None
        pending.append(_Pending(env, msg, st.seq, em, fp, entity))

    async def _commit(self, pending: list[_Pending]) -> bool:
        """Persist, then ack and broadcast. On failure nobody hears of success: the senders
        get an error and the state is reloaded from Postgres. Returns False when the batch
        failed as a whole (the board was reloaded; what follows it must be looked at again)."""
        events = [p.event for p in pending if p.event is not None]
        if events:
            t0 = time.perf_counter()
            batch = self._board.take_batch(events[0].seq - 1, self._epoch)
            batch.events = [
                StoredEvent(
                    seq=e.seq,
                    kind=e.event.__struct_config__.tag,  # type: ignore[arg-type]
                    body=_EVENT_JSON.encode(e.event).decode(),
                    author=e.author,
                    request_id=e.rid,
                    ts_ms=e.ts_ms,
                    fingerprint=p.fp,
                )
                for p in pending
                if (e := p.event) is not None
            ]
            try:
                await self._repo.persist(batch)
            except FencedOut:
                # Definitive: nothing was written, and nothing this activation holds may be
                # committed or acknowledged any more.
                self._metrics.commit_failures.inc()
                self._log.warning("commit_fenced_out", epoch=self._epoch, commands=len(pending))
                self._fence_out(pending)
                return False
            except Exception as exc:
                self._metrics.commit_failures.inc()
                self._log.error("commit_failed", error=repr(exc), commands=len(pending))
                try:
                    await self.on_restart()
                    # Judged by the commit's own token, never by the board's seq: another
                    # writer may have committed that seq, and taking its commit for ours would
                    # ack commands that were never stored.
                    landed = not isinstance(exc, StaleBoard) and await self._repo.commit_landed(
                        self.board_id, events[-1].seq, batch.commit_token
                    )
                except Exception:
                    # Postgres is gone before the outcome could be read: the batch may have
                    # been stored. Its senders must not hear "nothing was applied"; the actor
                    # stops or restarts (the runtime) and a retry with the same request id is
                    # answered by what the log holds.
                    self._refuse(
                        pending,
                        BoardcastError(
                            ErrorCode.UNAVAILABLE,
                            "the outcome of this change is unknown; retry with the same request id",
                        ),
                    )
                    raise
                if not landed:
                    if not _is_data_error(exc):
                        self._refuse(pending, _not_saved())
                        return False
                    if len(pending) > 1:
                        return await self._retry_split(pending)
                    # The one command at fault: refused; the reloaded board carries on.
                    self._refuse(
                        pending,
                        BoardcastError(
                            ErrorCode.BAD_REQUEST,
                            "the change was refused by the database; nothing was applied",
                        ),
                    )
                    return True
                # The error came after Postgres committed (connection lost on COMMIT, a
                # timeout): the batch is durable, so it is acknowledged and broadcast.
                self._log.warning("commit_outcome_recovered", seq=events[-1].seq)
            else:
                self._metrics.commit_latency.observe(time.perf_counter() - t0)
                self._metrics.commit_batch.observe(len(events))
        if any(p.lookup for p in pending):
            await self._entities_from_log(pending)
        now = time.perf_counter()
        acks: dict[Subscriber, list[bytes]] = {}
        for p in pending:
            m = p.msg
            dup = p.event is None
            if m.origin is not None and m.rid is not None:
                ack = Ack(rid=m.rid, board_id=self.board_id, seq=p.seq, duplicate=dup)
                acks.setdefault(m.origin, []).append(m.origin.codec.encode(ack))
            p.env.resolve(CommandResult(seq=p.seq, duplicate=dup, event=p.event, entity=p.entity))
            self._metrics.commands.labels(op=m.cmd.__struct_config__.tag, outcome="ok").inc()
            if m.received:
                self._metrics.command_latency.observe(now - m.received)
        # Acks first, each sender's in one frame; then the whole commit's events in one frame
        # per encoding, the same bytes to every viewer.
        for origin, encoded in acks.items():
            origin.send_frame(origin.codec.frame(encoded))
        self._recent.extend(events)
        self._broadcast(events)
        return True

    async def _entities_from_log(self, pending: list[_Pending]) -> None:
        """The entities of REST retries whose original event is no longer in memory, as they
        are now, from the event log (rare: a retry after a restart or a failover). A failed
        read leaves the entity out; the REST layer answers with what it can find."""
        for p in pending:
            if not p.lookup:
                continue
            try:
                stored = await self._repo.events_since(self.board_id, p.seq - 1, 1)
                if stored and stored[0].seq == p.seq:
                    p.entity = self._board.entity_after(_EVENT_DECODER.decode(stored[0].body))
            except Exception as e:
                self._log.warning("duplicate_entity_read_failed", seq=p.seq, error=repr(e))

    def _fence_out(self, pending: list[_Pending]) -> None:
        """Another activation took the board: fail the batch and everything waiting with
        `unavailable`, and stop (the viewers are told `board_unavailable` and join again,
        which reaches the board's current activation)."""
        self._fenced = True
        err = _fenced_out()
        self._refuse(pending, err)
        self._stop_requested = True
        self._fail_all(err)  # stops accepting: later senders are answered ActorStopped

    def lease_lost(self) -> None:
        """The board's lease is gone (not renewed in time, or taken by another node): take
        nothing more. A commit already on its way is judged by the epoch fence in PostgreSQL
        (acked only if it landed under this activation's epoch); everything still waiting is
        refused, and the actor stops, telling its viewers to join again."""
        self._fenced = True
        self._stop_requested = True
        self._fail_all(_fenced_out())
        self._wake.set()

    def _refuse(self, pending: list[_Pending], err: BoardcastError) -> None:
        """Answer these commands with ``err`` (counted by its code); none of them is acked."""
        for p in pending:
            self._metrics.commands.labels(op=p.msg.cmd.__struct_config__.tag, outcome=err.code).inc()
            p.env.fail(err)

    async def _retry_split(self, pending: list[_Pending]) -> bool:
        """A batch refused for its data (a constraint the validation did not foresee): apply
        and commit its commands again in halves, down to one, so that only the command at
        fault gets the error and the rest are acknowledged. The board was reloaded, so every
        command is looked at afresh (one that built on the faulty one may now be refused)."""
        self._metrics.commit_splits.inc()
        half = max(1, len(pending) // 2)
        for group in (pending[:half], pending[half:]):
            again: list[_Pending] = []
            for p in group:
                self._execute(p.env, p.msg, again)
            if again and not await self._commit(again):
                # The database failed, not one command: what was not tried fails with it.
                rest = [p for p in pending if p.env.reply is not None and not p.env.reply.done()]
                self._refuse(rest, _not_saved())
                return False
        return True

    def _broadcast(self, msgs: Sequence[ServerMessage], exclude: Set[str] = frozenset()) -> None:
        if not msgs or not self._subs:
            return
        subs = self._subs.values()
        self._send_to([s for s in subs if s.conn_id not in exclude] if exclude else subs, msgs)

    def _recent_event(self, seq: int) -> EventMsg | None:
        if self._recent and self._recent[0].seq <= seq <= self._recent[-1].seq:
            return self._recent[seq - self._recent[0].seq]
        return None

    def _remember(self, author: uuid.UUID, rid: str, seq: int, fingerprint: int | None) -> None:
        self._requests[(author, rid)] = (seq, fingerprint)
        if len(self._requests) > self._settings.remembered_requests:
            self._requests.popitem(last=False)

    @property
    def _board(self) -> BoardState:
        assert self._state is not None, "board state used before load"
        return self._state

    # ------------------------------------------------------------------ other messages

    async def _handle_other(self, env: Envelope, msg: Any) -> None:
        try:
            match msg:
                case Unsubscribe():
                    self._unsubscribe(msg.conn_id)
                    env.resolve(None)
                case SetPresenceState():
                    if msg.conn_id in self._subs:
                        self._presence.set_state(msg.conn_id, msg.state)
                        self._schedule_presence()
                    env.resolve(None)
                case AccessChanged():
                    await self._access_changed(msg)
                    env.resolve(None)
                case _FlushPresence():
                    self._presence_timer = None
                    self._flush_presence()
                case GetSnapshot():
                    env.resolve(self._board.snapshot())
                case GetSnapshotJson():
                    env.resolve(self._snapshot_json())
                case DeleteBoard():
                    await self._delete(msg)
                    env.resolve(None)
                case _:
                    raise BoardcastError(ErrorCode.INTERNAL, f"unexpected message {type(msg).__name__}")
        except BoardcastError as e:
            env.fail(e)
        except Exception as e:
            # A failed read (the event log for a resume, a delete) changes no board state:
            # that request fails alone and the board carries on.
            self._log.error("request_failed", message=type(msg).__name__, error=repr(e))
            env.fail(_no_answer())

    async def _subscribe_run(self, envs: list[Envelope]) -> None:
        """Subscribe a run of joins with one read of their access. Every joiner's ``joined``
        carries the viewer list as it stands after the whole run, so the presence diff that
        announces them goes only to the viewers who were there before (a joiner never hears
        of itself, nor of those already in its list)."""
        subscribes: list[tuple[Envelope, Subscribe]] = []
        for env in envs:
            msg = env.msg
            assert isinstance(msg, Subscribe)
            if self._deleted:
                env.fail(not_found("board", self.board_id))
            elif not msg.sub.joining(self.board_id):
                self._join_failed(env, msg, BoardcastError(ErrorCode.NOT_JOINED, "the join was given up"))
            else:
                subscribes.append((env, msg))
        if not subscribes:
            return
        self._metrics.join_run.observe(len(subscribes))
        try:
            grants = await self._access(self.board_id, list({m.sub.user_id for _, m in subscribes}))
        except Exception as e:
            self._log.error("access_read_failed", error=repr(e), viewers=len(subscribes))
            for env, msg in subscribes:
                self._join_failed(env, msg, _no_answer())
            return
        joins: list[tuple[Envelope, Subscriber, Joined, bool]] = []
        for env, msg in subscribes:
            try:
                joined, snapshot = await self._subscribe(msg, grants.get(msg.sub.user_id))
            except BoardcastError as e:
                self._join_failed(env, msg, e)
            except Exception as e:
                # A failed read of the event log for a resume changes no board state.
                self._log.error("request_failed", message="Subscribe", error=repr(e))
                self._join_failed(env, msg, _no_answer())
            else:
                joins.append((env, msg.sub, joined, snapshot))
        if not joins:
            return
        # The viewer list (as long as the board has viewers, for every joiner) and the
        # snapshot are encoded once per codec for the whole run and spliced into each joiner's
        # `joined`, not encoded again for each of them.
        viewers = self._presence.viewers()
        encoded_viewers: dict[Codec, bytes] = {}
        for env, sub, joined, snapshot in joins:
            codec = sub.codec
            if codec not in encoded_viewers:
                encoded_viewers[codec] = codec.encode(viewers)
            spliced = joined_message(
                codec,
                joined,
                encoded_viewers[codec],
                self._encoded_snapshot(codec) if snapshot else None,
            )
            # Pushed by the actor itself so it reaches the connection before any later event.
            sub.send_frame(codec.frame([spliced]))
            env.resolve(joined.seq)
        # The joiners' lists show presence as it is now: from the next diff they get only what
        # changes after this. Joins are announced to the others on the coalescing timer, so a
        # reconnect storm costs each viewer one diff per interval, not one per run of joins.
        # A connection that joined again is cut only where its latest list was taken.
        joiners = list(dict.fromkeys(sub.conn_id for _, sub, _, _ in joins))
        for conns in self._fresh.values():
            conns[:] = [c for c in conns if c not in joiners]
        self._fresh.setdefault(self._presence.version, []).extend(joiners)
        self._schedule_presence()

    def _join_failed(self, env: Envelope, msg: Subscribe, e: BoardcastError) -> None:
        # A failed join leaves the board, even one joined before (a re-join): from now on
        # nothing of it reaches the connection.
        self._unsubscribe(msg.sub.conn_id)
        env.fail(e)

    async def _subscribe(self, msg: Subscribe, grant: object | None) -> tuple[Joined, bool]:
        """Check the joiner's ``grant`` (read for it in mailbox order), add it as a viewer and
        return its ``joined`` and whether it gets the snapshot (the caller adds the snapshot
        and the viewer list, encoded once for every joiner)."""
        sub = msg.sub
        if grant is None:
            if sub.conn_id in self._subs:  # a re-join by someone who lost access: told so
                sub.access_changed(self.board_id, None)
            raise not_found("board", self.board_id)
        if not sub.access_changed(self.board_id, grant):  # given up during the read
            raise BoardcastError(ErrorCode.NOT_JOINED, "the join was given up")
        st = self._board
        joined = Joined(rid=msg.rid, board_id=self.board_id, seq=st.seq)
        since = msg.since_seq
        if since is not None and since > st.seq:
            raise bad_request("since_seq is ahead of the board", seq=st.seq, since_seq=since)
        snapshot = since is None
        if since is not None:
            events = await self._events_after(since)
            if events is None:
                snapshot = True
            else:
                joined.events = events
        self._subs[sub.conn_id] = sub
        self._presence.add(sub.conn_id, sub.user_id, sub.user_name)
        return joined, snapshot

    async def _events_after(self, since: int) -> list[EventMsg] | None:
        st = self._board
        if since == st.seq:
            return []
        if st.seq - since > self._settings.max_resume_events:
            return None
        if self._recent and self._recent[0].seq <= since + 1:
            return [e for e in self._recent if e.seq > since]
        stored = await self._repo.events_since(self.board_id, since, st.seq - since)
        if len(stored) != st.seq - since:
            return None
        return [
            EventMsg(
                board_id=self.board_id,
                seq=s.seq,
                author=s.author,
                ts_ms=s.ts_ms,
                event=_EVENT_DECODER.decode(s.body),
                rid=s.request_id,
            )
            for s in stored
        ]

    def _snapshot_json(self) -> bytes:
        return self._encoded_snapshot(JSON)

    def _encoded_snapshot(self, codec: Codec) -> bytes:
        """The board's snapshot at its current seq in ``codec``'s encoding, built and encoded
        once per seq and codec. Committed state only: joins and snapshot reads are handled
        after the commands ahead of them are committed, and every change moves the seq."""
        st = self._board
        if self._snapshot_seq != st.seq:
            self._snapshot_seq, self._snapshots = st.seq, {}
        encoded = self._snapshots.get(codec)
        if encoded is None:
            t0 = time.perf_counter()
            encoded = self._snapshots[codec] = st.encoded_snapshot(codec)
            self._metrics.snapshot_build.labels(encoding=codec.name).observe(time.perf_counter() - t0)
        return encoded

    async def _access_changed(self, msg: AccessChanged) -> None:
        subs = [s for s in self._subs.values() if msg.user_id is None or s.user_id == msg.user_id]
        await self._read_access_or_drop(subs)
        # Who may be assigned or mentioned: read again on every membership change (never per
        # command). A failed read keeps the list as it was; the next change or reload fixes it.
        try:
            self._board.members = await self._repo.member_names(self.board_id)
        except Exception as e:
            self._log.error("members_read_failed", error=repr(e))

    async def _read_access_or_drop(self, subs: list[Subscriber]) -> None:
        """:meth:`_read_access`; if the read fails, a grant could be stale: those viewers lose
        the board (`board_unavailable`) and join again, which checks their access afresh. It
        never raises, so a commit whose outcome was recovered is still acknowledged."""
        try:
            await self._read_access(subs)
        except Exception as e:
            self._log.error("access_read_failed", error=repr(e), viewers=len(subs))
            for sub in subs:
                sub.board_closed(self.board_id, "board_unavailable")
                self._unsubscribe(sub.conn_id)
            self._flush_presence_joins()

    async def _read_access(self, subs: list[Subscriber]) -> None:
        """Give these viewers their current grants (one query); drop those left without."""
        if not subs:
            return
        grants = await self._access(self.board_id, list({s.user_id for s in subs}))
        for sub in subs:
            if not sub.access_changed(self.board_id, grants.get(sub.user_id)):
                self._unsubscribe(sub.conn_id)
        self._flush_presence_joins()

    def _unsubscribe(self, conn_id: str) -> None:
        if self._subs.pop(conn_id, None) is not None:
            self._presence.remove(conn_id)

    async def _delete(self, msg: DeleteBoard) -> None:
        st = self._board
        try:
            seq = await self._repo.delete_board(self.board_id, msg.author, self._epoch)
        except FencedOut:
            self._log.warning("delete_fenced_out", epoch=self._epoch)
            self._fence_out([])
            raise _fenced_out() from None
        self._log.info("board_deleted", by=str(msg.author))
        gone = EventMsg(
            board_id=self.board_id,
            seq=seq or st.seq + 1,
            author=msg.author,
            ts_ms=int(time.time() * 1000),
            event=c.BoardDeleted(),
        )
        self._broadcast([gone])
        self._deleted = True
        for sub in self._subs.values():
            sub.board_closed(self.board_id, "board_deleted")
        self._subs.clear()
        self._stop_requested = True

    # ------------------------------------------------------------------ presence

    def _schedule_presence(self) -> None:
        if self._presence_timer is None:
            loop = asyncio.get_running_loop()
            self._presence_timer = loop.call_later(self._settings.presence_interval_s, self._tell_flush)

    def _tell_flush(self) -> None:
        if self.accepting:
            self.tell(_FlushPresence())

    def _flush_presence_joins(self) -> None:
        # Leaves go out at once; joins and state changes wait for the coalescing timer.
        if self._presence.has_membership_changes():
            if self._fresh:
                self._schedule_presence()  # the joiners' diffs are cut at the next flush
            else:
                self._flush_presence()

    def _flush_presence(self) -> None:
        """Send the pending presence diff: the whole of it to the viewers who were there at
        the last diff, and to each run of joiners since then only what changed after its
        viewer list was taken."""
        fresh, self._fresh = self._fresh, {}
        joiners = {conn_id for conns in fresh.values() for conn_id in conns}
        diff = self._presence.diff()
        if diff is not None:
            self._broadcast([diff], exclude=joiners)
        for version, conns in fresh.items():
            since = self._presence.diff_since(version)
            if since is not None:
                self._send_to([self._subs[c] for c in conns if c in self._subs], [since])
        self._presence.clear()

    def _send_to(self, subs: Iterable[Subscriber], msgs: Sequence[ServerMessage]) -> None:
        """One frame per encoding, the same bytes to every one of ``subs``."""
        frames: dict[Codec, bytes] = {}
        for sub in subs:
            frame = frames.get(sub.codec)
            if frame is None:
                frame = frames[sub.codec] = sub.codec.frame([sub.codec.encode(m) for m in msgs])
            sub.send_frame(frame)

    # ------------------------------------------------------------------ introspection

    def subscriber_count(self) -> int:
        return len(self._subs)


def joined_message(codec: Codec, joined: Joined, viewers: bytes, snapshot: bytes | None) -> bytes:
    """``joined`` encoded by ``codec`` with its viewer list and (unless None) its snapshot
    given already encoded by the same codec: the same bytes as encoding the whole message.
    (msgspec writes a ``Raw`` as it is, whatever the field's type says.)"""
    wire = msgspec.structs.replace(
        joined,
        viewers=msgspec.Raw(viewers),
        snapshot=None if snapshot is None else msgspec.Raw(snapshot),
    )
    return codec.encode(wire)


def make_board_factory(
    repo: BoardRepo, metrics: Metrics, settings: BoardSettings, access: AccessLookup
) -> Callable[[uuid.UUID], BoardActor]:
    return lambda board_id: BoardActor(board_id, repo, metrics, settings, access)
