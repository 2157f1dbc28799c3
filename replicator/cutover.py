"""Cutover: fence SQLite, drain the log, finish the target schema, record ``done``.

Works whether or not the daemon runs: both apply under the same transaction-scoped advisory
lock, so their batches never interleave. Any failure before ``done`` lifts the fence and
leaves the system streaming, with the error reported.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import capture, log, state
from .config import Config
from .dsn import TargetDSN
from .errors import ReplicatorError, StateError
from .service import APPLY_LOCK, Replicator
from .target import qualified

_log = log.get("cutover")


async def cutover(cfg: Config, target: TargetDSN, *, timeout: float = 60.0) -> dict[str, Any]:
    rep = Replicator(cfg, target, mode="run")
    await rep.open()
    try:
        return await _cutover(rep, cfg, timeout)
    finally:
        await rep.close()


async def _cutover(rep: Replicator, cfg: Config, timeout: float) -> dict[str, Any]:
    assert rep.pg is not None and rep.writer is not None
    st = await state.load(rep.pg)
    if st is None or st.mode != "run":
        raise StateError("cutover: the target holds no running replication (start `replicator run`)")
    if st.state == "done":
        raise StateError("cutover: already done")
    if st.state != "streaming":
        raise StateError(f"cutover: replication is in state {st.state!r}, not streaming"
                         + (f" ({st.error})" if st.error else ""))
    await rep._load_targets()
    await rep.open_tail()
    tables = sorted(rep.targets)
    t_fence = time.monotonic()
    await asyncio.to_thread(capture.install_fence, rep.writer, tables, rep.target.masked)
    _log.info("fence_installed", tables=len(tables))
    try:
        await state.set_state(rep.pg, "cutover")
        cursor = await rep.drain(timeout)
        summary = await _finish(rep, cfg, cursor, t_fence)
    except BaseException as exc:
        await _rollback(rep, exc)
        raise
    _log.info("cutover_complete", **{k: v for k, v in summary.items() if k != "tables"})
    return summary


async def _finish(rep: Replicator, cfg: Config, cursor: int, t_fence: float) -> dict[str, Any]:
    assert rep.pg is not None
    objects = await rep.final_phase()
    rows: dict[str, int] = {}
    async with rep.pg.transaction():
        await rep.pg.execute(f"SELECT pg_advisory_xact_lock({APPLY_LOCK})")
        for name, tgt in sorted(rep.targets.items()):
            table = qualified(cfg.target_schema, tgt.plan.pg_name)
            rows[name] = int(await rep.pg.fetchval(f"SELECT count(*) FROM {table}"))
        freeze_ms = round((time.monotonic() - t_fence) * 1000, 1)
        quarantined = await state.quarantine_count(rep.pg)
        summary = {
            "state": "done",
            "tables": rows,
            "rows": sum(rows.values()),
            "cursor": cursor,
            "freeze_window_ms": freeze_ms,
            "quarantined": quarantined,
            "objects": objects,
            "for_a_human": [o for o in objects if o["status"] not in
                            ("validated", "created", "enabled", "set")],
        }
        await state.set_state(rep.pg, "done")
        await state.merge_info(rep.pg, cutover=summary)
        await state.event(rep.pg, "cutover", freeze_ms=freeze_ms, cursor=cursor)
    await rep.prune()
    return summary


async def _rollback(rep: Replicator, exc: BaseException) -> None:
    assert rep.writer is not None and rep.pg is not None
    _log.error("cutover_failed", error=str(exc), action="lifting the fence; back to streaming")
    await asyncio.to_thread(capture.remove_fence, rep.writer)
    try:
        await state.set_state(rep.pg, "streaming")
    except Exception as inner:  # noqa: BLE001 - report both
        raise ReplicatorError(f"cutover failed ({exc}) and the state could not be reset: {inner}") from exc
