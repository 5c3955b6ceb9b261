"""Integer ranks in a 53-bit space for ordered lists (columns, cards in a column, checklists
on a card, items in a checklist).

53 bits, not 63: every rank then is an integer JavaScript's ``JSON.parse`` reads exactly
(``Number.MAX_SAFE_INTEGER`` is 2**53 - 1), so browser clients on the JSON encoding can compare
and send back the ranks they were given. Midpoints still leave ~50 insertions between two
neighbours before a rebalance.

A new position takes the midpoint between its neighbours: O(1), no other row changes. When
neighbours touch (no integer between them), the list is rebalanced: every item gets an
evenly spaced rank, and the changed ranks travel in the event.
"""

from __future__ import annotations

import bisect
import uuid

RANK_MAX = 2**53 - 1
# Appending steps by a fixed gap rather than halving towards RANK_MAX, so that a long run of
# appends (the common case) needs ~2**22 steps before any rebalance, and ~30 insertions fit
# between two appended neighbours.
APPEND_GAP = 2**30
_LOW = 0  # exclusive bounds: a rank r always satisfies _LOW < r < _HIGH
_HIGH = RANK_MAX + 1


def between(lo: int | None, hi: int | None) -> int | None:
    """A rank strictly between two neighbours (None for an open end), or None if none fits."""
    if lo is None and hi is None:
        return _HIGH // 2
    if hi is None:
        assert lo is not None
        if lo + APPEND_GAP < _HIGH:
            return lo + APPEND_GAP
        hi = _HIGH
    elif lo is None:
        if hi - APPEND_GAP > _LOW:
            return hi - APPEND_GAP
        lo = _LOW
    if hi - lo < 2:
        return None
    return lo + (hi - lo) // 2


def spread(n: int) -> list[int]:
    """n evenly spaced ranks covering the whole space."""
    step = _HIGH // (n + 1)
    return [step * (i + 1) for i in range(n)]


class RankedList:
    """Ids kept in rank order, with O(log n) position lookup by rank."""

    __slots__ = ("_ids", "_rank_of", "_ranks")

    def __init__(self, items: list[tuple[uuid.UUID, int]] | None = None) -> None:
        pairs = sorted(items or [], key=lambda p: p[1])
        self._ids = [p[0] for p in pairs]
        self._ranks = [p[1] for p in pairs]
        self._rank_of = dict(pairs)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rank_of

    def ids(self) -> list[uuid.UUID]:
        return list(self._ids)

    def items(self) -> list[tuple[uuid.UUID, int]]:
        return list(zip(self._ids, self._ranks, strict=True))

    def index(self, item_id: uuid.UUID) -> int:
        return bisect.bisect_left(self._ranks, self._rank_of[item_id])

    def remove(self, item_id: uuid.UUID) -> None:
        i = self.index(item_id)
        del self._ids[i], self._ranks[i], self._rank_of[item_id]

    def place(
        self, item_id: uuid.UUID, after: uuid.UUID | None = None, before: uuid.UUID | None = None
    ) -> tuple[int, list[tuple[uuid.UUID, int]]]:
        """Insert ``item_id`` (not in the list) directly after ``after``, directly before
        ``before``, or at the end. Neighbours must be in the list. Returns the item's rank and
        the (id, rank) of every other item whose rank changed by a rebalance."""
        if after is not None:
            idx = self.index(after) + 1
        elif before is not None:
            idx = self.index(before)
        else:
            idx = len(self._ids)
        lo = self._ranks[idx - 1] if idx > 0 else None
        hi = self._ranks[idx] if idx < len(self._ranks) else None
        rank = between(lo, hi)
        if rank is not None:
            self._ids.insert(idx, item_id)
            self._ranks.insert(idx, rank)
            self._rank_of[item_id] = rank
            return rank, []
        ids = [*self._ids[:idx], item_id, *self._ids[idx:]]
        ranks = spread(len(ids))
        self._ids, self._ranks = ids, ranks
        self._rank_of = dict(zip(ids, ranks, strict=True))
        changed = [(i, r) for i, r in zip(ids, ranks, strict=True) if i != item_id]
        return self._rank_of[item_id], changed
