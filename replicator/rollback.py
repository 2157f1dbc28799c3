"""The end of the fallback window: ``rollback`` (back to SQLite, nothing lost) or ``finish``.

``rollback``: drain the reverse log while the application still writes to Postgres (so the
freeze is short), fence Postgres (writes fail with a message saying where the data lives), drain
again, verify every table value by value, then in one Postgres transaction remove reverse capture,
set aside what forward apply must not meet, and record ``streaming`` with the cursor at the end of
the SQLite log; last, lift the SQLite fence. The application then points back at SQLite, and a
running daemon streams its writes forward again. Any failure before the last step lifts the
Postgres fence and leaves the window open.

``finish``: the migration is over. Reverse capture leaves Postgres in the transaction that records
``done`` (a running daemon then exits), the SQLite file is archived (compressed, checksummed, next
to the backups) with the migration report beside it, and the ``_replicator`` schema is dropped:
no replicator object stays in Postgres.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import asyncpg

from . import capture, existing, fallback, log, pidfile, report, state
from .backup import archive
from .config import Config
from .dsn import TargetDSN
from .errors import ReplicatorError, StateError
from .reverse import ReverseApplier, summary
from .service import Replicator
from .verify import verify

_log = log.get("rollback")
FENCE_LOCK_TIMEOUT = 10.0  # seconds the Postgres fence may wait for a table's write lock


class VerificationFailed(ReplicatorError):
    kind = "verify"


async def _open(cfg: Config, target: TargetDSN, command: str) -> Replicator:
    rep = Replicator(cfg, target, mode="run")
    await rep.open()
    st = await state.load(rep.session.conn)
    if st is None or st.state != "fallback":
        await rep.close()
        now = "holds no replication" if st is None else f"is in state {st.state!r}"
        raise StateError(f"{command}: the fallback window is not open (the target {now}); it "
                         "opens at `replicator cutover --fallback`")
    await rep.session.reload()
    return rep


async def rollback(cfg: Config, target: TargetDSN, *, timeout: float = 60.0) -> dict[str, Any]:
    rep = await _open(cfg, target, "rollback")
    try:
        return await _rollback(rep, cfg, target, timeout)
    finally:
        await rep.close()


async def _rollback(rep: Replicator, cfg: Config, target: TargetDSN,
                    timeout: float) -> dict[str, Any]:
    session = rep.session
    conn, schema = session.conn, session.schema
    plans = {n: t.plan for n, t in sorted(session.targets.items())}
    applier = ReverseApplier(session)
    # While the application still writes: what is left for the freeze is at most one batch.
    before = await applier.drain(timeout, catch_up=True)
    t_fence = time.monotonic()
    try:
        async with conn.transaction():
            # CREATE TRIGGER waits for the application's write transactions in flight on each
            # table, and new writes queue behind it: a long transaction must not stretch the freeze.
            await conn.execute(f"SET LOCAL lock_timeout = '{int(FENCE_LOCK_TIMEOUT * 1000)}ms'")
            await fallback.install_fence(conn, plans, schema, str(cfg.source.resolve()))
    except asyncpg.LockNotAvailableError as exc:
        raise StateError(
            f"rollback: Postgres could not be fenced within {FENCE_LOCK_TIMEOUT:.0f}s (lock "
            f"timeout: {exc}); a transaction of the application stayed open on a migrated table. "
            "Nothing changed and the fallback window stays open; run `replicator rollback` again "
            "once it has ended") from None
    _log.info("target_fenced", tables=len(plans))
    try:
        drained = await applier.drain(timeout)
        t_drained = time.monotonic()
        checked = await verify(cfg, target)
        if not checked["ok"]:
            bad = [t["table"] for t in checked["tables"] if not t["ok"]]
            raise VerificationFailed(f"rollback: SQLite and Postgres differ in {', '.join(bad)}; "
                                     "the window stays open (`replicator verify` for details)")
        t_verified = time.monotonic()
        high = await asyncio.to_thread(capture.log_high_water, session.writer)
        rowids = {n: await asyncio.to_thread(fallback.sqlite_rowids, session.writer, p)
                  for n, p in plans.items() if p.rowid_keyed}
        async with conn.transaction():
            await state.reverse_lock(conn)  # no reverse batch in flight
            await state.apply_lock(conn)
            await fallback.remove_capture(conn, plans, schema)
            held = await existing.hold_objects(conn, plans, schema, cfg)
            for name, pairs in rowids.items():
                await fallback.restore_rowids(conn, plans[name], schema, pairs)
            await state.set_state(conn, "streaming", cursor=high)
    except BaseException as exc:
        _log.error("rollback_failed", error=str(exc), action="lifting the Postgres fence; the "
                   "fallback window stays open")
        await _lift_fence(rep, plans)
        raise
    await asyncio.to_thread(capture.remove_fence, session.live)
    freeze_ms = round((time.monotonic() - t_fence) * 1000, 1)
    quarantined = await state.quarantine_count(conn)
    after = await state.load(conn)
    result = {
        "state": "streaming",
        "freeze_window_ms": freeze_ms,
        "freeze_breakdown_ms": {"drain_ms": round((t_drained - t_fence) * 1000, 1),
                                "verify_ms": round((t_verified - t_drained) * 1000, 1)},
        "moved_back": {"before_fence": summary(before), "after_fence": summary(drained)},
        "rows_moved_back_in_window": int(after.info.get("reverse_rows", 0)) if after else 0,
        "verification": {"ok": checked["ok"], "rows": checked["rows"],
                         "seconds": checked["seconds"], "quarantined": checked["quarantined"]},
        "objects_set_aside": held,
        "quarantine": quarantined,
        "cursor": high,
    }
    await state.merge_info(conn, rollback=result, rolled_back_at=time.time())
    await state.event(conn, "rollback", freeze_ms=freeze_ms, rows=checked["rows"])
    _log.info("rollback_complete", freeze_window_ms=freeze_ms, verified_rows=checked["rows"],
              detail=f"SQLite ({cfg.source}) is the source of truth again; Postgres is fenced and "
              "follows it")
    return result


async def _lift_fence(rep: Replicator, plans: dict[str, Any]) -> None:
    """After a failed rollback: the application writes to Postgres again. The connection may be
    what failed: then a fresh one."""
    session = rep.session
    for attempt in (1, 2):
        try:
            async with session.conn.transaction():
                await fallback.remove_fence(session.conn, plans, session.schema)
            return
        except Exception as exc:  # noqa: BLE001 - retried once on a new connection, then named
            if attempt == 2:
                raise ReplicatorError(
                    f"rollback failed and the Postgres fence could not be lifted ({exc}); run "
                    "`replicator rollback` again, or lift it: DROP FUNCTION _replicator.fence() "
                    "CASCADE") from exc
            await session.reconnect(retry_for=10)


async def finish(cfg: Config, target: TargetDSN, *, timeout: float = 60.0,
                 wait: float = 30.0) -> dict[str, Any]:
    rep = await _open(cfg, target, "finish")
    try:
        return await _finish(rep, cfg, target, timeout, wait)
    finally:
        await rep.close()


async def _finish(rep: Replicator, cfg: Config, target: TargetDSN, timeout: float,
                  wait: float) -> dict[str, Any]:
    session = rep.session
    conn, schema = session.conn, session.schema
    plans = {n: t.plan for n, t in sorted(session.targets.items())}
    last = await ReverseApplier(session).drain(timeout)  # the archive holds every change
    st = await state.load(conn)
    assert st is not None
    moved = int(st.info.get("reverse_rows", 0))
    async with conn.transaction():
        await state.reverse_lock(conn)  # no reverse batch in flight
        await fallback.remove_capture(conn, plans, schema)
        await state.set_state(conn, "done")
        await state.event(conn, "finish", rows_moved_back=moved)
        await state.merge_info(conn, finished_at=time.time(), fallback_rows_moved_back=moved)
    stopped = await _daemon_gone(cfg, wait)
    folder = cfg.backup_path
    packed, digest = await asyncio.to_thread(archive, cfg.source, folder)
    data = await report.gather(cfg, target)
    data["archive"] = {"path": str(packed), "sha256": digest}
    paper = folder / f"{cfg.source.name}-migration-report.md"
    paper.write_text(report.render(data, "md"))
    Path(str(paper.with_suffix("")) + ".json").write_text(json.dumps(data, indent=2, default=str))
    await state.drop_schema(conn)
    left = await fallback.leftovers(conn, schema)
    result = {"state": "finished", "archive": str(packed), "sha256": digest,
              "report": str(paper), "rows_moved_back_in_window": moved,
              "last_batch": summary(last), "daemon_stopped": stopped, "left_in_postgres": left}
    _log.info("finished", archive=str(packed), report=str(paper), left_in_postgres=len(left))
    return result


async def _daemon_gone(cfg: Config, wait: float) -> bool:
    """A running daemon exits when it sees ``done``; wait for it (True when none runs)."""
    deadline = time.monotonic() + wait
    while pidfile.holder(cfg.state_path) is not None:
        if time.monotonic() > deadline:
            _log.warning("daemon_still_running", detail="it exits at its next batch")
            return False
        await asyncio.sleep(0.2)
    return True
