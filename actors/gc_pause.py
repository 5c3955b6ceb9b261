"""Python's cyclic garbage collector paused while a board is read and built.

Activating a board of 10,000 cards allocates some 500,000 objects (asyncpg records, UUIDs,
lists, Structs) in a few hundred milliseconds. Each 700 allocations start a collection, and as
the young objects survive, older generations are collected again and again, each full
collection walking every object of the process. Measured for the ``large_board`` bench's board
with a million other objects on the heap: reading and building took 400-950 ms of CPU with the
collector running, 120-145 ms with it paused. None of these objects is garbage, so the
collector is paused for the read and the build and resumed afterwards; it then looks at them a
few times instead of dozens.

The collector is process-wide, so the pause is too: other tasks keep running meanwhile and
only their reference cycles wait to be freed (reference counting frees everything else).
Pauses nest (several boards activating at once); the collector resumes when the last one ends,
and only if it was running when the first began.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_depth = 0
_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    global _depth, _was_enabled
    if _depth == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            if gc.get_freeze_count() == 0:
                # Promote what was allocated meanwhile straight to the oldest generation
                # (freeze then unfreeze moves every tracked object there without looking at
                # any, and starts the young generation's count afresh): otherwise the first
                # allocations after the pause walk the whole new board in a young collection,
                # and again in the middle one, a hundred milliseconds or more on the joiner's
                # path. Only done when nothing else of the process froze objects, which
                # unfreeze would release.
                gc.freeze()
                gc.unfreeze()
            if _was_enabled:
                gc.enable()
