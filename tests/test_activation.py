"""A board's activation: timed in /metrics, with the garbage collector paused only meanwhile."""

from __future__ import annotations

import gc

import pytest

from actors.gc_pause import gc_paused
from server.keys import METRICS
from tests.conftest import create_board, create_column


def test_pauses_nest_and_the_collector_resumes_after_the_last():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "the outer pause still runs"
    assert gc.isenabled()


def test_a_pause_ended_by_an_error_resumes_the_collector():
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_what_a_pause_allocated_goes_to_the_oldest_generation():
    with gc_paused():
        young = [[i] for i in range(2000)]  # tracked lists, allocated while paused
    assert gc.get_count()[0] < len(young), "the young generation's count starts afresh"
    assert gc.get_freeze_count() == 0
    assert any(o is young[0] for o in gc.get_objects(generation=2))


def test_objects_frozen_by_someone_else_stay_frozen():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with gc_paused():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_an_activation_is_timed_and_leaves_the_collector_running(http, start_server):
    srv = await start_server()
    bid = (await create_board(http, srv.base, "Timed"))["id"]
    await create_column(http, srv.base, bid)  # activates the board
    registry = srv.app[METRICS].registry
    count = registry.get_sample_value("boardcast_board_activation_seconds_count")
    assert count is not None and count >= 1
    assert (registry.get_sample_value("boardcast_board_activation_seconds_sum") or 0) > 0
    async with http.get(f"{srv.base}/api/v1/boards/{bid}") as r:
        assert r.status == 200
    built = registry.get_sample_value("boardcast_snapshot_build_seconds_count", {"encoding": "json"})
    assert built == 1
    assert gc.isenabled()
