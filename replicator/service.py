"""The replicator's lifecycle: open both sides, install capture, snapshot, stream, follow drift.

``Replicator`` is used by ``run`` (the daemon), ``copy`` (one-shot, no capture) and ``cutover``
(drains with the same code). ``run_daemon`` wires the streaming loop, the file watcher and the
metrics server into one task group; a signal only sets the ``stop`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg

from . import capture, log, metrics, state
from .apply import Applier, BatchResult, TableTarget, record_metrics
from .config import Config
from .dsn import TargetDSN
from .errors import (
    POOLER_HINT,
    ReplicatorError,
    SourceError,
    SourceReplaced,
    StartupError,
    StateError,
    TargetError,
    is_busy_sqlite,
    is_retryable_pg,
    pooler_symptom,
    startup_message,
)
from .follow import FollowDrift
from .initial import InitialCopy
from .plans import ROWID_COLUMN, TablePlan
from .quoting import qi, qualified
from .schema import check_names
from .source import Table, inspect, open_source
from .source_write import LiveFile, NotQuiet, is_wal
from .tail import Poll, Tail, Watcher
from .target import backoff, connect, ensure_schema

_log = log.get("service")
APPLY_LOCK = "hashtext('_replicator.apply')"
_RESTORED = ("source: the change log ends at {high} but {cursor} changes were already applied: the "
             "file was restored from an older copy. Replication stopped; start again (uninstall, "
             "then run) with a fresh target")
DAEMON_LOCK = "hashtext('_replicator.daemon')"


class Done(Exception):
    """Cutover completed: the daemon stops cleanly."""


@dataclass
class _LoopState:
    started: bool = False
    errors: int = 0
    applied: int = 0
    backlog: int = 0
    caught_up: bool = False
    last_summary: float = field(default_factory=time.monotonic)
    turn_started: float = 0.0


class Replicator(InitialCopy, FollowDrift):
    def __init__(self, cfg: Config, target: TargetDSN, *, mode: str = "run", progress=None):
        self.cfg, self.target, self.mode = cfg, target, mode
        self.schema = cfg.target_schema
        self.progress = progress
        self.stop: asyncio.Event | None = None  # set by the daemon: a signal stops the snapshot
        self.census_rows: dict[str, int] = {}
        self.quarantined: dict[str, bool] = {}  # tables that may have rows in quarantine
        self.pg: asyncpg.Connection | None = None
        self.live: LiveFile | None = None  # the only connection that writes to the file
        self.tail: Tail | None = None
        self.targets: dict[str, TableTarget] = {}
        self.sql: dict[str, str] = {}
        self.schema_version: int | None = None
        self.cursor = 0
        self.fenced = False
        self.rowid_check: set[str] = set()
        self.source_id: str | None = None
        self._lock_file: Any = None
        self.backup: str | None = None
        self.identity: tuple[int, int] | None = None
        self._daemon_lock = False

    # -- opening and closing -------------------------------------------------------------------

    @property
    def writer(self) -> sqlite3.Connection | None:
        """The connection to the live file (its reads are ordinary; its writes go through
        ``self.live``, which starts them at quiet moments)."""
        return self.live.conn if self.live is not None else None

    async def open(self, *, readonly_source: bool = False) -> None:
        conn = open_source(
            self.cfg.source, readonly=readonly_source, busy_timeout_ms=self.cfg.busy_timeout_ms
        )
        self.live = LiveFile(conn, self.cfg.source, self.cfg.busy_timeout_ms,
                             self.cfg.quiet_write_timeout)
        self.identity = source_identity(self.cfg.source)
        self.pg = await self._connect()
        try:
            await state.ensure(self.pg)
            await ensure_schema(self.pg, self.schema)
        except asyncpg.PostgresError as exc:
            message = startup_message(exc, "target")
            if message:
                raise StartupError(message) from None
            raise

    @property
    def pooled(self) -> bool:
        return self.cfg.pooled if self.cfg.pooled is not None else self.target.pooled

    async def _connect(self, retry_for: float = 60.0) -> asyncpg.Connection:
        target = replace(self.target, pooled=self.pooled)
        return await connect(target, timeout=self.cfg.connect_timeout, tls_verify=self.cfg.tls_verify,
                             retry_for=retry_for, dead_after=self.cfg.dead_link_timeout)

    async def reconnect(self) -> None:
        if self.pg is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pg.close(), 2)
            self.pg.terminate()
        self.pg = await self._connect(retry_for=0)  # one attempt: the caller's loop backs off
        if self._daemon_lock:
            await self._take_pg_lock()
        _log.info("target_reconnected", target=self.target.masked)

    async def close(self) -> None:
        if self.tail:
            await self.tail.close()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pg.close(), 5)
        if self.live is not None:
            self.live.conn.close()
        if self._lock_file is not None:
            self._lock_file.close()

    async def lock(self) -> None:
        """One daemon per source file and per target database."""
        path = self.cfg.state_path
        path.mkdir(parents=True, exist_ok=True)
        fh = open(path / "daemon.lock", "a+")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise StartupError(
                f"another replicator (pid {holder}) is already running for {self.cfg.source}"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_file = fh
        self._daemon_lock = True
        await self._take_pg_lock()

    async def _take_pg_lock(self) -> None:
        assert self.pg is not None
        if self.pooled:
            # A session lock behind a transaction pooler belongs to whichever server connection
            # ran it; only the file lock guards against a second daemon here.
            _log.warning("no_target_lock", why="pooled endpoint: session advisory locks do not hold")
            return
        if not await self.pg.fetchval(f"SELECT pg_try_advisory_lock({DAEMON_LOCK})"):
            raise StartupError(
                f"another replicator is already replicating into {self.target.masked} "
                "(it holds the target's advisory lock)"
            )

    # -- preparing -------------------------------------------------------------------------------

    def wanted(self, schema_tables) -> list[Table]:
        return [t for n, t in schema_tables.items() if self.cfg.wants_table(n)]

    async def prepare(self) -> state.State:
        """Check the target's state against this source; start fresh or resume."""
        assert self.pg is not None and self.writer is not None
        st = await state.load(self.pg)
        meta = capture.read_meta(self.writer)
        fresh = st is None or st.mode != self.mode or self.mode == "copy" and st.state == "done"
        if st is not None and st.state == "done" and self.mode == "run" and st.mode == "run":
            raise StateError(
                "target: this migration was already cut over (state done); run "
                "`replicator uninstall` to start again"
            )
        if st is not None and not fresh:
            state.check_source(st, meta.get("source_id"), str(self.cfg.source))
            if st.source_id and not meta.get("source_id"):
                gone = "" if Path(st.source_path or "").exists() else ", a file that no longer exists"
                raise StateError(
                    f"target: it holds a replication of {st.source_path} (id {st.source_id}{gone}), "
                    f"but {self.cfg.source} was never captured: it is another file, or a copy "
                    "from before replication started, so changes would be missing. Use another "
                    "target database, or start this target again: `replicator uninstall "
                    "--target-schema` with the old source, or `DROP SCHEMA _replicator CASCADE` "
                    "in the target (the replicated tables stay until you drop them)")
        tables = self.wanted(inspect(self.writer).tables)
        check_names(tables, self.cfg)  # before anything is written anywhere
        if self.cfg.snapshot_method == "direct" and not is_wal(self.writer):
            raise StartupError(
                f"source.snapshot_method = \"direct\" reads {self.cfg.source} in one read "
                "transaction for the whole snapshot; the file uses a rollback journal, where that "
                "read holds off every application commit until it ends. Use \"copy\" (the "
                "default), or switch the file to WAL (PRAGMA journal_mode = WAL)")
        if self.mode == "run":
            first = not capture.installed(self.writer)
            if first:
                await asyncio.to_thread(_quick_check, self.writer, self.cfg.source)
            if first and self.cfg.backup:
                from .backup import make_backup  # before the first write to the file, ever

                path = await asyncio.to_thread(make_backup, self.cfg.source, self.cfg.backup_path)
                self.backup = str(path)
            try:
                results = await asyncio.to_thread(capture.install, self.live, tables)
            except sqlite3.OperationalError as exc:
                raise StartupError(_write_refused(exc, self.cfg.source)) from None
            changed = [n for n, r in results.items() if r != "kept"]
            if changed:
                _log.info("capture_installed", tables=changed)
            meta = capture.read_meta(self.writer)
            self.source_id = str(meta["source_id"])
            await self._check_not_pruned(st, meta, fresh)
        if fresh:
            await state.init(
                self.pg, source_id=self.source_id, source_path=str(self.cfg.source.resolve()),
                mode=self.mode, target_schema=self.schema,
            )
            await state.event(self.pg, "start", mode=self.mode, fresh=True, backup=self.backup)
            if self.backup:
                await state.merge_info(self.pg, backup=self.backup)
        st = await state.load(self.pg)
        assert st is not None
        return st

    async def _check_not_pruned(self, st, meta, fresh: bool) -> None:
        if fresh or st is None or st.state in ("new", "snapshot"):
            return
        pruned = int(meta.get("pruned_through") or 0)
        if pruned > st.cursor:
            raise SourceError(
                f"source: the change log was pruned through {pruned} but the target has only "
                f"applied through {st.cursor} (another target, or a restored database); "
                "changes are missing. Start again with a fresh target"
            )

    async def _load_targets(self) -> None:
        assert self.pg is not None
        st = await state.load(self.pg)
        assert st is not None
        self.cursor = st.cursor
        self.schema_version = st.schema_version
        self.quarantined = {t: True for t in await state.quarantine_count(self.pg)}
        self.targets, self.sql = {}, {}
        for name, t in (await state.tables(self.pg)).items():
            self.targets[name] = TableTarget(
                plan=t.plan, schema=self.schema, snapshot_seq=t.snapshot_seq or 0,
                streaming=t.status == state.STREAMING,
            )
            self.sql[name] = t.sqlite_sql

    # -- streaming -------------------------------------------------------------------------------

    async def step(self) -> BatchResult | None:
        """One turn of the loop: follow drift, then apply everything visible, then prune."""
        assert self.tail is not None
        self._check_identity()
        version, high = await self.tail.quick()
        if high < self.cursor:
            raise SourceReplaced(_RESTORED.format(high=high, cursor=self.cursor))
        if version != self.schema_version:
            await self.handle_drift()
        if self.fenced:
            await self._check_done()
        if high <= self.cursor and not self.rowid_check:
            return None
        return await self._bounded_batch()

    async def _bounded_batch(self) -> BatchResult | None:
        return await self._bounded(self.batch(), "a batch")

    async def _bounded(self, work, what: str):
        """Target work that does not finish in time means a hung server or a silent network (TCP
        keepalives cannot tell when a middlebox still acknowledges): cut the connection (its
        statements fail at once, an open transaction never commits) and let the loop retry."""
        assert self.pg is not None
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=self.cfg.batch_timeout)
        if done:
            return task.result()
        self.pg.terminate()
        with contextlib.suppress(BaseException):
            await task
        raise TargetError(f"target: {what} took longer than {self.cfg.batch_timeout:.0f}s (a hung "
                          "server or a silent network); the connection was cut and is retried",
                          retryable=True)

    async def batch(self) -> BatchResult | None:
        assert self.pg is not None and self.tail is not None
        t0 = time.monotonic()
        async with self.pg.transaction():
            await self.pg.execute(f"SELECT pg_advisory_xact_lock({APPLY_LOCK})")
            st = await state.load(self.pg, for_update=True)
            assert st is not None
            if st.state == "done":
                raise Done()
            self.cursor = st.cursor
            tracking = bool(st.info.get("last_verify", {}).get("full"))
            applier = Applier(self.pg, self.targets, track_dirty=tracking,
                              quarantined=self.quarantined)
            result = BatchResult(high=self.cursor)
            pages: list = []
            async with self.tail.read() as txn:
                if txn.schema_version != self.schema_version:
                    return None  # the next step follows the drift first
                if txn.high < self.cursor:
                    raise SourceReplaced(_RESTORED.format(high=txn.high, cursor=self.cursor))
                result.high = max(txn.high, self.cursor)
                if txn.high - self.cursor > self.cfg.prefetch_limit:
                    await applier.apply(txn, self.cursor, result)  # large catch-up: page by page
                elif txn.high > self.cursor:
                    pages = await applier.read_all(txn, self.cursor, result)
                fingerprints = await self._sqlite_rowids(txn)
            # The read transaction is over: Postgres work no longer pins the SQLite WAL.
            for page in pages:
                await applier.write_page(page, result, self._fresh_rows)
            if result.high > self.cursor:
                await state.set_cursor(self.pg, result.high)
                await self._table_stats(result)
            renumbered = await self._check_rowids(fingerprints)
            if st.state == "error":
                await state.set_state(self.pg, "streaming")
        for name in renumbered:
            await self.resnapshot(name, "rowids differ from the target (VACUUM renumbered them)")
        self.cursor = result.high
        record_metrics(result, time.monotonic() - t0)
        _log.debug(
            "batch_applied", entries=result.entries, rows=result.rows_written,
            deleted=result.rows_deleted, quarantined=result.quarantined, cursor=result.high,
            seconds=round(time.monotonic() - t0, 4),
        )
        return result

    async def _fresh_rows(self, plan: TablePlan, keys):
        """Rows read in a new short read transaction (unique-clash re-reads after the batch's)."""
        assert self.tail is not None
        async with self.tail.read() as txn:
            return await txn.rows(plan, keys)

    async def _sqlite_rowids(self, txn) -> dict[str, tuple[int, int]]:
        out = {}
        for name in sorted(self.rowid_check):
            tgt = self.targets.get(name)
            if tgt is not None and tgt.plan.rowid_keyed:
                out[name] = await txn.rowid_fingerprint(tgt.plan)
        return out

    async def _check_rowids(self, fingerprints: dict[str, tuple[int, int]]) -> list[str]:
        """After applying everything up to the batch's end, a rowid-keyed table must hold the same
        rowids on both sides; VACUUM renumbering shows up as a different count or sum."""
        assert self.pg is not None
        out = []
        for name, src in fingerprints.items():
            tgt = self.targets[name]
            table = qualified(self.schema, tgt.plan.pg_name)
            row = await self.pg.fetchrow(
                f"SELECT count(*) + (SELECT count(*) FROM {state.SCHEMA}.quarantine WHERE tbl = $1),"
                f" coalesce(sum({qi(ROWID_COLUMN)}), 0) + (SELECT coalesce(sum((key->0->>'int')"
                f"::numeric), 0) FROM {state.SCHEMA}.quarantine WHERE tbl = $1) FROM {table}",
                name,
            )
            if (int(row[0]), int(row[1])) != src:
                _log.info("rowids_differ", table=name, sqlite=src, target=(int(row[0]), int(row[1])))
                out.append(name)
        self.rowid_check.clear()
        return out

    async def _table_stats(self, result: BatchResult) -> None:
        assert self.pg is not None
        for name, n in result.per_table.items():
            await self.pg.execute(
                f"UPDATE {state.SCHEMA}.tables SET changes_applied = changes_applied + $2, "
                "last_change_at = now() WHERE name = $1",
                name, n,
            )

    async def prune(self, *, optional: bool = False) -> None:
        """Delete applied entries from the change log (every write waits for a quiet moment;
        ``optional`` ones give up instead of going ahead: see source_write)."""
        assert self.live is not None
        try:
            await asyncio.to_thread(capture.prune, self.live, self.cursor, self.cfg.prune_chunk,
                                    optional=optional)
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
        if self.cfg.prune == "cutover" or applied_rows < self.cfg.prune_min_rows:
            return False
        assert self.writer is not None
        return self.cfg.prune == "quiet" or not await asyncio.to_thread(is_wal, self.writer)

    async def _check_done(self) -> None:
        assert self.pg is not None
        st = await state.load(self.pg)
        if st is not None and st.state == "done":
            raise Done()
        if st is not None and st.state == "cutover":
            metrics.set_state("cutover")

    # -- the loop --------------------------------------------------------------------------------

    async def stream(self, stop: asyncio.Event, watcher: Watcher | None = None) -> None:
        """Apply changes until ``stop`` is set or cutover is done (raises Done). Every Postgres
        or SQLite failure is classified: retried with backoff, or (fatal) raised."""
        self.tail = Tail(self.cfg.source, self.cfg.busy_timeout_ms, self.cfg.batch_page)
        await self.tail.open()
        loop = _LoopState()
        while not stop.is_set():
            try:
                result = await self._turn(loop)
            except Done:
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
                    await watcher.wait(self.cfg.poll_interval, stop)
                else:
                    await _sleep_or_stop(stop, self.cfg.poll_interval)
            # Leave the file alone between batches: with a busy writer, back-to-back reads would
            # keep a reader in the WAL almost all the time, and SQLite could never restart it.
            since = time.monotonic() - loop.turn_started
            await _sleep_or_stop(stop, max(0.0, self.cfg.batch_interval - since))

    async def _turn(self, loop: _LoopState) -> BatchResult | None:
        assert self.pg is not None
        loop.turn_started = time.monotonic()
        if not loop.started:
            await self._bounded(self._start_streaming(loop), "starting to stream")
        result = await self.step()
        loop.applied += result.entries if result else 0
        if loop.errors:
            _log.info("recovered", after_errors=loop.errors)
            metrics.set_state("streaming")
            await self._bounded(state.set_state(self.pg, "streaming"), "recording the recovery")
            loop.errors = 0
        polled = await self.update_gauges()
        loop.backlog = polled.backlog
        if result is not None and await self.prune_due(polled.rows - polled.backlog):
            await self.prune(optional=True)
        if not loop.caught_up and polled.backlog == 0:
            loop.caught_up = await self._bounded(self._record_caught_up(), "recording catch-up")
        if time.monotonic() - loop.last_summary >= self.cfg.summary_interval:
            _log.info("summary", applied=loop.applied, cursor=self.cursor,
                      lag_seconds=round(_lag(polled), 3), backlog=polled.backlog)
            loop.last_summary, loop.applied = time.monotonic(), 0
        return result

    async def _start_streaming(self, loop: _LoopState) -> None:
        assert self.pg is not None
        st = await state.load(self.pg)
        assert st is not None
        if st.state in ("done", "cutover"):
            await self._check_done()
        else:
            await state.set_state(self.pg, "streaming")
            metrics.set_state("streaming")
        last = await self.pg.fetchval(f"SELECT extract(epoch FROM updated_at) FROM {state.SCHEMA}.state")
        metrics.LAST_APPLY.set(float(last or 0))
        metrics.CURSOR.set(self.cursor)
        loop.caught_up = bool(st.info.get("caught_up_at"))
        loop.started = True

    def _check_identity(self) -> None:
        if self.identity is None:
            return
        try:
            now = source_identity(self.cfg.source)
        except FileNotFoundError:
            raise SourceReplaced(f"source: {self.cfg.source} disappeared under the daemon") from None
        if now != self.identity:
            raise SourceReplaced(
                f"source: {self.cfg.source} was replaced under the daemon (another file now has "
                "its name, e.g. restored from a backup). Changes made to the old file after the "
                "last applied batch cannot be read. Replication stopped; check the file and start "
                "again (uninstall, then run)")

    async def _record_caught_up(self) -> bool:
        """The first time the backlog left by the snapshot is gone: a timing for the report."""
        assert self.pg is not None
        st = await state.load(self.pg)
        finished = (st.info.get("snapshot_finished_at") if st else None) or time.time()
        seconds = round(time.time() - finished, 3)
        await state.merge_info(self.pg, caught_up_at=time.time(), catch_up_seconds=seconds)
        await state.event(self.pg, "caught_up", seconds=seconds, cursor=self.cursor)
        _log.info("caught_up", seconds_after_snapshot=seconds)
        return True

    async def _on_error(self, exc: BaseException, errors: int) -> float:
        if pooler_symptom(exc) and not self.pooled:
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
                    await self._bounded(self._load_targets(), "reloading the replication state")
            return backoff(errors)
        if isinstance(exc, sqlite3.OperationalError) and is_busy_sqlite(exc):
            metrics.SQLITE_BUSY_RETRIES.inc()
            return backoff(errors, base=0.05, cap=1.0)
        kind = exc.kind if isinstance(exc, ReplicatorError) else "runtime"
        message = str(exc) if isinstance(exc, ReplicatorError) else f"{type(exc).__name__}: {exc}"
        metrics.ERRORS.labels(kind).inc()
        metrics.set_state("error")
        if errors == 1 or errors % 10 == 0:
            _log.error("replication_error", kind=kind, error=message, attempt=errors,
                       exc_info=not isinstance(exc, ReplicatorError))
        with contextlib.suppress(Exception):
            assert self.pg is not None
            await state.set_state(self.pg, "error", error=log.scrub(message))
            if errors == 1:
                await state.event(self.pg, "error", None, kind=kind, error=log.scrub(message))
        self.schema_version = None  # look at the schema again before the next try
        return min(30.0, 2.0 * errors)

    async def update_gauges(self) -> Poll:
        """Backlog, lag, log size and WAL size into their gauges; returns what was read."""
        assert self.tail is not None
        polled = await self.tail.poll(self.cursor)
        metrics.BACKLOG.set(polled.backlog)
        metrics.LOG_ROWS.set(polled.rows)
        metrics.LAG_SECONDS.set(_lag(polled))
        wal = Path(str(self.cfg.source) + "-wal")
        metrics.WAL_BYTES.set(wal.stat().st_size if wal.exists() else 0)
        return polled

    async def drain(self, timeout: float) -> int:
        """Apply until the log is empty (used by cutover after the fence)."""
        assert self.tail is not None
        deadline = time.monotonic() + timeout
        while True:
            version, high = await self.tail.quick()
            if version != self.schema_version:
                await self.handle_drift()
            if high <= self.cursor:
                return self.cursor
            await self.batch()
            if time.monotonic() > deadline:
                raise ReplicatorError(f"drain did not finish within {timeout:.0f}s")

    async def open_tail(self) -> None:
        self.tail = Tail(self.cfg.source, self.cfg.busy_timeout_ms, self.cfg.batch_page)
        await self.tail.open()


def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a corrupt file before writing anything to it."""
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    if rows != ["ok"]:
        raise StartupError(f"source: {path} is damaged ({'; '.join(rows)}); nothing was written. "
                           "Repair it (sqlite3 .recover) before migrating")


def _write_refused(exc: sqlite3.OperationalError, path: Path) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return (f"source: cannot write to {path} or its directory ({text}); the replicator must "
                "install its capture triggers there. `replicator copy` needs no write access")
    if "locked" in text or "busy" in text:
        return (f"source: {path} stayed locked by another connection ({text}); the replicator "
                "waits busy_timeout_ms for its short writes. Retry when the long write is over")
    return f"source: cannot install capture in {path}: {text}"




def source_identity(path: Path) -> tuple[int, int]:
    """The file's identity: replacing or restoring it under the daemon changes (dev, inode)."""
    st = path.stat()
    return st.st_dev, st.st_ino




def _lag(polled: Poll) -> float:
    return max(0.0, time.time() - polled.oldest) if polled.oldest else 0.0


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)

