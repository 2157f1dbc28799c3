"""Cutover: preflight, fence SQLite, drain, verify, finish the schema, record ``done``.

Works whether or not the daemon runs: both apply under the same transaction-scoped advisory
lock, so their batches never interleave, and a running daemon exits 0 when it sees ``done``.

The write freeze runs from the fence to the commit that records ``done``. What can happen
outside it does: the constraint dry run before the fence; the validation of old rows (which
takes no lock that blocks the application) after it. Verification inside the freeze covers only
the rows changed since the last full verification (plus every table's row count) when a full
pass is on record; otherwise all rows. Any failure before ``done`` lifts the fence and leaves
the system streaming, with the error reported; the schema changes roll back with their
transaction.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from . import capture, ddl, existing, fallback, log, state
from .config import Config
from .dsn import TargetDSN
from .errors import (
    POOLER_HINT,
    QuarantineBlocks,
    ReplicatorError,
    StartupError,
    StateError,
    pooler_symptom,
)
from .objects import final_inputs
from .quoting import qualified
from .service import Replicator
from .session import Session
from .target import connect
from .verify import verify

_log = log.get("cutover")
FULL_VERIFY_MAX_AGE = 24 * 3600


class VerificationFailed(ReplicatorError):
    kind = "verify"


async def cutover(cfg: Config, target: TargetDSN, *, timeout: float = 60.0,
                  max_lag: float = 30.0, accept_quarantine: bool = False,
                  with_fallback: bool | None = None) -> dict[str, Any]:
    """``with_fallback`` (default: the config's ``cutover.fallback``) opens the fallback window:
    reverse capture on Postgres, installed in the transaction that records the cutover."""
    rep = Replicator(cfg, target, mode="run")
    await rep.open()
    window = cfg.fallback if with_fallback is None else with_fallback
    try:
        return await _cutover(rep, cfg, target, timeout, max_lag, accept_quarantine, window)
    finally:
        await rep.close()


async def _cutover(rep: Replicator, cfg: Config, target: TargetDSN, timeout: float,
                   max_lag: float, accept_quarantine: bool, window: bool) -> dict[str, Any]:
    session = rep.session
    pre = await _preflight(rep, max_lag)
    if window:
        _refuse_unkeyed(session)
    if not accept_quarantine:
        await _refuse_quarantine(session, "")
    tables = sorted(session.targets)
    t_fence = time.monotonic()
    await asyncio.to_thread(capture.install_fence, session.live, tables, target.masked)
    _log.info("fence_installed", tables=len(tables))
    try:
        await state.set_state(session.conn, "cutover")
        cursor = await rep.stream.drain(timeout)
        t_drained = time.monotonic()
        checked = await verify(cfg, target, changed_only=pre["verify_mode"] == "changed")
        if not checked["ok"]:
            bad = [t["table"] for t in checked["tables"] if not t["ok"]]
            raise VerificationFailed(f"cutover: verification found differences in {', '.join(bad)}; "
                                     "run `replicator verify` for details", )
        if not accept_quarantine:  # rows the drain quarantined
            await _refuse_quarantine(session, "the drain quarantined rows: ")
        t_verified = time.monotonic()
        quarantined = [q for q in await state.quarantine_list(session.conn, None)
                       if not q["reverse"]]  # absent from Postgres
        objects, rows = await _finish(session, window)
    except BaseException as exc:
        await _rollback(session, exc)
        raise
    freeze_ms = round((time.monotonic() - t_fence) * 1000, 1)
    validated = await _after(rep)
    if quarantined:
        await state.event(session.conn, "quarantine_accepted", rows=len(quarantined))
        _log.warning("quarantine_accepted", rows=len(quarantined),
                     tables=sorted({q["table"] for q in quarantined}))
    summary = _summary(pre, checked, objects + validated, rows, cursor, freeze_ms, window, {
        "drain_ms": round((t_drained - t_fence) * 1000, 1),
        "verify_ms": round((t_verified - t_drained) * 1000, 1),
        "finish_ms": round(freeze_ms - (t_verified - t_fence) * 1000, 1),
    })
    summary["quarantine_accepted"] = [
        {**q, "since": q["since"].isoformat(timespec="seconds")} for q in quarantined]
    await state.merge_info(session.conn, cutover=summary)
    await state.event(session.conn, "cutover", freeze_ms=freeze_ms, cursor=cursor)
    _log.info("cutover_complete", freeze_window_ms=freeze_ms, rows=summary["rows"],
              left_for_a_human=len(summary["for_a_human"]), fallback_window=window)
    return summary


def _refuse_unkeyed(session: Session) -> None:
    """Reverse apply finds rows by their key: a table without one cannot follow Postgres back."""
    unkeyed = fallback.unkeyed({n: t.plan for n, t in session.targets.items()})
    if unkeyed:
        raise StateError(
            f"cutover --fallback: {len(unkeyed)} table(s) have no PRIMARY KEY ({', '.join(unkeyed)}): "
            "their rows are known only by SQLite's rowid, which Postgres does not keep after "
            "cutover, so changes made on Postgres could not be found again in SQLite. Give them a "
            "primary key (or exclude them), or cut over without the fallback window")


async def _refuse_quarantine(session: Session, why: str) -> None:
    """Cutover never hides rows that could not move: refuse, naming each table and column."""
    # Rows the fallback window wrote back in a wider form are in Postgres: they never block.
    held = await state.quarantine_summary(session.conn, absent_only=True)
    if not held:
        return
    lines = [f"{q['table']}.{q['column']}: {q['rows']} row(s), e.g. {q['reason']}" for q in held]
    raise QuarantineBlocks(
        f"cutover: {why}{sum(q['rows'] for q in held)} row(s) in quarantine could not move "
        "exactly:\n  " + "\n  ".join(lines) + "\nFix them in SQLite (they leave the quarantine "
        "when changed), set a column type in the config, or pass --accept-quarantine to cut "
        "over without them (the report lists every such row with its raw values)")


async def _preflight(rep: Replicator, max_lag: float) -> dict[str, Any]:
    """Lag small, no error, and which constraints will validate; nothing changes yet."""
    session = rep.session
    st = await state.load(session.conn)
    if st is None or st.mode != "run":
        raise StateError("cutover: the target holds no running replication (start `replicator run`)")
    if st.state in state.CUT_OVER:
        raise StateError("cutover: already done" + (
            " (the fallback window is open: `replicator rollback` or `replicator finish`)"
            if st.state == "fallback" else ""))
    if st.state != "streaming":
        raise StateError(f"cutover: replication is in state {st.state!r}, not streaming"
                         + (f" ({st.error})" if st.error else ""))
    await session.reload()
    await rep.stream.open()
    polled = await rep.stream.reader.poll(st.cursor)
    lag, backlog = polled.lag, polled.backlog
    if lag > max_lag:
        raise StateError(f"cutover: replication lags {lag:.1f}s behind ({backlog} changes); wait "
                         f"until it is under {max_lag:.0f}s so the write freeze stays short")
    constraints = await ddl.dry_run(session.conn, {n: t.plan for n, t in session.targets.items()},
                                    session.schema)
    last = st.info.get("last_verify") or {}
    recent = last.get("full") and last.get("ok") and time.time() - last.get("at", 0) < FULL_VERIFY_MAX_AGE
    changed = await state.events_since(session.conn, ("resnapshot", "add_columns"),
                                       float(last.get("at", 0)))
    mode = "changed" if recent and not changed else "full"
    await state.sample(session.conn, "forward", lag, backlog, 0)  # the charts' last point
    _log.info("cutover_preflight", lag_seconds=round(lag, 3), backlog=backlog, verify=mode,
              constraints_that_will_not_validate=sum(1 for v in constraints.values() if v))
    return {"lag_seconds": round(lag, 3), "backlog": backlog, "verify_mode": mode,
            "constraints": constraints,
            "quarantine": await state.quarantine_count(session.conn, absent_only=True)}


async def _finish(session: Session, window: bool) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Sequences, constraints (NOT VALID), triggers, views and ``done`` -- or, with the fallback
    window, reverse capture and ``fallback``: one transaction, so no write on Postgres escapes."""
    conn = session.conn
    views, sequences = await asyncio.to_thread(final_inputs, session.writer, session.cfg)
    plans = {n: t.plan for n, t in sorted(session.targets.items())}
    rows: dict[str, int] = {}
    async with conn.transaction():
        await state.apply_lock(conn)
        objects = await existing.final_objects(conn, plans, views, session.schema, sequences,
                                               session.cfg)
        for name, plan in plans.items():
            rows[name] = int(await conn.fetchval(
                f"SELECT count(*) FROM {qualified(session.schema, plan.pg_name)}"))
        await fallback.remove_fence(conn, plans, session.schema)  # left by an earlier rollback
        if window:
            await fallback.install_capture(conn, plans, session.schema)
        await state.set_state(conn, "fallback" if window else "done")
    return objects, rows


async def _after(rep: Replicator) -> list[dict[str, Any]]:
    """After ``done``: validate old rows against the constraints, ANALYZE, prune the log."""
    session = rep.session
    plans = {n: t.plan for n, t in sorted(session.targets.items())}
    results = await existing.validate_objects(session.conn, plans, session.schema, session.cfg)
    await ddl.analyze(session.conn, plans, session.schema)
    await rep.stream.prune()
    return results


def _summary(pre: dict[str, Any], checked: dict[str, Any], objects: list[dict[str, Any]],
             rows: dict[str, int], cursor: int, freeze_ms: float, window: bool,
             timings: dict[str, float]) -> dict[str, Any]:
    human = [o for o in objects if o["status"] not in ddl.DONE_STATUSES and o["status"] != "added"]
    human += [{"object": f"quarantine {t}", "status": f"{n} row(s)", "detail":
               "rows that could not move exactly (accepted with --accept-quarantine)",
               "fix": "their raw values: `replicator report`; insert them by hand if needed"}
              for t, n in pre["quarantine"].items()]
    return {
        "state": "fallback" if window else "done",
        "fallback_window": window,
        "tables": rows,
        "rows": sum(rows.values()),
        "cursor": cursor,
        "freeze_window_ms": freeze_ms,
        "freeze_breakdown_ms": timings,
        "verification": {"ok": checked["ok"], "mode": checked["mode"], "rows": checked["rows"],
                         "seconds": checked["seconds"]},
        "preflight": {k: v for k, v in pre.items() if k != "constraints"},
        "objects": [o for o in objects if o["status"] != "added"],
        "for_a_human": human,
    }


async def _rollback(session: Session, exc: BaseException) -> None:
    _log.error("cutover_failed", error=str(exc), action="lifting the fence; back to streaming")
    await asyncio.to_thread(capture.remove_fence, session.live)
    try:
        await state.set_state(session.conn, "streaming")
    except Exception:  # noqa: BLE001 - the connection itself may be what failed: a fresh one
        try:
            session.conn.terminate()
            # Unnamed statements only: right whether or not a transaction pooler is in the way.
            session.pg = await connect(replace(session.target, pooled=True),
                                       timeout=session.cfg.connect_timeout,
                                       tls_verify=session.cfg.tls_verify, retry_for=10)
            await state.set_state(session.conn, "streaming")
        except Exception as inner:  # noqa: BLE001 - report both
            raise ReplicatorError(f"cutover failed ({exc}) and the state could not be reset: "
                                  f"{inner}") from exc
    if pooler_symptom(exc) and not session.target.pooled:
        raise StartupError(f"cutover: {POOLER_HINT}. Nothing was changed: the fence is lifted and "
                           "replication goes on") from exc
