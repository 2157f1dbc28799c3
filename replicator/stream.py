"""Streaming: the loop that applies every change after the snapshot, until cutover or a signal.

Each turn checks that the file is still the one being replicated, follows schema drift, then
applies one batch: everything visible in one SQLite read transaction (DESIGN invariant 5),
applied in one Postgres transaction that also advances the cursor, under the apply lock. The
read transaction ends before any Postgres work (except for catch-ups beyond
``replication.prefetch_limit``, applied page by page inside it). Every failure is classified:
retried with backoff, or raised when fatal. Pruning the log is left to quiet moments (see
``source_write`` and ``replication.prune``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import capture, log, metrics, state
from .apply import Applier, BatchResult, Page, record_metrics
from .drift import DriftFollower
from .errors import (
    POOLER_HINT,
    AwaitingTarget,
    ReplicatorError,
    SchemaInMotion,
    SourceReplaced,
    StartupError,
    is_busy_sqlite,
    is_retryable_pg,
    pooler_symptom,
)
from .plans import ROWID_COLUMN, TablePlan
from .quoting import qi, qualified
from .session import Session
from .source_write import NotQuiet, is_wal
from .stall import TurnWatch
from .tail import ReadTxn, RowSet, Tail, Watcher
from .target import backoff

_log = log.get("stream")
SAMPLE_EVERY = 10.0  # seconds between two points of the report's lag and backlog charts
ReconnectFn = Callable[[], Awaitable[None]]
_RESTORED = ("source: the change log ends at {high} but {cursor} changes were already applied: the "
             "file was restored from an older copy. Replication stopped; start again (uninstall, "
             "then run) with a fresh target")


class CutoverDone(Exception):
    """Cutover completed: the daemon stops cleanly."""


@dataclass
class _LoopState:
    started: bool = False
    errors: int = 0
    applied: int = 0
    backlog: int = 0
    caught_up: bool = False
    last_summary: float = field(default_factory=time.monotonic)
    last_sample: float = 0.0  # the report's lag/backlog charts: one point every SAMPLE_EVERY s
    sampled: int = 0
    turn_started: float = 0.0


class Stream:
    """Applies the change log to Postgres, batch by batch (``run``), or until empty (``drain``)."""

    def __init__(self, session: Session, drift: DriftFollower,
                 reconnect: ReconnectFn, identity: tuple[int, int] | None):
        self.session, self.drift, self.reconnect = session, drift, reconnect
        self.identity = identity
        self.tail: Tail | None = None
        self._last_error = ""  # the last error logged by _on_error

    async def open(self) -> None:
        if self.tail is not None:
            return
        cfg = self.session.cfg
        self.tail = Tail(cfg.source, cfg.busy_timeout_ms, cfg.batch_page)
        await self.tail.open()

    async def close(self) -> None:
        if self.tail is not None:
            await self.tail.close()

    @property
    def reader(self) -> Tail:
        assert self.tail is not None, "the stream is not open"
        return self.tail

    # -- one batch -------------------------------------------------------------------------------

    async def step(self) -> BatchResult | None:
        """One turn: check the file, follow drift, then apply everything visible."""
        session = self.session
        self._check_identity()
        version, high = await self.reader.quick()
        if high < session.cursor:
            raise SourceReplaced(_RESTORED.format(high=high, cursor=session.cursor))
        if version != session.schema_version:
            await self.drift.follow()
        if self.drift.fenced:
            await self._check_done()
        if high <= session.cursor and not self.drift.rowid_check:
            return None
        return await session.bounded(self.batch(), "a batch")

    async def batch(self) -> BatchResult | None:
        """One batch: as one statement when it can (one round trip to Postgres, which is most
        of the lag against a remote target), else in a transaction of several statements."""
        if not self.drift.rowid_check:
            handled, done = await self._one_statement_batch()
            if handled:
                return done
        return await self._batch_in_transaction()

    async def _one_statement_batch(self) -> tuple[bool, BatchResult | None]:
        """(False, None) when the batch needs the long way; nothing was changed then."""
        session = self.session
        t0 = time.monotonic()
        cursor = session.cursor
        applier = Applier(session.conn, session.targets, quarantined=session.quarantined)
        result = BatchResult(high=cursor)
        async with self.reader.read() as txn:
            if txn.schema_version != session.schema_version:
                return True, None  # the next step follows the drift first
            if txn.high <= cursor or txn.high - cursor > session.cfg.prefetch_limit:
                return False, None  # nothing new (or the log went back), or a large catch-up
            result.high = txn.high
            pages = await applier.read_all(txn, cursor, result)
        done = None if len(pages) != 1 else \
            await applier.write_one_statement(pages[0], result, cursor, result.high)
        if not done:
            _log.debug("batch_long_way", entries=result.entries,
                       why="refused by the state or a unique key" if done is False
                       else "needs the transaction")
            return False, None
        metrics.BATCHES.labels("one_statement").inc()
        self._applied(result, t0)
        return True, result

    async def _batch_in_transaction(self) -> BatchResult | None:
        session = self.session
        conn, tail = session.conn, self.reader
        t0 = time.monotonic()
        async with conn.transaction():
            await state.apply_lock(conn)
            st = await state.load(conn, for_update=True)
            assert st is not None
            if st.state in state.CUT_OVER:
                raise CutoverDone()
            session.cursor = cursor = st.cursor
            tracking = bool(st.info.get("last_verify", {}).get("full"))
            applier = Applier(conn, session.targets, track_dirty=tracking,
                              quarantined=session.quarantined)
            result = BatchResult(high=cursor)
            pages: list[Page] = []
            async with tail.read() as txn:
                if txn.schema_version != session.schema_version:
                    return None  # the next step follows the drift first
                if txn.high < cursor:
                    raise SourceReplaced(_RESTORED.format(high=txn.high, cursor=cursor))
                result.high = max(txn.high, cursor)
                if txn.high - cursor > session.cfg.prefetch_limit:
                    await applier.apply(txn, cursor, result)  # large catch-up: page by page
                elif txn.high > cursor:
                    pages = await applier.read_all(txn, cursor, result)
                fingerprints = await self._sqlite_rowids(txn)
            # The read transaction is over: Postgres work no longer pins the SQLite WAL.
            for page in pages:
                await applier.write_page(page, result, self._fresh_rows)
            if result.high > cursor:
                await state.set_cursor(conn, result.high)
                await state.count_changes(conn, dict(result.per_table))
            renumbered = await self._check_rowids(fingerprints)
            if st.state == "error":
                await state.set_state(conn, "streaming")
        for name in renumbered:
            await self.drift.resnapshot(name, "rowids differ from the target (VACUUM renumbered "
                                        "them)")
        for name, (column, _type, why) in result.replan.items():
            if name not in renumbered and name in session.targets:
                await self.drift.replan(name, column, why)
        metrics.BATCHES.labels("transaction").inc()
        self._applied(result, t0)
        return result

    def _applied(self, result: BatchResult, t0: float) -> None:
        self.session.cursor = result.high
        record_metrics(result, time.monotonic() - t0)
        _log.debug(
            "batch_applied", entries=result.entries, rows=result.rows_written,
            deleted=result.rows_deleted, quarantined=result.quarantined, cursor=result.high,
            seconds=round(time.monotonic() - t0, 4),
        )

    async def _fresh_rows(self, plan: TablePlan, keys: Sequence[tuple[Any, ...]]) -> RowSet:
        """Rows read in a new short read transaction (unique-clash re-reads after the batch's)."""
        async with self.reader.read() as txn:
            return await txn.rows(plan, keys)

    async def _sqlite_rowids(self, txn: ReadTxn) -> dict[str, tuple[int, int]]:
        out = {}
        for name in sorted(self.drift.rowid_check):
            tgt = self.session.targets.get(name)
            if tgt is not None and tgt.plan.rowid_keyed:
                out[name] = await txn.rowid_fingerprint(tgt.plan)
        return out

    async def _check_rowids(self, fingerprints: dict[str, tuple[int, int]]) -> list[str]:
        """After applying everything up to the batch's end, a rowid-keyed table must hold the same
        rowids on both sides; VACUUM renumbering shows up as a different count or sum."""
        out = []
        for name, src in fingerprints.items():
            plan = self.session.targets[name].plan
            table = qualified(self.session.schema, plan.pg_name)
            target = await state.rowid_fingerprint(self.session.conn, name, table,
                                                   qi(ROWID_COLUMN))
            if target != src:
                _log.info("rowids_differ", table=name, sqlite=src, target=target)
                out.append(name)
        self.drift.rowid_check.clear()
        return out

    async def _check_done(self) -> None:
        st = await state.load(self.session.conn)
        if st is not None and st.state in state.CUT_OVER:
            raise CutoverDone()
        if st is not None and st.state == "cutover":
            self.session.progress.set_state("cutover")

    async def drain(self, timeout: float) -> int:
        """Apply until the log is empty (used by cutover after the fence)."""
        deadline = time.monotonic() + timeout
        while True:
            version, high = await self.reader.quick()
            if version != self.session.schema_version:
                await self.drift.follow()
            if high <= self.session.cursor:
                return self.session.cursor
            await self._batch_in_transaction()  # the cutover's state refuses the one statement
            if time.monotonic() > deadline:
                raise ReplicatorError(f"drain did not finish within {timeout:.0f}s")

    # -- pruning ---------------------------------------------------------------------------------

    async def prune(self, *, optional: bool = False) -> None:
        """Delete applied entries from the change log (every write waits for a quiet moment;
        ``optional`` ones give up instead of going ahead: see source_write)."""
        session = self.session
        try:
            await asyncio.to_thread(capture.prune, session.live, session.cursor,
                                    session.cfg.prune_chunk, optional=optional)
        except NotQuiet:
            pass  # tried again after a later batch
        except sqlite3.OperationalError as exc:
            if not is_busy_sqlite(exc):
                raise
            metrics.SQLITE_BUSY_RETRIES.inc()

    async def prune_due(self, applied_rows: int) -> bool:
        """Whether to prune now, while streaming: only when enough applied rows wait, and, with
        ``replication.prune = "auto"``, never in WAL mode, where no write can be proven safe for
        a deferred application transaction that begins during it (source_write)."""
        cfg = self.session.cfg
        if cfg.prune == "cutover" or applied_rows < cfg.prune_min_rows:
            return False
        return cfg.prune == "quiet" or not await asyncio.to_thread(is_wal, self.session.writer)

    # -- the loop --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, watcher: Watcher | None = None) -> None:
        """Apply changes until ``stop`` is set or cutover is done (raises CutoverDone). Every
        Postgres or SQLite failure is classified: retried with backoff, or (fatal) raised."""
        await self.open()
        loop = _LoopState()
        watch = TurnWatch(3 * self.session.cfg.batch_timeout + 5)
        try:
            await self._loop(loop, stop, watch, watcher)
        finally:
            watch.close()

    async def _loop(self, loop: _LoopState, stop: asyncio.Event, watch: TurnWatch,
                    watcher: Watcher | None) -> None:
        while not stop.is_set():
            try:
                with watch:
                    result = await self._turn(loop)
            except CutoverDone:
                raise
            except Exception as exc:  # noqa: BLE001 - classified and counted
                if isinstance(exc, ReplicatorError) and exc.fatal:
                    await self._on_error(exc, 1)
                    raise
                loop.errors += 1
                delay = await self._on_error(exc, loop.errors)
                with contextlib.suppress(Exception):
                    await self.update_gauges()  # lag keeps growing while Postgres is away
                await _sleep_or_stop(stop, delay)
                continue
            if result is None or loop.backlog == 0:
                if watcher is not None:
                    await watcher.wait(self.session.cfg.poll_interval, stop)
                else:
                    await _sleep_or_stop(stop, self.session.cfg.poll_interval)
            # Leave the file alone between batches: with a busy writer, back-to-back reads would
            # keep a reader in the WAL almost all the time, and SQLite could never restart it.
            since = time.monotonic() - loop.turn_started
            await _sleep_or_stop(stop, max(0.0, self.session.cfg.batch_interval - since))

    async def _turn(self, loop: _LoopState) -> BatchResult | None:
        session = self.session
        loop.turn_started = time.monotonic()
        if not loop.started:
            await session.bounded(self._start(loop), "starting to stream")
        result = await self.step()
        loop.applied += result.entries if result else 0
        session.progress.applied += result.entries if result else 0
        if loop.errors:
            _log.info("recovered", after_errors=loop.errors)
            session.progress.set_state("streaming")
            await session.bounded(state.set_state(session.conn, "streaming"),
                                  "recording the recovery")
            loop.errors = 0
        polled = await self.update_gauges()
        loop.backlog = polled.backlog
        if result is not None and result.quarantined:
            await self.session.count_quarantine()
        if result is not None and await self.prune_due(polled.rows - polled.backlog):
            await self.prune(optional=True)
        if not loop.caught_up and polled.backlog == 0:
            loop.caught_up = await session.bounded(self._record_caught_up(), "recording catch-up")
        if time.monotonic() - loop.last_sample >= SAMPLE_EVERY:
            await session.bounded(state.sample(session.conn, "forward", polled.lag,
                                               polled.backlog, loop.sampled), "a sample")
            loop.last_sample, loop.sampled = time.monotonic(), 0
        loop.sampled += result.entries if result else 0
        if time.monotonic() - loop.last_summary >= session.cfg.summary_interval:
            await self.session.count_quarantine()  # rows leave quarantine when they are fixed, too
            _log.info("summary", applied=loop.applied, cursor=session.cursor,
                      lag_seconds=round(polled.lag, 3), backlog=polled.backlog)
            loop.last_summary, loop.applied = time.monotonic(), 0
        return result

    async def _start(self, loop: _LoopState) -> None:
        session = self.session
        st = await state.load(session.conn)
        assert st is not None
        if st.state in (*state.CUT_OVER, "cutover"):
            await self._check_done()
        else:
            await state.set_state(session.conn, "streaming")
            session.progress.set_state("streaming")
        metrics.LAST_APPLY.set(await state.updated_at(session.conn))
        metrics.CURSOR.set(session.cursor)
        await self.session.count_quarantine()
        loop.caught_up = bool(st.info.get("caught_up_at"))
        loop.started = True

    def _check_identity(self) -> None:
        if self.identity is None:
            return
        source = self.session.cfg.source
        try:
            now = source_identity(source)
        except FileNotFoundError:
            raise SourceReplaced(f"source: {source} disappeared under the daemon") from None
        if now != self.identity:
            raise SourceReplaced(
                f"source: {source} was replaced under the daemon (another file now has its name, "
                "e.g. restored from a backup). Changes made to the old file after the last "
                "applied batch cannot be read. Replication stopped; check the file and start "
                "again (uninstall, then run)")

    async def _record_caught_up(self) -> bool:
        """The first time the backlog left by the snapshot is gone: a timing for the report."""
        conn = self.session.conn
        st = await state.load(conn)
        finished = (st.info.get("snapshot_finished_at") if st else None) or time.time()
        seconds = round(time.time() - finished, 3)
        await state.merge_info(conn, caught_up_at=time.time(), catch_up_seconds=seconds)
        await state.sample(conn, "forward", 0.0, 0, 0)
        await state.event(conn, "caught_up", seconds=seconds, cursor=self.session.cursor)
        _log.info("caught_up", seconds_after_snapshot=seconds)
        return True

    async def _on_error(self, exc: BaseException, errors: int) -> float:
        session = self.session
        if pooler_symptom(exc) and not session.target.pooled:
            exc = StartupError(f"target: {POOLER_HINT}")
        if is_retryable_pg(exc) and not isinstance(exc, ReplicatorError):
            metrics.ERRORS.labels("target").inc()
            _log.warning("target_error", error=f"{type(exc).__name__}: {exc}", attempt=errors)
            with contextlib.suppress(Exception):
                await self.reconnect()
                metrics.TARGET_RECONNECTS.inc()
                if self.tail is not None:
                    # What the target holds is the truth: a commit whose acknowledgement was lost
                    # (a schema change, a re-copied table) is there even though we saw an error.
                    await session.bounded(session.reload(), "reloading the replication state")
            return backoff(errors)
        if isinstance(exc, sqlite3.OperationalError) and is_busy_sqlite(exc):
            metrics.SQLITE_BUSY_RETRIES.inc()
            return backoff(errors, base=0.05, cap=1.0)
        if isinstance(exc, SchemaInMotion):  # a migration committing step by step: look again
            _log.info("schema_in_motion", detail=str(exc))
            session.schema_version = None
            return 0.5
        if isinstance(exc, AwaitingTarget):  # a migration applied to SQLite, not yet to the target
            first = session.progress.state != "waiting"  # counted apart from other errors
            session.progress.set_state("waiting")
            if first or errors % 12 == 0:
                _log.warning("awaiting_target", waiting=str(exc), attempt=errors)
            with contextlib.suppress(Exception):
                await state.set_state(session.conn, "waiting", error=log.scrub(str(exc)))
                if first:
                    await state.event(session.conn, "awaiting_target", None, detail=str(exc))
            session.schema_version = None  # look at the schema again before the next try
            return 5.0
        kind = exc.kind if isinstance(exc, ReplicatorError) else "runtime"
        message = str(exc) if isinstance(exc, ReplicatorError) else f"{type(exc).__name__}: {exc}"
        metrics.ERRORS.labels(kind).inc()
        session.progress.errors += 1
        session.progress.set_state("error")
        if errors == 1 or errors % 10 == 0 or message != self._last_error:
            _log.error("replication_error", kind=kind, error=message, attempt=errors,
                       exc_info=not isinstance(exc, ReplicatorError))
        self._last_error = message  # a new kind of error is logged at once, a repeat every 10th
        with contextlib.suppress(Exception):
            await session.bounded(self._record_error(kind, message, first=errors == 1),
                                  "recording the error")
        session.schema_version = None  # look at the schema again before the next try
        return min(30.0, 2.0 * errors)

    async def _record_error(self, kind: str, message: str, *, first: bool) -> None:
        conn = self.session.conn
        await state.set_state(conn, "error", error=log.scrub(message))
        if first:
            await state.event(conn, "error", None, kind=kind, error=log.scrub(message))

    async def update_gauges(self) -> capture.LogPosition:
        """Backlog, lag, log size and WAL size into the progress and the gauges."""
        polled = await self.reader.poll(self.session.cursor)
        self.session.progress.set_position(polled.backlog, polled.lag)
        metrics.LOG_ROWS.set(polled.rows)
        wal = Path(str(self.session.cfg.source) + "-wal")
        metrics.WAL_BYTES.set(wal.stat().st_size if wal.exists() else 0)
        return polled


def source_identity(path: Path) -> tuple[int, int]:
    """The file's identity: replacing or restoring it under the daemon changes (dev, inode)."""
    st = path.stat()
    return st.st_dev, st.st_ino


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)

