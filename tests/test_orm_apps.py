"""Real applications, written through their real ORMs, replicated into the schema that ORM made on
Postgres (``target.schema_mode = "existing"``), and then the same application run on Postgres:
its read queries must answer as on SQLite and its writes must work (issue 11).

The apps live in tests/apps/: Django (django_shop) and SQLAlchemy + Alembic (sqla_ledger).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from .support.helpers import Daemon, cli, pg_state, wait_for, wait_streaming

APPS = Path(__file__).resolve().parent / "apps"
DJANGO = APPS / "django_shop" / "app.py"

pytestmark = pytest.mark.slow

EXISTING = """
[target]
schema_mode = "existing"
[replication]
round_to_scale = true
[verify]
interval = 0
"""


def app(script: Path, db: str | Path, *args: str, stage: int = 1, check: bool = True
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(script), str(db), *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "SHOP_STAGE": str(stage)})
    if check and proc.returncode != 0:
        raise AssertionError(f"{script.parent.name} {args}: exit {proc.returncode}\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def app_json(script: Path, db: str | Path, *args: str, stage: int = 1) -> dict:
    return json.loads(app(script, db, *args, stage=stage).stdout)


def same_reads(sqlite_answers: dict, pg_answers: dict, numeric: set[str]) -> list[str]:
    """The answers that differ. ``numeric``: answers compared as decimal values (SQLite sums a
    decimal column as floats and Django renders the float's digits; Postgres sums exactly)."""
    out = []
    for key, value in sqlite_answers.items():
        other = pg_answers.get(key)
        if key in numeric and value is not None and other is not None:
            if Decimal(value) != Decimal(other):
                out.append(f"{key}: {value!r} vs {other!r}")
        elif value != other:
            out.append(f"{key}: {value!r} vs {other!r}")
    return out


async def _foreign_keys(dsn: str) -> dict[str, bool]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT conname, convalidated FROM pg_constraint WHERE contype = 'f' "
                                "AND connamespace = 'public'::regnamespace")
        return {r["conname"]: r["convalidated"] for r in rows}
    finally:
        await conn.close()


async def test_django_app_runs_on_the_schema_its_orm_made(tmp_path, target_dsn):
    db = tmp_path / "shop.sqlite3"
    app(DJANGO, db, "migrate", "0001")
    app(DJANGO, db, "seed", "150")
    app(DJANGO, target_dsn, "migrate", "0001")  # the ORM makes the Postgres schema
    fks = await _foreign_keys(target_dsn)
    assert fks and all(fks.values())

    # plan --target: side by side; the REAL prices F() arithmetic left beyond the scale are named
    # with the rounding they need, and the plan fails until rounding is configured.
    plain = cli("plan", "--source", str(db), "--target", target_dsn, "--json")
    assert plain.returncode == 1, plain.stderr
    report = json.loads(plain.stdout)
    assert any("shop_product.price" in a and "round_to_scale" in a for a in report["attention"])
    customer = next(t for t in report["tables"] if t["name"] == "shop_customer")
    types = {c["name"]: c["target_type"] for c in customer["columns"]}
    assert types["uid"] == "uuid" and types["prefs"] == "jsonb"
    assert report["migrations"]["same"]
    config = tmp_path / "existing.toml"
    config.write_text(EXISTING)
    ok = cli("plan", "--source", str(db), "--target", target_dsn, "--config", str(config))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    daemon = Daemon(db, target_dsn, config=EXISTING)
    try:
        await wait_streaming(target_dsn, daemon)
        # The app keeps writing through its ORM while the daemon streams.
        churn = subprocess.Popen([sys.executable, str(DJANGO), str(db), "churn", "1", "120"],
                                 env={**os.environ, "SHOP_STAGE": "1"}, stderr=subprocess.PIPE,
                                 text=True)
        _out, err = churn.communicate(timeout=300)
        assert churn.returncode == 0, err
        # A migration on SQLite first (Django rebuilds both tables): the daemon waits, naming
        # what the target lacks, and resumes by itself once the same migration reaches Postgres.
        app(DJANGO, db, "migrate", stage=2)
        app(DJANGO, db, "churn", "2", "30", stage=2)

        async def waiting():
            st = await pg_state(target_dsn)
            return st and st["state"] == "waiting" and "nickname" in (st["error"] or "")

        await wait_for(waiting, 60, "the daemon waiting for the target's migration", daemon)
        app(DJANGO, target_dsn, "migrate", stage=2)
        await wait_streaming(target_dsn, daemon)
        app(DJANGO, db, "churn", "3", "30", stage=2)
        done = cli("cutover", "--source", str(db), "--target", target_dsn, "--config", str(config),
                   timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        daemon.stop()
    events = [e["event"] for e in daemon.events()]
    assert "awaiting_target" in events and "recovered" in events

    # Value by value, in the app's own meaning: every row of every model read through the ORM.
    assert app_json(DJANGO, db, "dump", stage=2) == app_json(DJANGO, target_dsn, "dump", stage=2)
    # The app's read queries answer the same (revenue: an exact numeric sum on Postgres).
    differ = same_reads(app_json(DJANGO, db, "reads", stage=2),
                        app_json(DJANGO, target_dsn, "reads", stage=2), numeric={"revenue"})
    assert differ == []
    # The target's foreign keys are back, validated; its sequences are past the copied keys.
    assert await _foreign_keys(target_dsn) == fks
    checks = app_json(DJANGO, target_dsn, "writes", stage=2)
    assert checks == {k: "ok" for k in checks} and len(checks) == 6


async def test_existing_schema_refusals_name_what_to_do(tmp_path, target_dsn):
    """Refused before anything is written to either side: migrations that differ, a missing
    table; and a target table holding rows the replicator did not write."""
    db = tmp_path / "shop.sqlite3"
    app(DJANGO, db, "migrate", stage=2)
    app(DJANGO, db, "seed", "5", stage=2)
    app(DJANGO, target_dsn, "migrate", "0001")
    config = tmp_path / "existing.toml"
    config.write_text(EXISTING)
    run = cli("run", "--source", str(db), "--target", target_dsn, "--config", str(config),
              "--metrics-addr", "off", timeout=120)
    assert run.returncode == 3, run.stderr
    assert "0002_customer_nickname_alter_order_note" in run.stderr
    assert "run the app's migrations against the target" in run.stderr
    with sqlite3.connect(db) as src:
        ours = src.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE '_replicator%'")
        assert ours.fetchone()[0] == 0, "nothing may be written to SQLite"

    app(DJANGO, target_dsn, "migrate", stage=2)
    conn = await asyncpg.connect(target_dsn)
    try:
        await conn.execute("INSERT INTO shop_tag (name) VALUES ('made on postgres')")
        run = cli("run", "--source", str(db), "--target", target_dsn, "--config", str(config),
                  "--metrics-addr", "off", timeout=120)
        assert run.returncode == 3, run.stderr
        assert "shop_tag" in run.stderr
        assert "already holds 1 row(s) the replicator did not write" in run.stderr
        with sqlite3.connect(db) as src:  # refused before the capture was installed
            ours = src.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE '_replicator%'")
            assert ours.fetchone()[0] == 0
        await conn.execute("DROP TABLE shop_product_tags")
    finally:
        await conn.close()
    plan = cli("plan", "--source", str(db), "--target", target_dsn)
    assert plan.returncode == 1 and "has no table 'shop_product_tags'" in plan.stdout


def test_app_is_importable():
    """The test apps' own code compiles (a syntax error would only show inside a slow test)."""
    for path in APPS.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")

