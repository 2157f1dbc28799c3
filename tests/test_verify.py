"""verify: passes on an exact copy; names the table and the key for each kind of difference."""

from __future__ import annotations

import json
import math
import sqlite3

import asyncpg
import pytest

from .support.helpers import cli


def verify(db, dsn, *extra):
    out = cli("verify", "--source", str(db), "--target", dsn, "--json", *extra)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def table(report, name):
    return next(t for t in report["tables"] if t["table"] == name)


@pytest.fixture
def copied(chinook, target_dsn):
    cli("copy", "--source", str(chinook), "--target", target_dsn, check=True)
    return chinook, target_dsn


async def test_exact_copy_verifies(copied):
    db, dsn = copied
    code, report = verify(db, dsn)
    assert code == 0 and report["ok"]
    assert report["rows"] == 15607
    assert table(report, "PlaylistTrack")["matched"] == 8715  # composite key merge


@pytest.mark.parametrize(
    ("sql", "tbl", "kind", "key"),
    [
        ("UPDATE track SET composer = 'someone else' WHERE trackid = 42", "Track", "different", [42]),
        ("DELETE FROM invoiceline WHERE invoicelineid = 7", "InvoiceLine", "missing", [7]),
        ("INSERT INTO genre VALUES (999, 'Polka')", "Genre", "extra", [999]),
        ("DELETE FROM playlisttrack WHERE playlistid = 1 AND trackid = 3402", "PlaylistTrack",
         "missing", [1, 3402]),
    ],
)
async def test_each_kind_of_difference_is_named(copied, sql, tbl, kind, key):
    db, dsn = copied
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
    code, report = verify(db, dsn)
    assert code == 1 and not report["ok"]
    bad = [t["table"] for t in report["tables"] if not t["ok"]]
    assert bad == [tbl]
    t = table(report, tbl)
    assert t[kind] == 1
    sample = t["samples"][kind][0]
    assert sample["key"] == key
    if kind == "different":  # both values, so the operator sees what differs
        assert sample["column"] == "Composer" and sample["postgres"] == "'someone else'"
        assert sample["sqlite"].startswith("'") and sample["sqlite"] != sample["postgres"]
        human = cli("verify", "--source", str(db), "--target", dsn).stdout
        assert "column Composer: SQLite '" in human and "Postgres 'someone else'" in human


async def test_a_float_differing_in_the_last_bit_is_a_difference(tmp_path, target_dsn):
    db = tmp_path / "f.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, x REAL, z REAL)")
    conn.executemany("INSERT INTO m VALUES (?, ?, ?)", [(1, 0.1 + 0.2, 0.0), (2, 1e300, 5e-324)])
    conn.commit()
    conn.close()
    cli("copy", "--source", str(db), "--target", target_dsn, check=True)
    assert verify(db, target_dsn)[0] == 0
    pg = await asyncpg.connect(target_dsn)
    try:
        await pg.execute("UPDATE m SET x = $1 WHERE id = 1", math.nextafter(0.1 + 0.2, 1))
        code, report = verify(db, target_dsn)
        assert code == 1 and table(report, "m")["samples"]["different"][0]["key"] == [1]
        await pg.execute("UPDATE m SET x = $1 WHERE id = 1", 0.1 + 0.2)
        await pg.execute("UPDATE m SET z = '-0'::float8 WHERE id = 1")  # only the sign bit differs
        code, report = verify(db, target_dsn)
        assert code == 1 and table(report, "m")["different"] == 1
    finally:
        await pg.close()


async def test_quarantined_rows_are_reported_apart(tmp_path, target_dsn):
    db = tmp_path / "q.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)",
                     [(1, 5, "ok"), (2, "not a number", "x"), (3, 7, "nul\x00byte"), (4, 8, "fine")])
    conn.commit()
    conn.close()
    cli("copy", "--source", str(db), "--target", target_dsn, check=True)
    code, report = verify(db, target_dsn)
    assert code == 0, report
    t = table(report, "t")
    assert (t["matched"], t["quarantined"]) == (2, 2)
    pg = await asyncpg.connect(target_dsn)
    try:
        await pg.execute("DELETE FROM _replicator.quarantine WHERE key = '[{\"int\": \"2\"}]'")
    finally:
        await pg.close()
    code, report = verify(db, target_dsn)
    assert code == 1 and table(report, "t")["missing"] == 1  # absent and not quarantined: a loss


