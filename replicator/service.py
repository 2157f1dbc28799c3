"""The replicator's lifecycle: open both sides, install capture, snapshot, stream, follow drift.

``Replicator`` owns the parts of one replication and the ``Session`` they share: the snapshot
phase (``snapshot.phase``), the drift follower (``drift``) and the stream (``stream``), which
applies batches with ``apply``. It is used by ``run`` (``daemon``), ``copy`` (``copy_once``: one
shot, no capture) and ``cutover`` (which drains with the same stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import IO, Any

import asyncpg

from . import capture, existing, log, pidfile, state
from .backup import make_backup
from .config import Config
from .drift import DriftFollower
from .dsn import TargetDSN
from .errors import SourceError, StartupError, StateError, startup_message
from .schema import check_names
from .session import ProgressFn, Session
from .snapshot.phase import SnapshotPhase
from .source import inspect, open_source
from .source_write import LiveFile, is_wal
from .stream import Stream, source_identity
from .target import connect, ensure_schema

_log = log.get("service")


class Replicator:
    """One replication, by composition: the session, and the parts that receive it."""

    def __init__(self, cfg: Config, target: TargetDSN, *, mode: str = "run",
                 progress: ProgressFn | None = None):
        self.session = Session.create(cfg, target, mode)
        self.session.bars = progress
        self.cfg = cfg
        self.snapshot = SnapshotPhase(self.session)
        self.drift = DriftFollower(self.session)
        self.stream = Stream(self.session, self.drift, self.reconnect, identity=None)
        self.source_id: str | None = None
        self.backup: str | None = None
        self._lock_file: IO[str] | None = None
        self._daemon_lock = False

    # -- opening and closing -------------------------------------------------------------------

    async def open(self, *, readonly_source: bool = False) -> None:
        cfg, session = self.cfg, self.session
        conn = open_source(cfg.source, readonly=readonly_source,
                           busy_timeout_ms=cfg.busy_timeout_ms)
        session.live_file = LiveFile(conn, cfg.source, cfg.busy_timeout_ms, cfg.quiet_write_timeout)
        self.stream.identity = source_identity(cfg.source)
        session.pg = await session.connect()
        try:
            await state.ensure(session.pg)
            await ensure_schema(session.pg, session.schema)
        except asyncpg.PostgresError as exc:
            message = startup_message(exc, "target")
            if message:
                raise StartupError(message) from None
            raise

    async def reconnect(self) -> None:
        await self.session.reconnect()
        if self._daemon_lock:
            await self._take_pg_lock()
        _log.info("target_reconnected", target=self.session.target.masked)

    async def close(self) -> None:
        await self.stream.close()
        session = self.session
        if session.pg is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.pg.close(), 5)
        if session.live_file is not None:
            session.live_file.conn.close()
        if self._lock_file is not None:
            self._lock_file.close()

    async def lock(self) -> None:
        """One daemon per source file and per target database."""
        fh, holder = pidfile.hold(self.cfg.state_path)
        if fh is None:
            raise StartupError(
                f"another replicator (pid {holder}) is already running for {self.cfg.source}")
        self._lock_file = fh
        self._daemon_lock = True
        await self._take_pg_lock()

    async def _take_pg_lock(self) -> None:
        if self.session.target.pooled:
            # A session lock behind a transaction pooler belongs to whichever server connection
            # ran it; only the file lock guards against a second daemon here.
            _log.warning("no_target_lock", why="pooled endpoint: session advisory locks do not hold")
            return
        if not await state.try_daemon_lock(self.session.conn):
            raise StartupError(
                f"another replicator is already replicating into {self.session.target.masked} "
                "(it holds the target's advisory lock)"
            )

    # -- preparing -------------------------------------------------------------------------------

    async def prepare(self) -> state.State:
        """Check the target's state against this source; start fresh or resume."""
        session = self.session
        writer, mode = session.writer, session.mode
        st = await state.load(session.conn)
        meta = capture.read_meta(writer)
        fresh = st is None or st.mode != mode or mode == "copy" and st.state == "done"
        if st is not None and st.state == "done" and mode == "run" and st.mode == "run":
            src = self.cfg.source
            raise StateError(
                f"target: it holds a finished migration of {st.source_path} (already cut over). "
                f"To rehearse again from the start: `replicator uninstall --source {src}` (lifts "
                "the fence from the file; or restore it from its backup in "
                f"{self.cfg.backup_path}), then a fresh target: with the embedded default "
                f"`replicator embedded drop --source {src}`, elsewhere a new database (or drop "
                "its _replicator schema and the replicated tables)"
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
        tables = [t for n, t in inspect(writer).tables.items() if self.cfg.wants_table(n)]
        check_names(tables, self.cfg)  # before anything is written anywhere
        if st is not None and not fresh and st.info.get("schema_mode", "create") != \
                self.cfg.schema_mode:
            raise StateError(
                f"target.schema_mode: this replication started with "
                f"{st.info.get('schema_mode', 'create')!r}, not {self.cfg.schema_mode!r}; "
                "finish it with the same setting, or start again with a fresh target")
        if self.cfg.schema_mode == "existing" and (st is None or fresh or st.state in ("new",
                                                                                      "snapshot")):
            await existing.preflight(session.conn, self.cfg, tables, writer)
        if self.cfg.snapshot_method == "direct" and not is_wal(writer):
            raise StartupError(
                f"source.snapshot_method = \"direct\" reads {self.cfg.source} in one read "
                "transaction for the whole snapshot; the file uses a rollback journal, where that "
                "read holds off every application commit until it ends. Use \"copy\" (the "
                "default), or switch the file to WAL (PRAGMA journal_mode = WAL)")
        if mode == "run":
            first = not capture.installed(writer)
            if first:
                await asyncio.to_thread(_quick_check, writer, self.cfg.source)
            if first and self.cfg.backup:  # before the first write to the file, ever
                path = await asyncio.to_thread(make_backup, self.cfg.source, self.cfg.backup_path)
                self.backup = str(path)
            try:
                results = await asyncio.to_thread(capture.install, session.live, tables)
            except sqlite3.OperationalError as exc:
                raise StartupError(_write_refused(exc, self.cfg.source)) from None
            changed = [n for n, r in results.items() if r != "kept"]
            if changed:
                _log.info("capture_installed", tables=changed)
            meta = capture.read_meta(writer)
            self.source_id = str(meta["source_id"])
            await self._check_not_pruned(st, meta, fresh)
        if fresh:
            await state.init(
                session.conn, source_id=self.source_id, source_path=str(self.cfg.source.resolve()),
                mode=mode, target_schema=session.schema,
            )
            await state.merge_info(session.conn, schema_mode=self.cfg.schema_mode)
            await state.event(session.conn, "start", mode=mode, fresh=True, backup=self.backup)
            if self.backup:
                await state.merge_info(session.conn, backup=self.backup)
        st = await state.load(session.conn)
        assert st is not None
        return st

    async def _check_not_pruned(self, st: state.State | None, meta: dict[str, Any],
                                fresh: bool) -> None:
        if fresh or st is None or st.state in ("new", "snapshot"):
            return
        pruned = int(meta.get("pruned_through") or 0)
        if pruned > st.cursor:
            raise SourceError(
                f"source: the change log was pruned through {pruned} but the target has only "
                f"applied through {st.cursor} (another target, or a restored database); "
                "changes are missing. Start again with a fresh target"
            )


async def copy_once(cfg: Config, target: TargetDSN, *, progress: Any = None) -> dict[str, Any]:
    """``replicator copy``: a one-shot copy, no capture, nothing written to SQLite. Returns
    what was copied (state, tables with their rows, quarantined rows per table)."""
    rep = Replicator(cfg, target, mode="copy", progress=progress)
    try:
        await rep.open(readonly_source=True)
        await rep.lock()
        await rep.prepare()
        await rep.snapshot.run()
        conn = rep.session.conn
        tables = await state.tables(conn)
        st = await state.load(conn)
        quarantined = await state.quarantine_count(conn)
    finally:
        await rep.close()
    assert st is not None
    return {
        "state": st.state,
        "target": target.masked,
        "seconds": st.info.get("snapshot_seconds"),
        "tables": {n: {"rows": t.rows_copied, "pg_name": t.pg_name} for n, t in tables.items()},
        "rows": sum(t.rows_copied for t in tables.values()),
        "quarantined": quarantined,
    }


async def uninstall(cfg: Config, target: TargetDSN | None) -> dict[str, Any]:
    """Every replicator object out of the SQLite file (refused while a daemon runs), and with a
    ``target``, the bookkeeping schema out of Postgres."""
    pid = pidfile.holder(cfg.state_path)
    if pid is not None:
        raise StartupError(f"a replicator daemon (pid {pid}) is running for {cfg.source}; "
                           "stop it first")
    live = LiveFile.open(cfg.source, busy_timeout_ms=cfg.busy_timeout_ms,
                         quiet_wait=cfg.quiet_write_timeout)
    try:
        result: dict[str, Any] = dict(await asyncio.to_thread(capture.uninstall, live))
    finally:
        live.conn.close()
    if target is not None:
        pg = await connect(target, timeout=cfg.connect_timeout, tls_verify=cfg.tls_verify)
        try:
            if await state.exists(pg):  # an ORM's schema gets its foreign keys back first
                restored = await existing.restore_foreign_keys(pg, cfg.target_schema)
                if restored:
                    result["foreign_keys_restored"] = await existing.validate_foreign_keys(
                        pg, cfg.target_schema)
            await state.drop_schema(pg)
        finally:
            await pg.close()
        result["schema"] = state.SCHEMA
    return result


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
