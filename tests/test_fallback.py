"""The fallback window: after `cutover --fallback` the application writes to Postgres, its changes
flow back into the fenced SQLite file (through kill -9 and a dropped connection), `rollback`
returns to SQLite with nothing lost (compared value by value), forward streaming resumes, and
`finish` leaves no replicator object in Postgres."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from replicator.dsn import build_dsn, parse_target
from replicator.embedded import free_port

from .support.apps import start_app
from .support.helpers import (
    Daemon,
    cli,
    compare_all,
    metric,
    pg_state,
    pg_value,
    quarantine_rows,
    scrape,
    wait_caught_up,
    wait_for,
)
from .support.pgbouncer import pgbouncer  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

# Rows SQLite stored with the storage classes and layouts apps leave behind.
ODDITIES = """
CREATE TABLE oddities (id INTEGER PRIMARY KEY, at DATETIME, flag BOOLEAN, price NUMERIC,
                       data BLOB, stamp INTEGER, note TEXT);
CREATE TABLE tags (code TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE scratch (k INTEGER PRIMARY KEY, v TEXT);
"""


def add_oddities(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(ODDITIES)
    for i in range(1, 41):
        conn.execute("INSERT INTO oddities VALUES (?, ?, ?, ?, ?, ?, ?)", (
            i, f"2024-03-{i % 28 + 1:02d} 10:{i % 60:02d}:05", i % 2,
            i * 3 if i % 3 else i + 0.25, bytes([i, 0, 255]), 1700000000 + i, f"note\t{i}\n"))
    conn.executemany("INSERT INTO tags VALUES (?, ?)", [(f"t{i}", i) for i in range(10)])
    conn.executemany("INSERT INTO scratch VALUES (?, ?)", [(i, f"s{i}") for i in range(5)])
    conn.close()


async def app_on_postgres(dsn: str) -> dict[str, int]:
    """What an application does once it runs on Postgres: every kind of change."""
    pg = await asyncpg.connect(dsn)
    try:
        async with pg.transaction():
            gid = await pg.fetchval("INSERT INTO genre (name) VALUES ('written on neon') "
                                    "RETURNING genreid")
            await pg.execute("UPDATE track SET name = name || ' (pg)', unitprice = unitprice + 1 "
                             "WHERE trackid <= 50")
            await pg.execute("DELETE FROM playlisttrack WHERE playlistid = 1 AND trackid < 500")
            await pg.execute("UPDATE tags SET code = 'renamed' WHERE code = 't3'")  # a key change
            await pg.execute("UPDATE tags SET code = 't5b', n = 44 WHERE code = 't5'")
            await pg.execute("DELETE FROM tags WHERE code = 't7'")
            await pg.execute("UPDATE oddities SET at = at + interval '1 day', flag = NOT flag, "
                             "price = price * 2, data = data || '\\x01'::bytea WHERE id <= 10")
            await pg.execute("INSERT INTO oddities (id, at, flag, price, data, stamp, note) VALUES "
                             "(100, '2025-01-01 00:00:00+00', true, 12.5, '\\x00ff', "
                             "1735689600, 'new on pg')")
            await pg.execute("TRUNCATE scratch")
            await pg.execute("INSERT INTO scratch VALUES (9, 'after truncate')")
        for i in range(200):  # single-row transactions, as a web app makes them
            await pg.execute("UPDATE customer SET company = $1 WHERE customerid = $2",
                             f"co-{i}", i % 59 + 1)
        return {"genre": gid}
    finally:
        await pg.close()


async def reverse_backlog(dsn: str) -> int:
    return int(await pg_value(dsn, "SELECT count(*) FROM _replicator.rlog"))


async def test_fallback_window_rollback_and_finish(chinook, target_dsn, tmp_path):
    add_oddities(chinook)
    port = free_port()
    daemon = Daemon(chinook, target_dsn, "--metrics-addr", f"127.0.0.1:{port}")
    try:
        await wait_caught_up(target_dsn, chinook, daemon)
        out = tmp_path / "app.json"
        app = start_app(chinook, out)
        time.sleep(1.5)
        cut = json.loads(cli("cutover", "--source", str(chinook), "--target", target_dsn,
                             "--fallback", "--json", check=True).stdout)
        assert app.wait(90) == 0
        assert cut["state"] == "fallback" and cut["fallback_window"] and cut["verification"]["ok"]
        app_result = json.loads(out.read_text())
        assert app_result["ok"] and app_result["errors"]
        assert "migrated to Postgres" in app_result["errors"][0][1]
        await wait_for(lambda: _state_is(target_dsn, "fallback"), 10, "fallback", daemon)
        daemon.assert_alive()  # the daemon stays, applying Postgres's changes back

        await app_on_postgres(target_dsn)

        async def drained() -> bool:
            return await reverse_backlog(target_dsn) == 0
        await wait_for(drained, 60, "reverse log drained", daemon)
        status = json.loads(cli("status", "--source", str(chinook), "--target", target_dsn,
                                "--json").stdout)
        assert status["state"] == "fallback" and status["fallback"]["rows_moved_back"] > 200
        assert status["ready"], status
        assert {t["status"] for t in status["tables"].values()} == {"fallback"}
        m = scrape(port)
        assert metric(m, "replicator_state", state="fallback") == 1
        assert metric(m, "replicator_reverse_changes_applied_total") > 200
        assert "replicator_reverse_lag_seconds" in m
        # While Postgres is the truth, the fenced SQLite file already holds every value.
        await compare_all(chinook, target_dsn, expect_quarantined={})

        # kill -9 of the daemon in the middle of reverse apply, then a dropped connection.
        writer = asyncio_run_writes(target_dsn, 1500)
        time.sleep(0.6)
        daemon.kill9()
        writer.communicate(timeout=120)
        daemon = Daemon(chinook, target_dsn)
        await wait_for(lambda: _applying(target_dsn), 30, "reverse apply restarted", daemon)
        await _terminate_others(target_dsn)
        await wait_for(drained, 90, "reverse log drained after kill -9", daemon)
        await compare_all(chinook, target_dsn, expect_quarantined={})

        # rollback: Postgres fenced, drained, verified; SQLite writable again.
        more = asyncio_run_writes(target_dsn, 10**6)  # the app writes on Postgres until fenced
        time.sleep(0.5)
        rb = cli("rollback", "--source", str(chinook), "--target", target_dsn, "--json")
        fenced = more.communicate(timeout=120)[0]
        assert rb.returncode == 0, rb.stderr[-3000:]
        assert "fenced after" in fenced and "the data lives in the SQLite file" in fenced, fenced
        result = json.loads(rb.stdout)
        assert result["verification"]["ok"] and result["state"] == "streaming"
        counts = await compare_all(chinook, target_dsn, expect_quarantined={})
        pg = await asyncpg.connect(target_dsn)
        try:
            with pytest.raises(asyncpg.PostgresError, match="rolled back"):
                await pg.execute("INSERT INTO genre (name) VALUES ('refused')")
        finally:
            await pg.close()
        conn = sqlite3.connect(chinook, isolation_level=None)
        conn.execute("INSERT INTO Genre (Name) VALUES ('back on sqlite')")
        conn.execute("UPDATE oddities SET note = 'sqlite again' WHERE id = 100")
        conn.close()
        await wait_caught_up(target_dsn, chinook, daemon)  # forward streaming resumed
        await compare_all(chinook, target_dsn, expect_quarantined={})
        print(f"rollback: freeze {result['freeze_window_ms']} ms "
              f"({result['freeze_breakdown_ms']}), rows moved back in the window "
              f"{result['rows_moved_back_in_window']}, verified {result['verification']['rows']} "
              f"rows; compared {sum(counts.values())} rows independently")

        # A second cutover, then finish: nothing of the replicator stays in Postgres.
        json.loads(cli("cutover", "--source", str(chinook), "--target", target_dsn, "--fallback",
                       "--json", check=True).stdout)
        pg = await asyncpg.connect(target_dsn)
        try:
            await pg.execute("INSERT INTO genre (name) VALUES ('after the second cutover')")
        finally:
            await pg.close()
        fin = cli("finish", "--source", str(chinook), "--target", target_dsn, "--json")
        assert fin.returncode == 0, fin.stderr[-3000:]
        done = json.loads(fin.stdout)
        assert done["left_in_postgres"] == [] and done["daemon_stopped"]
        assert daemon.wait(30) == 0
        archive = Path(done["archive"])
        assert archive.exists() and Path(str(archive) + ".sha256").read_text().startswith(
            done["sha256"])
        paper = Path(done["report"]).read_text()
        assert "## Fallback window" in paper and "Rolled back to SQLite at" in paper, paper[:3000]
        assert "Window closed by `replicator finish`" in paper
        # the archived report says where rows are after the window, not what finish dropped
        assert "kept losslessly in _replicator.quarantine" not in paper
        assert "Rows written to Postgres after the fallback window closed" in paper
        pg = await asyncpg.connect(target_dsn)
        try:
            assert await pg.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname LIKE "
                                     "'\\_replicator%'") == 0
            assert await pg.fetchval("SELECT to_regnamespace('_replicator')") is None
            assert await pg.fetchval("SELECT count(*) FROM genre WHERE name = "
                                     "'after the second cutover'") == 1
        finally:
            await pg.close()
        conn = sqlite3.connect(chinook)
        assert conn.execute("SELECT count(*) FROM Genre WHERE Name = 'after the second cutover'"
                            ).fetchone()[0] == 1
        conn.close()
    finally:
        daemon.kill9_if_running()


async def _app_role(pg_env, dsn: str) -> str:
    """A login role for the application: rights on its tables only (the database goes with the
    test; the role is cluster-wide and stays, unprivileged, under a unique name)."""
    name = f"app_{time.time_ns()}"
    admin = await asyncpg.connect(pg_env.admin_dsn.rsplit("/", 1)[0] + "/"
                                  + parse_target(dsn).database)
    try:
        try:
            await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'app-pass'")
        except asyncpg.InsufficientPrivilegeError:
            return dsn  # TEST_DATABASE_URL without CREATEROLE: the owner plays the application
        await admin.execute(f"GRANT USAGE ON SCHEMA public TO {name}")
        await admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                            f"TO {name}")
    finally:
        await admin.close()
    t = parse_target(dsn)
    return build_dsn(t.host, t.port, name, "app-pass", t.database)


async def _state_is(dsn: str, name: str) -> bool:
    st = await pg_state(dsn)
    return st is not None and st["state"] == name


async def _applying(dsn: str) -> bool:
    return bool(await pg_value(
        dsn, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND application_name <> 'writes'"))


async def _terminate_others(dsn: str) -> None:
    pg = await asyncpg.connect(dsn)
    try:
        await pg.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                       "current_database() AND pid <> pg_backend_pid() "
                       "AND application_name <> 'writes'")
    finally:
        await pg.close()


WRITES = r"""
import asyncio, sys, asyncpg
async def main():
    pg = await asyncpg.connect(sys.argv[1], server_settings={"application_name": "writes"})
    for i in range(int(sys.argv[2])):
        try:
            await pg.execute("UPDATE track SET milliseconds = milliseconds + 1 WHERE trackid = $1",
                             i % 3000 + 1)
        except asyncpg.PostgresError as exc:
            if "rolled back" in str(exc):
                print("fenced after", i, "writes:", exc)
                return  # the rollback fenced Postgres: the app stops writing here
            raise
asyncio.run(main())
"""


def asyncio_run_writes(dsn: str, n: int) -> subprocess.Popen:
    """A separate process writing single-row transactions to Postgres."""
    return subprocess.Popen([sys.executable, "-c", WRITES, dsn, str(n)], stdout=subprocess.PIPE,
                            text=True)


async def test_a_value_without_an_exact_sqlite_form_is_kept_and_named(tmp_path, target_dsn,
                                                                     pg_env):
    """The application on Postgres (its own role, with no privilege on _replicator) writes
    microseconds into a column whose SQLite layout held seconds: the row goes back with the whole
    value (a wider layout), is named in the quarantine with its reason, and rollback says so;
    nothing is dropped."""
    db = tmp_path / "app.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    # `made` takes SQLite's CURRENT_TIMESTAMP (whole seconds): the row the app inserts on
    # Postgres without it must go back exactly (a DEFAULT now() sent it to the quarantine)
    conn.execute("CREATE TABLE visits (id INTEGER PRIMARY KEY, at DATETIME NOT NULL, "
                 "made DATETIME DEFAULT CURRENT_TIMESTAMP)")
    conn.executemany("INSERT INTO visits (id, at) VALUES (?, ?)",
                     [(i, f"2024-05-{i:02d} 12:00:00") for i in range(1, 21)])
    conn.close()
    port = free_port()
    daemon = Daemon(db, target_dsn, "--metrics-addr", f"127.0.0.1:{port}")
    try:
        await wait_caught_up(target_dsn, db, daemon)
        cli("cutover", "--source", str(db), "--target", target_dsn, "--fallback", check=True)
        app_dsn = await _app_role(pg_env, target_dsn)
        pg = await asyncpg.connect(app_dsn)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await pg.fetch("SELECT * FROM _replicator.rlog")
            await pg.execute("UPDATE visits SET at = '2025-01-02 03:04:05.000120+00' WHERE id = 3")
            await pg.execute("INSERT INTO visits (id, at) VALUES (21, '2025-02-03 04:05:06+00')")
            await pg.execute("UPDATE visits SET at = '2025-03-04 05:06:07.5+00' WHERE id = 4")
        finally:
            await pg.close()
        await wait_for(lambda: _backlog_is_zero(target_dsn), 30, "reverse log drained", daemon)
        assert await quarantine_rows(target_dsn) == 2
        m = scrape(port)  # the dashboard sees what status sees
        assert metric(m, "replicator_quarantine_rows") == 2
        assert metric(m, "replicator_quarantined_rows_total", table="visits") == 2
        pg = await asyncpg.connect(app_dsn)
        try:  # the application fixes one: it leaves the quarantine when it goes back exactly
            await pg.execute("UPDATE visits SET at = '2025-03-04 05:06:07+00' WHERE id = 4")
        finally:
            await pg.close()

        async def drained() -> bool:
            return await reverse_backlog(target_dsn) == 0
        await wait_for(drained, 30, "reverse log drained", daemon)
        status = json.loads(cli("status", "--source", str(db), "--target", target_dsn,
                                "--json").stdout)
        assert status["quarantined_rows"] == 1 and status["tables"]["visits"]["quarantined"] == 1
        conn = sqlite3.connect(db)
        assert conn.execute("SELECT at FROM visits WHERE id IN (3, 21) ORDER BY id").fetchall() == [
            ("2025-01-02 03:04:05.000120",), ("2025-02-03 04:05:06",)]
        made = conn.execute("SELECT made, typeof(made) FROM visits WHERE id = 21").fetchone()
        assert made[1] == "text" and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", made[0]), made
        conn.close()
        pg = await asyncpg.connect(target_dsn)
        try:
            reason = await pg.fetchval("SELECT reason FROM _replicator.quarantine")
        finally:
            await pg.close()
        assert "no exact SQLite form" in reason and "2025-01-02 03:04:05.000120" in reason
        sampled = json.loads(cli("verify", "--source", str(db), "--target", target_dsn,
                                 "--sample", "1", "--json").stdout)
        assert sampled["ok"] and sampled["quarantined"] == 1, sampled  # on both sides: not extra
        rb = json.loads(cli("rollback", "--source", str(db), "--target", target_dsn, "--json",
                            check=True).stdout)
        assert rb["verification"]["ok"] and rb["quarantine"] == {"visits": 1}
        # Cut over again: the row written back in a wider form is on both sides, so the row
        # counts of the changed-rows verification still agree (it once took it for missing),
        # and it does not block the cutover as a row absent from Postgres would (it once did,
        # advising --accept-quarantine and "insert them by hand").
        cut = json.loads(cli("cutover", "--source", str(db), "--target", target_dsn,
                             "--json", check=True).stdout)
        assert cut["verification"]["ok"] and cut["verification"]["mode"].startswith("changed")
        assert cut["quarantine_accepted"] == [] and not [
            h for h in cut["for_a_human"] if h["object"].startswith("quarantine")]
        # The report does not ask for a fix in SQLite of a row Postgres holds as the app wrote it
        attention = cli("report", "--source", str(db), "--target", target_dsn, check=True
                        ).stdout.split("## Summary")[0]
        assert "1 row(s) of visits.at went back to SQLite inexactly" in attention, attention
        assert "fix them in SQLite" not in attention
        assert daemon.wait(30) == 0
    finally:
        daemon.kill9_if_running()


async def test_the_window_through_a_transaction_mode_pgbouncer(tmp_path, target_dsn,
                                                               pgbouncer):  # noqa: F811
    """Neon's -pooler endpoint: reverse capture, reverse apply and rollback all work through a
    transaction pooler (only transaction-scoped locks; no session state)."""
    db = tmp_path / "app.sqlite"
    add_oddities(db)
    dsn = pgbouncer.dsn_for(target_dsn)
    config = "[verify]\ninterval = 0\n[target]\npooled = true\n"
    daemon = Daemon(db, dsn, config=config)
    try:
        await wait_caught_up(target_dsn, db, daemon)
        cli("cutover", "--source", str(db), "--target", dsn, "--fallback", "--config",
            str(daemon.config), check=True)
        pg = await asyncpg.connect(dsn, statement_cache_size=0)
        try:
            for i in range(1, 30):
                await pg.execute("UPDATE oddities SET price = price + 1, note = $1 WHERE id = $2",
                                 f"pooled {i}", i)
            await pg.execute("DELETE FROM tags WHERE code IN ('t1', 't2')")
        finally:
            await pg.close()
        await wait_for(lambda: _backlog_is_zero(target_dsn), 30, "reverse log drained", daemon)
        rb = json.loads(cli("rollback", "--source", str(db), "--target", dsn, "--json", "--config",
                            str(daemon.config), check=True).stdout)
        assert rb["verification"]["ok"]
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("INSERT INTO tags VALUES ('after rollback', 1)")
        conn.close()
        await wait_caught_up(target_dsn, db, daemon)
        daemon.assert_alive()
    finally:
        daemon.kill9_if_running()
    await compare_all(db, target_dsn, expect_quarantined={})


async def _backlog_is_zero(dsn: str) -> bool:
    return await reverse_backlog(dsn) == 0


async def test_a_long_transaction_on_postgres_fails_the_rollback_cleanly(tmp_path, target_dsn):
    """The Postgres fence waits for the application's write transactions in flight; one that
    stays open must not freeze every writer: the rollback gives up after its lock timeout, lifts
    what it did, and the window stays open (a second rollback then works)."""
    db = tmp_path / "app.sqlite"
    add_oddities(db)
    daemon = Daemon(db, target_dsn)
    try:
        await wait_caught_up(target_dsn, db, daemon)
        cli("cutover", "--source", str(db), "--target", target_dsn, "--fallback", check=True)
        long = await asyncpg.connect(target_dsn)
        tx = long.transaction()
        await tx.start()
        await long.execute("UPDATE tags SET n = n + 1 WHERE code = 't1'")
        started = time.monotonic()
        rb = cli("rollback", "--source", str(db), "--target", target_dsn)
        took = time.monotonic() - started
        await tx.commit()
        await long.close()
        assert rb.returncode != 0 and "lock timeout" in rb.stderr, rb.stderr[-2000:]
        assert took < 60
        assert (await pg_state(target_dsn))["state"] == "fallback"
        pg = await asyncpg.connect(target_dsn)
        try:  # no fence left behind: the application writes on Postgres as before
            await pg.execute("UPDATE tags SET n = 100 WHERE code = 't2'")
        finally:
            await pg.close()
        cli("rollback", "--source", str(db), "--target", target_dsn, check=True)
        await wait_caught_up(target_dsn, db, daemon)
    finally:
        daemon.kill9_if_running()
    await compare_all(db, target_dsn, expect_quarantined={})
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT n FROM tags WHERE code IN ('t1', 't2') ORDER BY code").fetchall() \
        == [(2,), (100,)]
    conn.close()
