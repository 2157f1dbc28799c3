"""The harness works: the comparator's row matching, and against the real Postgres the TCP
proxy's controls and the PgBouncer (transaction pooling) fixture."""

from __future__ import annotations

import asyncio
import struct
import time
from decimal import Decimal

import asyncpg
import pytest

from .support.helpers import _fingerprint, _fingerprint_sqlite, _same
from .support.pgbouncer import pgbouncer  # noqa: F401 - the fixture
from .support.proxy import FrameSplitter, Proxy, query_text, rewrite_dsn

BROKEN = (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.InterfaceError,
          ConnectionError, OSError)


@pytest.fixture
def proxy(pg_env):
    with Proxy(pg_env.host, pg_env.port) as p:
        yield p


async def _backend_gone(admin_dsn: str, pid: int, timeout: float = 10) -> bool:
    conn = await asyncpg.connect(admin_dsn)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await conn.close()


# -- the wire-protocol splitter (no server needed) ---------------------------------------------


def _typed(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


@pytest.mark.parametrize("sqlite_value, pg_value, pg_type", [
    (1e16, "1e+16", "text"),  # a REAL in a column re-planned to text (found by the campaign)
    (float("inf"), "inf", "text"),  # ... and an infinity (found by the campaign)
    (2**63 - 1, "9223372036854775807", "text"),
    ("1.0", "1.0", "text"),
    (0.1, "0.1", "text"),
    (7, 7, "bigint"),
    (-(2**63), Decimal(-(2**63)), "numeric"),  # found by the campaign
    (2**63 - 1, Decimal(2**63 - 1), "numeric"),
    (1e300, 1e300, "double precision"),
    (1e308, Decimal("1E+308"), "numeric"),  # a REAL in numeric, beyond 64 bits
    (b"\x00", b"\x00", "bytea"),
])
def test_rows_the_comparator_calls_equal_are_matched(sqlite_value, pg_value, pg_type):
    # compare_all buckets rows by a coarse key and lets _same decide: an exact value must land
    # in its Postgres row's bucket, or it is reported missing although it arrived.
    assert _same(sqlite_value, pg_value, pg_type)
    assert _fingerprint_sqlite((sqlite_value,), [pg_type]) == _fingerprint((pg_value,), [pg_type])


def test_the_comparator_tells_different_values_apart():
    assert not _same(1, "1.0", "text")
    assert not _same(1.5, 1.5000001, "double precision")
    assert not _same("2024-01-01 10:00", None, "timestamp with time zone")


def test_splitter_handles_frames_split_anywhere():
    ssl = struct.pack("!ii", 8, 80877103)
    startup_body = struct.pack("!i", 196608) + b"user\x00u\x00database\x00d\x00\x00"
    startup = struct.pack("!i", len(startup_body) + 4) + startup_body
    q = _typed(b"Q", b"COMMIT;\x00")
    copy = _typed(b"d", b"x" * 70_000)
    stream = ssl + startup + _typed(b"p", b"secret\x00") + q + copy + _typed(b"c", b"")
    for step in (1, 3, 7, 4096, len(stream)):
        s = FrameSplitter()
        frames = []
        for i in range(0, len(stream), step):
            frames += s.feed(stream[i:i + step])
        assert [k for k, _ in frames] == [None, None, b"p", b"Q", b"d", b"c"]
        assert b"".join(f for _, f in frames) == stream
        assert query_text(frames[3][1]) == "COMMIT;"


def test_splitter_goes_opaque_on_tls():
    s = FrameSplitter()
    assert s.feed(struct.pack("!ii", 8, 80877103)) == [(None, struct.pack("!ii", 8, 80877103))]
    hello = b"\x16\x03\x01\x02\x00" + b"\x01" * 40
    assert s.feed(hello) == [(None, hello)]
    assert s.opaque and s.feed(b"Q\x00\x00") == [(None, b"Q\x00\x00")]


def test_rewrite_dsn_keeps_everything_but_the_address():
    dsn = "postgresql://us%40er:p%3Aw@db.example.com:5432/my%20db?sslmode=require"
    assert rewrite_dsn(dsn, "127.0.0.1", 6000) == \
        "postgresql://us%40er:p%3Aw@127.0.0.1:6000/my%20db?sslmode=require"


# -- the proxy against Postgres ----------------------------------------------------------------


async def test_proxy_forwards_and_counts(proxy, target_dsn):
    conn = await asyncpg.connect(proxy.dsn_for(target_dsn))
    try:
        assert await conn.fetchval("SELECT 40 + 2") == 42
        assert await conn.fetchval("SELECT current_user") == "replicator"
    finally:
        await conn.close()
    stats = proxy.stats()
    assert stats["connections"] == 1 and stats["bytes_up"] > 0 and stats["bytes_down"] > 0
    assert stats["cuts"] == 0


async def test_cut_resets_open_connections_both_ways(proxy, pg_env, target_dsn):
    conns = [await asyncpg.connect(proxy.dsn_for(target_dsn)) for _ in range(3)]
    pids = [await c.fetchval("SELECT pg_backend_pid()") for c in conns]
    assert proxy.active == 3
    assert proxy.cut() == 3
    for conn in conns:
        with pytest.raises(BROKEN):
            await conn.fetchval("SELECT 1")
        conn.terminate()
    for pid in pids:  # the server side saw the cut too: its backends are gone
        assert await _backend_gone(pg_env.admin_dsn, pid)
    assert proxy.cuts == 3
    conn = await asyncpg.connect(proxy.dsn_for(target_dsn))  # the proxy itself carries on
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()


async def test_cut_mid_transaction_rolls_back(proxy, target_dsn):
    direct = await asyncpg.connect(target_dsn)
    await direct.execute("CREATE TABLE t (id int PRIMARY KEY)")
    conn = await asyncpg.connect(proxy.dsn_for(target_dsn))
    tr = conn.transaction()
    await tr.start()
    await conn.execute("INSERT INTO t VALUES (1)")
    proxy.cut()
    with pytest.raises(BROKEN):
        await tr.commit()
    conn.terminate()
    assert await direct.fetchval("SELECT count(*) FROM t") == 0
    await direct.close()


async def test_cut_after_commit_commits_but_client_sees_an_error(proxy, target_dsn):
    direct = await asyncpg.connect(target_dsn)
    await direct.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    conn = await asyncpg.connect(proxy.dsn_for(target_dsn))
    await conn.execute("INSERT INTO t VALUES (0, 'before')")  # autocommit: no COMMIT message
    proxy.cut_after_commit()
    with pytest.raises(BROKEN):
        async with conn.transaction():
            await conn.execute("INSERT INTO t VALUES (1, 'lost ack')")
    conn.terminate()
    assert await direct.fetch("SELECT id, v FROM t ORDER BY id") == [(0, "before"), (1, "lost ack")]
    stats = proxy.stats()
    assert stats["commit_cuts"] == 1 and stats["pending_commit_cuts"] == 0
    # Disarmed after one: the next transaction goes through.
    conn = await asyncpg.connect(proxy.dsn_for(target_dsn))
    async with conn.transaction():
        await conn.execute("INSERT INTO t VALUES (2, 'fine')")
    await conn.close()
    assert await direct.fetchval("SELECT count(*) FROM t") == 3
    await direct.close()


async def test_cut_during_copy_aborts_the_copy(proxy, target_dsn):
    direct = await asyncpg.connect(target_dsn)
    await direct.execute("CREATE TABLE t (id int, v text)")
    conn = await asyncpg.connect(proxy.dsn_for(target_dsn))
    sent = []

    async def chunks():
        # Small paced chunks: one CopyData each. (asyncpg's copy_records_to_table can hang for
        # ever when the link dies while its 512 KiB writes are flow-control paused: asyncpg
        # waits on ``writing_allowed``, which connection_lost never sets; give it a timeout.)
        for n in range(20):
            sent.append(n)
            yield "".join(f"{n * 100 + i}\tx{'y' * 50}\n" for i in range(100)).encode()
            await asyncio.sleep(0.02)

    proxy.cut_during_copy(after=3)
    with pytest.raises(BROKEN):
        await conn.copy_to_table("t", source=chunks(), timeout=30)
    conn.terminate()
    assert len(sent) >= 3  # asyncpg goes on pulling the source after the link died
    assert await direct.fetchval("SELECT count(*) FROM t") == 0  # the COPY rolled back
    stats = proxy.stats()
    assert stats["copy_cuts"] == 1 and stats["pending_copy_cuts"] == 0
    conn = await asyncpg.connect(proxy.dsn_for(target_dsn))  # the next COPY is untouched
    await conn.copy_records_to_table("t", records=[(i, "x" * 200) for i in range(20_000)],
                                     timeout=30)
    await conn.close()
    assert await direct.fetchval("SELECT count(*) FROM t") == 20_000
    await direct.close()


async def test_blackhole_holds_bytes_without_closing(proxy, target_dsn):
    conn = await asyncpg.connect(proxy.dsn_for(target_dsn))
    proxy.blackhole(True)
    try:
        query = asyncio.ensure_future(conn.fetchval("SELECT 7"))
        await asyncio.sleep(0.5)
        assert not query.done()  # silent, not closed
        with pytest.raises((TimeoutError, asyncio.TimeoutError)):
            await asyncpg.connect(proxy.dsn_for(target_dsn), timeout=0.5)  # accepted but mute
        assert proxy.stats()["connections"] == 2
    finally:
        proxy.blackhole(False)
    assert await asyncio.wait_for(query, 5) == 7
    await conn.close()


async def test_delay_connect_is_a_cold_start(proxy, target_dsn):
    proxy.delay_connect(1.0)
    t0 = time.monotonic()
    conn = await asyncpg.connect(proxy.dsn_for(target_dsn))
    assert time.monotonic() - t0 >= 1.0
    t1 = time.monotonic()
    assert await conn.fetchval("SELECT 1") == 1  # an open connection is not slowed down
    assert time.monotonic() - t1 < 0.5
    await conn.close()
    proxy.delay_connect(0)
    t0 = time.monotonic()
    conn = await asyncpg.connect(proxy.dsn_for(target_dsn))
    assert time.monotonic() - t0 < 1.0
    await conn.close()


async def test_refuse_resets_new_connections(proxy, target_dsn):
    conn = await asyncpg.connect(proxy.dsn_for(target_dsn))
    proxy.refuse(True)
    with pytest.raises(BROKEN):
        await asyncpg.connect(proxy.dsn_for(target_dsn), timeout=5)
    assert await conn.fetchval("SELECT 1") == 1  # open connections live on
    proxy.refuse(False)
    other = await asyncpg.connect(proxy.dsn_for(target_dsn))
    assert await other.fetchval("SELECT 2") == 2
    await other.close()
    await conn.close()
    assert proxy.stats()["refused"] == 1


def test_proxy_from_sync_code(pg_env, target_dsn):
    async def roundtrip(dsn):
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SELECT 'sync ok'")
        finally:
            await conn.close()

    with Proxy(pg_env.host, pg_env.port) as proxy:
        assert asyncio.run(roundtrip(proxy.dsn_for(target_dsn))) == "sync ok"
        assert proxy.connections == 1
    with pytest.raises(OSError):  # stopped: nothing listens any more
        asyncio.run(roundtrip(proxy.dsn_for(target_dsn)))


# -- PgBouncer ---------------------------------------------------------------------------------


async def test_pgbouncer_runs_queries(pgbouncer, target_dsn):  # noqa: F811
    conn = await asyncpg.connect(pgbouncer.dsn_for(target_dsn), statement_cache_size=0)
    try:
        await conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, v text)")
        await conn.executemany("INSERT INTO t VALUES ($1, $2)", [(1, "a"), (2, "b")])
        assert await conn.fetch("SELECT * FROM t ORDER BY id") == [(1, "a"), (2, "b")]
        assert await conn.fetchval("SELECT current_user") == "replicator"
    finally:
        await conn.close()


async def test_pgbouncer_pools_per_transaction(pgbouncer, target_dsn):  # noqa: F811
    dsn = pgbouncer.dsn_for(target_dsn)
    a = await asyncpg.connect(dsn, statement_cache_size=0)
    b = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        # Two clients, one after the other, are served by the same server backend...
        pid_a = await a.fetchval("SELECT pg_backend_pid()")
        pid_b = await b.fetchval("SELECT pg_backend_pid()")
        assert pid_a == pid_b
        # ...so session state set by one leaks to the other,
        await a.execute("SET work_mem = '7MB'")
        assert await b.fetchval("SHOW work_mem") == "7MB"
        await b.execute("RESET work_mem")
        # while a client inside a transaction holds its backend for itself.
        async with a.transaction():
            held = await a.fetchval("SELECT pg_backend_pid()")
            assert await b.fetchval("SELECT pg_backend_pid()") != held
            assert await a.fetchval("SELECT pg_backend_pid()") == held
    finally:
        await a.close()
        await b.close()
