"""The versioned presence diff, driven the way the board actor drives it (runs of joins, each
joiner given the viewer list after its run, diffs on the coalescing timer, leaves at once
unless joiners wait): every viewer that applies its list and then its diffs ends with the true
presence, and never hears of itself or of what its list already showed. Pure: no I/O."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from actors.presence import Presence

CONNS = [f"c{i}" for i in range(6)]


class _Board:
    """What actors.board does with Presence, and what each viewer sees of it."""

    def __init__(self) -> None:
        self.p = Presence(uuid.uuid4())
        self.subs: set[str] = set()
        self.fresh: dict[int, list[str]] = {}
        self.views: dict[str, dict[str, Any]] = {}  # viewer -> conn -> state

    def truth(self) -> dict[str, Any]:
        return {c.conn_id: c.state for v in self.p.viewers() for c in v.connections}

    def join_run(self, conns: list[str]) -> None:
        for c in conns:
            self.p.add(c, uuid.UUID(int=CONNS.index(c) % 2), "u")  # two users: tabs share one
            self.subs.add(c)
        now = self.truth()
        joiners = list(dict.fromkeys(conns))
        for c in joiners:
            self.views[c] = dict(now)
        for waiting in self.fresh.values():
            waiting[:] = [c for c in waiting if c not in joiners]
        self.fresh.setdefault(self.p.version, []).extend(joiners)

    def leave(self, c: str) -> None:
        self.p.remove(c)
        self.subs.discard(c)
        self.views.pop(c, None)
        if not self.fresh:
            self.flush()

    def flush(self) -> None:
        fresh, self.fresh = self.fresh, {}
        joiners = {c for cs in fresh.values() for c in cs}
        full = self.p.diff()
        for c in self.subs - joiners:
            self._apply(c, full)
        for version, cs in fresh.items():
            since = self.p.diff_since(version)
            for c in cs:
                if c in self.subs:
                    self._apply(c, since)
        self.p.clear()

    def _apply(self, viewer: str, diff: Any) -> None:
        if diff is None:
            return
        view = self.views[viewer]
        for x in diff.left:
            view.pop(x.conn_id, None)
        for x in diff.joined:
            assert x.conn_id != viewer, f"{viewer} was told of its own join"
            assert x.conn_id not in view, f"{viewer} was told again of {x.conn_id}"
            view[x.conn_id] = x.state
        for x in diff.updated:
            assert x.conn_id in view, f"{viewer} got an update of {x.conn_id}, which it never heard of"
            view[x.conn_id] = x.state

    def check(self) -> None:
        truth = self.truth()
        for c in self.subs:
            assert self.views[c] == truth, (c, self.views[c], truth)


def test_a_connection_that_rejoined_and_left_is_gone_for_those_who_saw_it_join():
    b = _Board()
    b.join_run(["c0", "c1"])
    b.join_run(["c1"])  # c1 joins again (a resync) before the diff
    b.leave("c1")
    b.flush()
    b.check()


@pytest.mark.parametrize("seed", range(300))
def test_every_viewer_ends_with_the_true_presence(seed):
    rnd = random.Random(seed)
    b = _Board()
    for step in range(20):
        roll = rnd.random()
        if roll < 0.4:
            twice = [rnd.choice(CONNS)] if rnd.random() < 0.2 else []  # a join sent twice
            b.join_run(rnd.sample(CONNS, rnd.randint(1, 3)) + twice)
        elif roll < 0.6 and b.subs:
            b.leave(rnd.choice(sorted(b.subs)))
        elif roll < 0.85 and b.subs:
            b.p.set_state(rnd.choice(sorted(b.subs)), {"step": step})
        else:
            b.flush()
            b.check()
    b.flush()
    b.check()
