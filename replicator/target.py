"""The Postgres side: connecting the way Neon needs, and creating the replicated tables.

Connections retry what Neon does on suspend, cold start and restarts (57P01, dropped sockets,
timeouts) with capped, jittered backoff; authentication and configuration errors fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from . import log, metrics
from .dsn import TargetDSN
from .errors import StartupError, TargetError, is_retryable_pg
from .quoting import qi

_log = log.get("target")
T = TypeVar("T")

_FATAL_CONNECT = (
    asyncpg.exceptions.InvalidPasswordError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.InsufficientPrivilegeError,
)


def tune_socket(conn: asyncpg.Connection, dead_after: float) -> None:
    """Notice a dead link within ``dead_after`` seconds: TCP keepalives while idle, and a user
    timeout for data that is never acknowledged (a network partition, a vanished compute)."""
    sock = conn._transport.get_extra_info("socket") if conn._transport else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle = max(1, int(dead_after / 3))
        for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", max(1, idle // 2)),
                            ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", int(dead_after * 1000))):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


# asyncpg writes the dates 0001-01-01 and 9999-12-31, and the timestamps 0001-01-01 00:00:00 and
# 9999-12-31 23:59:59.999999, as -infinity and infinity, and reads those back as the same
# values: real dates SQLite holds would arrive altered, unseen by any comparison. These codecs
# (asyncpg's own binary layout, as tuples) write every value as itself, and read Postgres's
# infinities as the text Postgres prints for them ("infinity", "-infinity"), which equals no
# date: a value only Postgres can hold (the application wrote it there) is seen as different.
_DATE_EPOCH = date(2000, 1, 1).toordinal()
_EPOCH, _EPOCH_UTC = datetime(2000, 1, 1), datetime(2000, 1, 1, tzinfo=UTC)
_INF64, _INF32 = 0x7FFFFFFFFFFFFFFF, 0x7FFFFFFF
_INFINITIES = ("infinity", "-infinity")


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _date_out(v: date | str) -> tuple[int]:
    if v in _INFINITIES:  # as read: Postgres's infinities
        return (_INF32 if v == "infinity" else -_INF32 - 1,)
    assert isinstance(v, date)
    return (v.toordinal() - _DATE_EPOCH,)


def _date_in(v: tuple[int]) -> date | str:
    n = v[0]
    return "infinity" if n == _INF32 else "-infinity" if n == -_INF32 - 1 else \
        date.fromordinal(n + _DATE_EPOCH)


def _timestamp_out(v: date | str) -> tuple[int]:
    if v in _INFINITIES:
        return (_INF64 if v == "infinity" else -_INF64 - 1,)
    assert isinstance(v, date)
    if not isinstance(v, datetime):
        v = datetime(v.year, v.month, v.day)
    return (_micros(v - _EPOCH),)


def _timestamptz_out(v: date | str) -> tuple[int]:
    if v in _INFINITIES:
        return _timestamp_out(v)
    assert isinstance(v, date)
    if not isinstance(v, datetime):
        v = datetime(v.year, v.month, v.day).astimezone()  # asyncpg: the local time zone
    return (_micros(v.astimezone(UTC) - _EPOCH_UTC),)


def _time_in(epoch: datetime) -> Callable[[tuple[int]], datetime | str]:
    def decode(v: tuple[int]) -> datetime | str:
        n = v[0]
        return "infinity" if n == _INF64 else "-infinity" if n == -_INF64 - 1 else \
            epoch + timedelta(microseconds=n)
    return decode


_EXACT_CODECS: tuple[tuple[str, Callable[[Any], tuple[int]], Callable[[Any], Any]], ...] = (
    ("date", _date_out, _date_in),
    ("timestamp", _timestamp_out, _time_in(_EPOCH)),
    ("timestamptz", _timestamptz_out, _time_in(_EPOCH_UTC)),
)


async def exact_times(conn: asyncpg.Connection) -> None:
    """Dates and timestamps written as themselves on ``conn`` (see above)."""
    for name, encoder, decoder in _EXACT_CODECS:
        await conn.set_type_codec(name, schema="pg_catalog", encoder=encoder, decoder=decoder,
                                  format="tuple")


# Each connection's server process, kept past its end (asyncpg forgets it once a connection is
# cut): what ``end_backend`` needs after a reconnect.
_SERVER_PIDS: weakref.WeakKeyDictionary[asyncpg.Connection, int] = weakref.WeakKeyDictionary()


def server_pid(conn: asyncpg.Connection) -> int | None:
    """The server process ``conn`` was bound to (also once it is closed), if ``connect`` made it."""
    return _SERVER_PIDS.get(conn)


async def end_backend(conn: asyncpg.Connection, pid: int, wait_ms: int = 5000) -> bool:
    """Our own earlier server process ``pid`` (its connection was cut client-side; behind a silent
    network the server may keep it, with its transaction's locks, for hours) terminated, waiting
    up to ``wait_ms`` for it to end on Postgres 14 and later. Only a replicator process of this
    role is touched. Not behind a transaction pooler, where a pid names a pooled connection."""
    wait = ", $2" if conn.get_server_version().major >= 14 else ""
    args = (pid, wait_ms) if wait else (pid,)
    return bool(await conn.fetchval(
        f"SELECT pg_terminate_backend(pid{wait}) FROM pg_stat_activity WHERE pid = $1 AND "
        "usename = current_user AND application_name = 'replicator'", *args))


async def connect(
    target: TargetDSN,
    *,
    timeout: float = 15.0,
    tls_verify: bool = True,
    retry_for: float = 60.0,
    dead_after: float = 30.0,
) -> asyncpg.Connection:
    """Open one connection, retrying transient failures for up to ``retry_for`` seconds."""
    if target.dropped:
        _log.info("dsn_keys_dropped", keys=list(target.dropped), why="asyncpg would forward them")
    kwargs = {
        "dsn": target.dsn,
        "timeout": timeout,
        "ssl": target.ssl_context(tls_verify),
        "server_settings": {"application_name": "replicator"},
        "command_timeout": None,
    }
    if target.pooled:
        kwargs["statement_cache_size"] = 0
    if target.password is not None:
        kwargs["password"] = target.password
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_for
    attempt = 0
    while True:
        try:
            conn = await asyncpg.connect(**kwargs)
            tune_socket(conn, dead_after)
            await exact_times(conn)
            _SERVER_PIDS[conn] = conn.get_server_pid()
            return conn
        except (*_FATAL_CONNECT, ssl.SSLCertVerificationError) as exc:
            raise StartupError(_connect_message(target, exc)) from None
        except Exception as exc:  # noqa: BLE001 - classified below
            retryable = is_retryable_pg(exc) or isinstance(exc, asyncpg.PostgresError) and (
                getattr(exc, "sqlstate", "") or ""
            ).startswith("57P03")
            if not retryable or loop.time() >= deadline:
                raise StartupError(_connect_message(target, exc)) from None
            attempt += 1
            delay = backoff(attempt)
            _log.warning(
                "target_connect_retry", attempt=attempt, delay=round(delay, 2),
                error=f"{type(exc).__name__}: {exc}", target=target.masked,
            )
            await asyncio.sleep(delay)


def _connect_message(target: TargetDSN, exc: BaseException) -> str:
    detail = log.scrub(f"{type(exc).__name__}: {exc}")
    hint = ""
    if isinstance(exc, asyncpg.exceptions.InvalidPasswordError):
        hint = " (check the user and password)"
    elif isinstance(exc, asyncpg.exceptions.InvalidCatalogNameError):
        hint = f" (database {target.database!r} does not exist)"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        hint = (" (the server's certificate does not verify: give its CA with sslrootcert=..., or "
                "for a test server set target.tls_verify = false)")
    elif isinstance(exc, (OSError, asyncio.TimeoutError, TimeoutError)):
        hint = " (is the host reachable and the port right?)"
    return f"target: cannot connect to {target.masked}: {detail}{hint}"


def backoff(attempt: int, base: float = 0.25, cap: float = 10.0) -> float:
    """Capped exponential backoff with full jitter."""
    return random.uniform(base / 2, min(cap, base * 2 ** min(attempt, 16)))


async def retrying(
    what: str,
    fn: Callable[[], Awaitable[T]],
    *,
    reconnect: Callable[[], Awaitable[None]],
    attempts: int = 8,
) -> T:
    """Run ``fn``; on a retryable Postgres failure reconnect and try again with backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except Exception as exc:
            if not is_retryable_pg(exc) or attempt == attempts:
                raise
            metrics.ERRORS.labels("target").inc()
            delay = backoff(attempt)
            _log.warning(
                "target_retry", what=what, attempt=attempt, delay=round(delay, 2),
                error=f"{type(exc).__name__}: {exc}",
            )
            await asyncio.sleep(delay)
            await reconnect()
            metrics.TARGET_RECONNECTS.inc()
    raise AssertionError("unreachable")


async def ensure_schema(conn: asyncpg.Connection, schema: str) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    if not exists:
        try:
            await conn.execute(f"CREATE SCHEMA {qi(schema)}")
        except asyncpg.exceptions.InsufficientPrivilegeError:
            raise TargetError(
                f"target: schema {schema!r} does not exist and this role may not create it"
            ) from None


async def table_exists(conn: asyncpg.Connection, schema: str, name: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname = $2",
            schema,
            name,
        )
    )


async def max_connections(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SHOW max_connections"))