async def test_sample_and_tables_options(copied):
    db, dsn = copied
    code, report = verify(db, dsn, "--sample", "0.2", "--tables", "Track,Album")
    assert code == 0 and [t["table"] for t in report["tables"]] == ["Track", "Album"]
    assert 0 < table(report, "Track")["matched"] < 3503


async def test_the_daemon_verifies_in_the_background_and_records_it(chinook, target_dsn):
    from .support.helpers import Daemon, wait_for

    daemon = Daemon(chinook, target_dsn, config="[verify]\ninterval = 1\nrate = 100000\n")
    try:
        async def recorded():
            conn = await asyncpg.connect(target_dsn)
            try:
                if not await conn.fetchval("SELECT to_regclass('_replicator.state') IS NOT NULL"):
                    return False
                info = await conn.fetchval("SELECT info FROM _replicator.state")
            finally:
                await conn.close()
            last = json.loads(info or "{}").get("last_verify") or {}
            return last.get("full") and last.get("ok")

        await wait_for(recorded, 60, "a background verification on record", daemon)

        async def logged():  # the state is recorded inside the pass, the event after it
            return [e for e in daemon.events() if e["event"] == "background_verify"]

        passes = await wait_for(logged, 10, "the background_verify event", daemon)
        assert passes[0]["ok"] and passes[0]["rows"] == 15607
    finally:
        daemon.stop()


async def test_a_timestamp_differing_only_in_time_zone_is_a_difference(tmp_path, target_dsn):
    db = tmp_path / "tz.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, at DATETIME)")
    conn.executemany("INSERT INTO e VALUES (?, ?)", [(1, "2024-03-10 12:00:00"), (2, "2024-03-11 08:30:00")])
    conn.commit()
    conn.close()
    cli("copy", "--source", str(db), "--target", target_dsn, check=True)
    assert verify(db, target_dsn)[0] == 0
    pg = await asyncpg.connect(target_dsn)
    try:
        # The same wall-clock time read in another zone: one hour off as an instant.
        await pg.execute("UPDATE e SET at = (at AT TIME ZONE 'UTC') AT TIME ZONE 'Europe/Paris' "
                         "WHERE id = 2")
    finally:
        await pg.close()
    code, report = verify(db, target_dsn)
    sample = table(report, "e")["samples"]["different"][0]
    assert code == 1 and (sample["key"], sample["column"]) == ([2], "at")
    assert sample["sqlite"] != sample["postgres"] and "datetime" in sample["postgres"]


async def test_tables_compared_in_worker_processes_find_the_same_differences(copied, monkeypatch):
    """The parallel path (one process per table) reports exactly what the in-process one does."""
    from replicator import config as rconfig
    from replicator import verify as rverify
    from replicator import workers
    from replicator.dsn import parse_target
    from replicator.verify import merge

    db, dsn = copied
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE track SET milliseconds = milliseconds + 1 WHERE trackid = 5")
        await conn.execute("DELETE FROM invoiceline WHERE invoicelineid = 9")
    finally:
        await conn.close()
    cfg = rconfig.build(overrides={"source": str(db), "target_url": dsn, "verify_workers": 2})
    pools = []

    class Pool(workers.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(kwargs["max_workers"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(workers, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(merge, "PARALLEL_FROM", 0)
    parallel = await rverify.verify(cfg, parse_target(dsn))
    assert pools == [2]
    monkeypatch.setattr(merge, "PARALLEL_FROM", 10**12)
    serial = await rverify.verify(cfg, parse_target(dsn))
    assert not parallel["ok"] and parallel["rows"] == serial["rows"] == 15607
    strip = [{k: v for k, v in t.items() if k != "seconds"} for t in parallel["tables"]]
    assert strip == [{k: v for k, v in t.items() if k != "seconds"} for t in serial["tables"]]
    assert [t["table"] for t in parallel["tables"] if not t["ok"]] == ["InvoiceLine", "Track"]
    track = table(parallel, "Track")
    assert track["different"] == 1 and track["samples"]["different"][0]["key"] == [5]
