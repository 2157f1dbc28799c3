"""Filling an existing target schema, beyond what one framework shows: the target's own
constraints (a CHECK SQLite never had, a varchar(n) limit) name the rows they refuse, at the
snapshot and while streaming, and a fixed row leaves quarantine (issue 11)."""

from __future__ import annotations

import json
import sqlite3

import asyncpg
import pytest

from .support.helpers import Daemon, cli, wait_caught_up, wait_streaming

pytestmark = pytest.mark.slow

CONFIG = '[target]\nschema_mode = "existing"\n[verify]\ninterval = 0\n'


async def test_rows_the_target_refuses_are_named_never_dropped(tmp_path, target_dsn):
    db = tmp_path / "app.db"
    src = sqlite3.connect(db, isolation_level=None)
    src.executescript(
        "CREATE TABLE Items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, label TEXT);"
        "INSERT INTO Items VALUES (1, 5, 'ok'), (2, -1, 'neg'), (3, 1, 'much too long');")
    conn = await asyncpg.connect(target_dsn)
    try:
        await conn.execute("CREATE TABLE items (id bigserial PRIMARY KEY, qty integer NOT NULL "
                           "CONSTRAINT qty_not_negative CHECK (qty >= 0), label varchar(5), "
                           "added timestamptz NOT NULL DEFAULT now())")
        config = tmp_path / "existing.toml"
        config.write_text(CONFIG)
        plan = cli("plan", "--source", str(db), "--target", target_dsn, "--json")
        report = json.loads(plan.stdout)
        assert plan.returncode == 1
        assert any("Items.label" in a and "[3]" in a for a in report["attention"])

        daemon = Daemon(db, target_dsn, config=CONFIG)
        try:
            await wait_streaming(target_dsn, daemon)
            src.execute("INSERT INTO Items VALUES (4, -3, 'x')")
            src.execute("UPDATE Items SET qty = 0 WHERE id = 2")  # fixed at the source
            await wait_caught_up(target_dsn, db, daemon)
            quarantined = {json.loads(r["key"])[0]["int"]: r["reason"] for r in await conn.fetch(
                "SELECT key::text AS key, reason FROM _replicator.quarantine")}
            assert set(quarantined) == {"3", "4"}, quarantined
            assert "qty_not_negative" in quarantined["4"]
            assert "varchar" in quarantined["3"] or "character varying(5)" in quarantined["3"]
            rows = await conn.fetch("SELECT id, qty, label FROM items ORDER BY id")
            assert [tuple(r) for r in rows] == [(1, 5, "ok"), (2, 0, "neg")]
            refused = cli("cutover", "--source", str(db), "--target", target_dsn, "--config",
                          str(config))
            assert refused.returncode == 3 and "Items" in refused.stderr
            src.execute("UPDATE Items SET qty = 3, label = 'short' WHERE id IN (3, 4)")
            await wait_caught_up(target_dsn, db, daemon)
            done = cli("cutover", "--source", str(db), "--target", target_dsn, "--config",
                       str(config))
            assert done.returncode == 0, done.stderr
        finally:
            daemon.stop()
        rows = await conn.fetch("SELECT id, qty, label FROM items ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, 5, "ok"), (2, 0, "neg"), (3, 3, "short"),
                                            (4, 3, "short")]
        assert await conn.fetchval("SELECT nextval(pg_get_serial_sequence('items', 'id'))") == 5
    finally:
        await conn.close()
        src.close()
