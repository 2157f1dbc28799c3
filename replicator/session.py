"""What the stages of one replication share, passed to each of them instead of the orchestrator.

A ``Session`` holds the configuration, the target, the two connections (the live SQLite file,
whose writes go through ``LiveFile``, and Postgres, replaced on a reconnect), the tables being
replicated as the target records them, the stop event and the live ``Progress``. The snapshot
phase, the drift follower, the stream and cutover each receive it; ``service.Replicator`` owns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import asyncpg

from . import log, metrics, state
from .apply import TableTarget
from .config import Config
from .dsn import TargetDSN
from .errors import TargetError
from .source_write import LiveFile
from .target import connect, end_backend, server_pid

_log = log.get("session")

T = TypeVar("T")
ProgressFn = Callable[[str, int, int], None]  # table, rows done, rows total (progress bars)


@dataclass
class Progress:
    """The daemon's own view of where it stands, for /readyz, background verification and the
    summary line. Metrics are written from the same values and never read back as state."""

    state: str = "new"
    lag_seconds: float = 0.0
    backlog: int = 0
    error: bool = False
    applied: int = 0  # log entries applied since the daemon started
    quarantined: int = 0  # rows in quarantine now
    errors: int = 0  # failed turns since the daemon started (each retried)
    started: float = field(default_factory=time.monotonic)

    def set_state(self, name: str) -> None:
        self.state, self.error = name, name == "error"
        metrics.set_state(name)

    def set_position(self, backlog: int, lag_seconds: float) -> None:
        self.backlog, self.lag_seconds = backlog, lag_seconds
        metrics.BACKLOG.set(backlog)
        metrics.LAG_SECONDS.set(lag_seconds)


@dataclass
class Session:
    cfg: Config
    target: TargetDSN  # with ``pooled`` decided (config override, else the host name)
    mode: str  # "run" or "copy"
    live_file: LiveFile | None = None
    pg: asyncpg.Connection | None = None
    stop: asyncio.Event | None = None  # set by the daemon's signal handlers
    bars: ProgressFn | None = None
    progress: Progress = field(default_factory=Progress)
    # The replicated tables, as the target records them (``reload``):
    targets: dict[str, TableTarget] = field(default_factory=dict)
    sql: dict[str, str] = field(default_factory=dict)  # CREATE TABLE text each was planned from
    quarantined: dict[str, bool] = field(default_factory=dict)  # may have rows in quarantine
    cursor: int = 0
    schema_version: int | None = None

    @classmethod
    def create(cls, cfg: Config, target: TargetDSN, mode: str) -> Session:
        pooled = cfg.pooled if cfg.pooled is not None else target.pooled
        return cls(cfg=cfg, target=replace(target, pooled=pooled), mode=mode)

    @property
    def schema(self) -> str:
        return self.cfg.target_schema

    @property
    def conn(self) -> asyncpg.Connection:
        """The Postgres connection (the session is open)."""
        assert self.pg is not None, "the session is not connected"
        return self.pg

    @property
    def live(self) -> LiveFile:
        """The replicator's writing connection to the live file (the source is open)."""
        assert self.live_file is not None, "the source is not open"
        return self.live_file

    @property
    def writer(self) -> sqlite3.Connection:
        """The connection to the live file (its writes go through ``live``)."""
        return self.live.conn

    async def connect(self, retry_for: float = 60.0) -> asyncpg.Connection:
        cfg = self.cfg
        return await connect(self.target, timeout=cfg.connect_timeout, tls_verify=cfg.tls_verify,
                             retry_for=retry_for, dead_after=cfg.dead_link_timeout)

    async def reconnect(self, retry_for: float = 0.0) -> None:
        """A new connection in place of the current one, and the old one's server process ended:
        cut client-side (``bounded``, a dead link), it may live on at the server behind a silent
        network, inside a transaction holding the replicator's state or rows, and the next write
        would wait on its locks for as long as the server's own timeouts allow. Not behind a
        transaction pooler, where the process belongs to the pool. ``retry_for``: as ``connect``
        (0: one attempt, the caller backs off)."""
        old = self.pg
        old_pid = server_pid(old) if old is not None else None
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.close(), 2)
            old.terminate()
        self.pg = await self.connect(retry_for=retry_for)
        if old_pid and not self.target.pooled:
            ended = await end_backend(self.pg, old_pid)
            _log.info("old_backend_ended" if ended else "old_backend_gone", pid=old_pid)

    async def reload(self) -> None:
        """The replicated tables and the cursor, as the target records them (the truth after a
        restart or a reconnect: a commit whose acknowledgement was lost is there)."""
        st = await state.load(self.conn)
        assert st is not None
        self.cursor = st.cursor
        self.schema_version = st.schema_version
        self.quarantined = {t: True for t in await state.quarantine_count(self.conn)}
        self.targets, self.sql = {}, {}
        for name, t in (await state.tables(self.conn)).items():
            self.targets[name] = TableTarget(
                plan=t.plan, schema=self.schema, snapshot_seq=t.snapshot_seq or 0,
                streaming=t.status == state.STREAMING,
            )
            self.sql[name] = t.sqlite_sql

    async def count_quarantine(self, conn: asyncpg.Connection | None = None) -> int:
        """The rows held in quarantine, into the progress (the screen, /readyz) and the gauge;
        ``conn``: a connection inside a transaction that just changed them (else the session's)."""
        rows = sum((await state.quarantine_count(conn or self.conn)).values())
        self.progress.quarantined = rows
        metrics.QUARANTINE_SIZE.set(rows)
        return rows

    async def bounded(self, work: Awaitable[T], what: str) -> T:
        """Target work that does not finish in time means a hung server or a silent network (TCP
        keepalives cannot tell when a middlebox still acknowledges): cut the connection (its
        statements fail at once, an open transaction never commits) and let the caller retry."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=self.cfg.batch_timeout)
        if done:
            return task.result()
        self.conn.terminate()
        with contextlib.suppress(BaseException):
            await task
        raise TargetError(f"target: {what} took longer than {self.cfg.batch_timeout:.0f}s (a hung "
                          "server or a silent network); the connection was cut and is retried",
                          retryable=True)
