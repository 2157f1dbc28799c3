"""The turn watchdog says where a stalled turn waits, once per turn, and stays quiet otherwise."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from replicator.stall import TurnWatch


async def _stuck_in_here(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def test_a_stalled_turn_is_reported_once_with_where_it_waits():
    watch = TurnWatch(0.5)
    try:
        with capture_logs() as logs:
            with watch:
                await _stuck_in_here(2.2)
            with watch:  # a quick turn says nothing
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.6)
    finally:
        watch.close()
    dumps = [e for e in logs if e["event"] == "task_dump"]
    assert len(dumps) == 1, dumps
    assert dumps[0]["reason"] == "turn_stalled" and dumps[0]["seconds"] >= 0.5
    chains = [" ".join(c) for c in dumps[0]["tasks"].values()]
    assert any("_stuck_in_here" in c for c in chains), chains
