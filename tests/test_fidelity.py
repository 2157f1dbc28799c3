"""Fidelity on a hostile database: every value arrives exactly or is quarantined and named, and the
schema's meaning (defaults, constraints, indexes, triggers, views, identity) carries over."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import UTC, datetime

import asyncpg
import pytest

from replicator.dialect.expressions import default
from replicator.embedded import free_port
from replicator.quoting import qi

from .support import hostile
from .support.helpers import (
    Daemon,
    cli,
    compare_all,
    metric,
    quarantine_rows,
    scrape,
    wait_caught_up,
    wait_for,
    wait_streaming,
)


@pytest.fixture
def hostile_db(tmp_path):
    path = tmp_path / "hostile.db"
    hostile.create(path)
    return path


def plan_json(db):
    out = cli("plan", "--source", str(db), "--json")
    return out.returncode, json.loads(out.stdout)


def col(report, table, column):
    t = next(t for t in report["tables"] if t["name"] == table)
    return next(c for c in t["columns"] if c["name"] == column)


def test_plan_names_every_value_and_feature_that_cannot_move(hostile_db):
    code, report = plan_json(hostile_db)
    assert code == 1 and not report["exact"]
    expected = {
        ("numbers", "qty"): "bigint", ("numbers", "ratio"): "numeric", ("numbers", "big"): "numeric",
        ("numbers", "price"): "numeric", ("numbers", "odd"): "bigint", ("numbers", "short"): "text",
        ("numbers", "f"): "double precision", ("events", "happened"): "timestamptz",
        ("events", "day"): "date", ("events", "mixed_time"): "text", ("events", "stamp"): "timestamptz",
        ("events", "done"): "boolean", ("events", "flag"): "text", ("events", "payload"): "json",
        ("events", "junk"): "text", ("events", "uid"): "uuid", ("events", "at_text"): "text",
        ("texts", "anything"): "text", ("pairs", "v"): "bytea",
    }
    for (table, column), pg_type in expected.items():
        assert col(report, table, column)["pg_type"] == pg_type, (table, column)
    assert "'true'" in " ".join(c for t in report["tables"] if t["name"] == "events" for c in t["notes"])
    attention = "\n".join(report["attention"])
    for needle in (
        "numbers.qty: 2 TEXT value(s) cannot be stored as bigint (policy: quarantine; sample key [2])",
        "texts.body: 1 text value(s) contain NUL bytes, which Postgres text rejects (policy: "
        "quarantine; sample key [2])",
        "texts.body: 1 text value(s) are not valid UTF-8 (policy: quarantine; sample key [6])",
        "texts.anything: 1 BLOB value(s)",
        "posts: foreign key (account_id) -> accounts has 1 orphan row(s)",
        "check accounts_check3 not translated (typeof()",
        "view account_types: not translated",
        "docs: virtual table",
    ):
        assert needle in attention, needle
    assert report["summary"] == {"tables": 11, "exact": 7, "named_with_reason": 4}
    assert col(report, "events", "payload")["census"]["text_tags"]["json"] == 2
    assert col(report, "numbers", "qty")["census"]["text"] == 2


def test_plan_of_chinook_is_exact():
    out = cli("plan", "--source", "examples/chinook.sqlite", "--json")
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["exact"] and report["summary"]["exact"] == 11
    assert col(report, "Invoice", "InvoiceDate")["pg_type"] == "timestamptz"
    assert col(report, "Track", "UnitPrice")["pg_type"] == "numeric"


async def test_copy_is_exact_or_quarantined_and_the_schema_behaves(hostile_db, target_dsn):
    cli("copy", "--source", str(hostile_db), "--target", target_dsn, check=True)
    await compare_all(hostile_db, target_dsn, expect_quarantined=hostile.QUARANTINED)
    check = cli("verify", "--source", str(hostile_db), "--target", target_dsn)
    assert check.returncode == 0, check.stdout
    pg = await asyncpg.connect(target_dsn)
    try:
        await _quarantine_is_lossless(pg)
        await _defaults_produce_values(pg)
        await _constraints_and_indexes_behave(pg)
        await _triggers_views_types(pg)
    finally:
        await pg.close()


async def _quarantine_is_lossless(pg):
    raw = {json.loads(r["key"])[0]["int"]: json.loads(r["raw"]) for r in await pg.fetch(
        "SELECT key, raw FROM _replicator.quarantine WHERE tbl = 'texts'")}
    assert bytes.fromhex(raw["2"][1]["text_hex"]) == b"nul\x00inside"
    assert bytes.fromhex(raw["2"][2]["blob"]) == b"\x00\x01blob"
    assert bytes.fromhex(raw["6"][1]["text_hex"]) == b"\xffbad utf8"


async def _defaults_produce_values(pg):
    row = await pg.fetchrow("INSERT INTO accounts (email) VALUES ('new@x.io') RETURNING *")
    now = time.time()
    assert row["id"] == 5  # after sqlite_sequence (4), not after max(id) (3)
    assert row["status"] == "it's new" and row["balance"] == -1.5
    created = datetime.strptime(row["created_at"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert abs(created.timestamp() - now) < 120  # CURRENT_TIMESTAMP: UTC text, as SQLite
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row["updated_at"])
    assert abs(row["epoch"] - now) < 120
    assert re.fullmatch(r"[0-9a-f]{32}", row["token"])
    assert row["score_x2"] == -3.0 and row["email_domain"] == "x.io"  # generated by Postgres
    assert await pg.fetchval('INSERT INTO "user" ("order") VALUES (\'x\') RETURNING "userid"') == 3


async def _constraints_and_indexes_behave(pg):
    async def refused(sql, error):
        with pytest.raises(error):
            await pg.execute(sql)

    # UNIQUE COLLATE NOCASE: a duplicate differing only in case is refused, as in SQLite.
    await refused("INSERT INTO accounts (email) VALUES ('ANN@EXAMPLE.COM')",
                  asyncpg.UniqueViolationError)
    # Partial unique index: one live 'bob' only; a deleted one may repeat.
    await refused("INSERT INTO accounts (email, handle) VALUES ('b2@x', 'bob')",
                  asyncpg.UniqueViolationError)
    await pg.execute("INSERT INTO accounts (email, handle, deleted_at) VALUES ('b3@x', 'bob', 'x')")
    await refused("INSERT INTO accounts (email, status) VALUES ('c@x', 'bogus')",
                  asyncpg.CheckViolationError)
    await refused("INSERT INTO accounts (email, handle) VALUES ('d@x', repeat('h', 21))",
                  asyncpg.CheckViolationError)
    # The orphan in SQLite keeps the foreign key NOT VALID, but new rows are checked.
    assert await pg.fetchval("SELECT convalidated FROM pg_constraint "
                             "WHERE conname = 'posts_account_id_fkey'") is False
    await refused("INSERT INTO posts (id, account_id, title) VALUES (50, 12345, 'x')",
                  asyncpg.ForeignKeyViolationError)
    names = {r[0] for r in await pg.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'accounts'")}
    assert {"accounts_lower_email", "accounts_balance_desc", "accounts_handle_live"} <= names


async def _triggers_views_types(pg):
    before = await pg.fetchval("SELECT count(*) FROM audit")
    await pg.execute("INSERT INTO posts (id, account_id, title) VALUES (60, 1, 'after cutover')")
    assert await pg.fetchval("SELECT count(*) FROM audit") == before + 1  # trigger enabled
    assert await pg.fetchval("SELECT count(*) FROM live_accounts") >= 2
    assert await pg.fetchval("SELECT happened FROM events WHERE id = 1") == datetime(
        2024, 2, 29, 23, 59, 59, tzinfo=UTC)
    assert await pg.fetchval("SELECT done FROM events WHERE id = 1") is True
    assert await pg.fetchval("SELECT payload FROM events WHERE id = 1") == '{"a": 1, "a": 2}'


async def test_run_with_live_hostile_writes_then_cutover(hostile_db, target_dsn):
    port = free_port()
    daemon = Daemon(hostile_db, target_dsn, "--metrics-addr", f"127.0.0.1:{port}",
                    config="[verify]\ninterval = 0\n[log]\nsummary_interval = 1\n")

    async def gauge_agrees() -> bool:  # replicator_quarantine_rows is what the table holds
        return metric(scrape(port), "replicator_quarantine_rows") == await quarantine_rows(target_dsn)

    try:
        await wait_streaming(target_dsn, daemon)
        await wait_for(gauge_agrees, 30, "the quarantine gauge", daemon)
        assert await quarantine_rows(target_dsn) > 0
        conn = sqlite3.connect(hostile_db, isolation_level=None, timeout=30)
        conn.execute("INSERT INTO numbers (id, qty) VALUES (10, 'oops')")  # quarantined ...
        conn.execute("INSERT INTO numbers (id, qty) VALUES (11, 'fixed later')")
        conn.execute("INSERT INTO texts (id, body) VALUES (10, ?)", ("nul\x00again",))
        conn.execute("INSERT INTO posts (id, account_id, title) VALUES (3, 2, 'live')")  # SQLite trigger
        conn.execute("UPDATE accounts SET balance = 0.1 + 0.2 WHERE id = 1")
        conn.execute("INSERT INTO events (id, happened, done, payload) VALUES "
                     "(9, '2030-01-01 00:00:00', 1, '{}')")
        conn.execute("INSERT INTO keyless VALUES ('live', 1.25)")
        await wait_caught_up(target_dsn, hostile_db, daemon)
        await wait_for(gauge_agrees, 30, "the quarantine gauge after live bad values", daemon)
        conn.execute("UPDATE numbers SET qty = 11 WHERE id = 11")  # ... until fixed at the source
        conn.execute("DELETE FROM texts WHERE id = 2")  # a quarantined row deleted at the source
        conn.close()
        await wait_caught_up(target_dsn, hostile_db, daemon)
        await wait_for(gauge_agrees, 30, "the quarantine gauge after fixes", daemon)
        # Cutover never hides the quarantine: refused, naming each table and column...
        refused = cli("cutover", "--source", str(hostile_db), "--target", target_dsn)
        assert refused.returncode == 3
        assert "6 row(s) in quarantine" in refused.stderr
        assert "numbers.qty: 3 row(s)" in refused.stderr and "texts.body: 2 row(s)" in refused.stderr
        # ...until the operator accepts it; the summary then lists every row with its raw values.
        out = cli("cutover", "--source", str(hostile_db), "--target", target_dsn, "--json",
                  "--accept-quarantine", check=True)
        summary = json.loads(out.stdout)
        assert daemon.wait(30) == 0
        accepted = summary["quarantine_accepted"]
        assert len(accepted) == 6 and all(q["raw"] and q["reason"] for q in accepted)
        assert {"text": "N/A"} in [v for q in accepted for v in q["raw"]]
    finally:
        daemon.kill9_if_running()
    assert {o["object"] for o in summary["for_a_human"]} >= {
        "check accounts_check3", "foreign_key posts_account_id_fkey", "view account_types"}
    await compare_all(hostile_db, target_dsn, expect_quarantined={"numbers": 3, "texts": 3})
    check = cli("verify", "--source", str(hostile_db), "--target", target_dsn, "--json")
    assert check.returncode == 0, check.stdout


async def test_emit_sql_writes_numbered_files_that_apply_cleanly(hostile_db, tmp_path, target_dsn):
    folder = tmp_path / "ddl"
    out = cli("plan", "--source", str(hostile_db), "--emit-sql", str(folder))
    assert out.returncode == 1  # still a valid plan: some things need attention
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["001_tables.sql", "002_keys_and_indexes.sql", "003_constraints.sql",
                     "004_triggers.sql", "005_views.sql", "900_not_translated.sql"]
    pg = await asyncpg.connect(target_dsn)
    try:
        for name in files[:-1]:
            await pg.execute((folder / name).read_text())
        assert await pg.fetchval("SELECT count(*) FROM information_schema.tables "
                                 "WHERE table_schema = 'public'") >= 12
    finally:
        await pg.close()
    assert "typeof" in (folder / "900_not_translated.sql").read_text()


def test_names_postgres_would_truncate_are_refused_up_front(tmp_path, target_dsn):
    db = tmp_path / "long.db"
    conn = sqlite3.connect(db)
    long_name = "a_column_name_that_is_much_longer_than_postgres_allows_for_identifiers_x"
    conn.execute(f'CREATE TABLE t (id INTEGER PRIMARY KEY, "{long_name}" TEXT)')
    conn.execute('CREATE TABLE k ("_replicator_rowid" INTEGER, v TEXT)')
    conn.commit()
    conn.close()
    code, report = plan_json(db)
    assert code == 1
    assert any(long_name in a and "63 bytes" in a for a in report["attention"])
    assert any("_replicator_rowid" in a for a in report["attention"])
    out = cli("copy", "--source", str(db), "--target", target_dsn)
    assert out.returncode == 2 and long_name in out.stderr and "helper column" in out.stderr
    out = cli("run", "--source", str(db), "--target", target_dsn, "--metrics-addr", "off")
    assert out.returncode == 2
    conn = sqlite3.connect(db)  # refused before anything was written to SQLite
    assert not conn.execute("SELECT name FROM sqlite_schema WHERE name LIKE '_replicator%'").fetchall()


def test_on_bad_value_fail_stops_and_names_the_row(tmp_path, target_dsn):
    db = tmp_path / "strict.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, qty INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, 5), (2, "lots"), (3, 7)])
    conn.commit()
    conn.close()
    cfg = tmp_path / "strict.toml"
    cfg.write_text("[tables.t.columns.qty]\non_bad_value = \"fail\"\n")
    out = cli("copy", "--source", str(db), "--target", target_dsn, "--config", str(cfg))
    assert out.returncode == 1
    assert "table 't', column 'qty', key [2]" in out.stderr and "'lots'" in out.stderr
    cfg.write_text("[tables.t.columns.qty]\ntype = \"text\"\n")  # the override takes them all
    cli("copy", "--source", str(db), "--target", target_dsn, "--config", str(cfg), check=True)


@pytest.mark.parametrize("which", ["hostile", "chinook"])
def test_the_snapshot_census_counts_every_storage_class(which, hostile_db, chinook):
    """The snapshot's quick census (min/max of typeof, integer counts for NUMERIC columns, a
    second scan only where classes still mix) counts every column's storage classes as a
    reading of every value in Python does."""
    from replicator.census import quick_census
    from replicator.schema import text_census_columns
    from replicator.source import inspect

    conn = sqlite3.connect(hostile_db if which == "hostile" else chinook)
    try:
        for t in inspect(conn).tables.values():
            quick = quick_census(conn, t, text_columns=text_census_columns(t))
            for col in t.columns:
                seen = dict.fromkeys(("integer", "real", "text", "blob", "null"), 0)
                for (storage,) in conn.execute(f"SELECT typeof({qi(col.name)}) FROM {qi(t.name)}"):
                    seen[storage] += 1
                assert quick.columns[col.name].counts == seen, (t.name, col.name)
    finally:
        conn.close()


async def test_a_date_like_text_that_is_not_utf8_is_named_not_a_crash(tmp_path, target_dsn):
    """The census used to fail reading back the largest date-like text when it was not UTF-8
    (plan and copy both stopped with an unexpected error); now the row is named and held back."""
    db = tmp_path / "dates.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, at DATETIME)")
    conn.executemany("INSERT INTO e (at) VALUES (?)", [(f"2024-01-0{i % 9 + 1} 10:00:00",)
                                                        for i in range(100)])
    conn.execute("INSERT INTO e (id, at) VALUES (500, CAST(? AS TEXT))", (b"2024-02-29 10:20:3\xc3",))
    conn.commit()
    conn.close()
    code, report = plan_json(db)
    assert code == 1 and col(report, "e", "at")["pg_type"] == "text"
    assert "e.at: 1 text value(s) are not valid UTF-8 (policy: quarantine; sample key [500])" \
        in report["attention"]
    out = cli("copy", "--source", str(db), "--target", target_dsn, "--json", check=True)
    assert json.loads(out.stdout)["quarantined"] == {"e": 1}
    pg = await asyncpg.connect(target_dsn)
    try:
        assert await pg.fetchval("SELECT key FROM _replicator.quarantine") == '[{"int": "500"}]'
        got = await pg.fetch("SELECT id, at FROM e ORDER BY id")
    finally:
        await pg.close()
    assert [tuple(r) for r in got] == [(i, f"2024-01-0{(i - 1) % 9 + 1} 10:00:00")
                                       for i in range(1, 101)]


async def test_a_current_timestamp_default_stores_whole_seconds_as_sqlite_does(target_dsn):
    """SQLite's CURRENT_TIMESTAMP has no fraction; ``now()`` has microseconds, which a row the
    application inserts on Postgres during the fallback window could not take back to SQLite
    exactly (it was quarantined on the way back). The DEFAULT keeps whole seconds."""
    sql = default("CURRENT_TIMESTAMP", "timestamptz").sql
    pg = await asyncpg.connect(target_dsn)
    try:
        await pg.execute(f"CREATE TABLE whole(id int, at timestamptz DEFAULT {sql})")
        for i in range(5):
            await pg.execute("INSERT INTO whole(id) VALUES ($1)", i)
        ats = [r[0] for r in await pg.fetch("SELECT at FROM whole")]
    finally:
        await pg.close()
    assert all(at.microsecond == 0 for at in ats), ats
    assert default("CURRENT_DATE", "date").sql.endswith("::date")
