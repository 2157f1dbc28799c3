"""Real applications, written through their real ORMs, replicated into the schema that ORM made on
Postgres (``target.schema_mode = "existing"``), and then the same application run on Postgres:
its read queries must answer as on SQLite and its writes must work (issue 11).

The apps live in tests/apps/: Django (django_shop), SQLAlchemy + Alembic (sqla_ledger) and
ActiveRecord 6.1 (ar_store, Debian's Ruby packages); tests/support/orm_apps drives them.
"""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal

import asyncpg
import pytest

from .support.helpers import Daemon, cli, pg_value, wait_caught_up, wait_for
from .support.orm_apps import (
    APPS,
    AR_STORE,
    DJANGO,
    EXISTING,
    LEDGER,
    activerecord_missing,
    assert_app_same_on_postgres,
    foreign_keys,
    migrate_live_and_cut_over,
    plan_existing,
    same_reads,
)

pytestmark = pytest.mark.slow


async def test_django_app_runs_on_the_schema_its_orm_made(tmp_path, target_dsn):
    """A Django 6 shop (UUIDField, JSONField, DecimalField, BooleanField, aware DateTimeField,
    DateField, FK, M2M, choices); its migration 0002 adds a field and alters another, which
    Django's SQLite backend applies by rebuilding both tables."""
    db = tmp_path / "shop.sqlite3"
    DJANGO.run(db, "migrate", DJANGO.first)
    DJANGO.run(db, "seed", "150")
    DJANGO.run(target_dsn, "migrate", DJANGO.first)  # the ORM makes the Postgres schema
    fks = await foreign_keys(target_dsn)
    assert fks and all(fks.values())
    # F("price") + 0.01 left REAL prices beyond the scale: named until rounding is configured.
    report = plan_existing(DJANGO, db, target_dsn, tmp_path / "existing.toml", "shop_product.price")
    customer = next(t for t in report["tables"] if t["name"] == "shop_customer")
    types = {c["name"]: c["target_type"] for c in customer["columns"]}
    assert types["uid"] == "uuid" and types["prefs"] == "jsonb"
    await migrate_live_and_cut_over(DJANGO, db, target_dsn, tmp_path / "existing.toml", "nickname")
    # revenue: an exact numeric sum on Postgres where SQLite summed floats
    await assert_app_same_on_postgres(DJANGO, db, target_dsn, numeric={"revenue"}, writes=6,
                                      fks=fks)


async def test_sqlalchemy_alembic_app_runs_on_the_schema_alembic_made(tmp_path, target_dsn):
    """SQLAlchemy 2 models (Uuid, JSON/JSONB, Numeric, native Enum, aware and naive DateTime,
    Date, cascading FK, M2M) and Alembic revisions; 0002 runs in batch mode (ADD COLUMN, and a
    table rebuilt by move and copy, committed step by step on SQLite)."""
    db = tmp_path / "ledger.sqlite3"
    LEDGER.run(db, "migrate", LEDGER.first)
    LEDGER.run(db, "seed", "150")
    LEDGER.run(target_dsn, "migrate", LEDGER.first)  # alembic upgrade makes the Postgres schema
    fks = await foreign_keys(target_dsn)
    assert len(fks) == 3 and all(fks.values())
    report = plan_existing(LEDGER, db, target_dsn, tmp_path / "existing.toml", "entry.amount")
    columns = {(t["name"], c["name"]): c["target_type"] for t in report["tables"]
               for c in t["columns"]}
    assert columns[("account", "uid")] == "uuid" and columns[("account", "meta")] == "jsonb"
    assert columns[("account", "kind")] == "account_kind"  # a native enum: labels checked
    assert columns[("entry", "amount")] == "numeric(12,2)"
    assert columns[("entry", "booked")] == "timestamp with time zone"
    assert columns[("entry", "created")] == "timestamp without time zone"
    await migrate_live_and_cut_over(LEDGER, db, target_dsn, tmp_path / "existing.toml", "nickname")
    # Alembic's ON DELETE CASCADE acts again: the writes include a bulk delete only it completes.
    await assert_app_same_on_postgres(LEDGER, db, target_dsn, numeric={"total"}, writes=7, fks=fks)


async def test_activerecord_app_runs_on_the_schema_rails_made(tmp_path, target_dsn):
    """The same story for a Rails app: ActiveRecord's migrations made both schemas
    (schema_migrations and ar_internal_metadata included), its models wrote the SQLite file
    (decimals as REALs, booleans as 0/1, times as text, json as text); three prices are exact
    halves, which ActiveRecord reads half-up where Django would read them half-even."""
    missing = activerecord_missing()
    if missing:
        pytest.skip(missing)
    db = tmp_path / "store.sqlite3"
    AR_STORE.run(db, "migrate", AR_STORE.first)
    AR_STORE.run(db, "seed", "60")
    # Inferred instead, the plan says how the app reads its decimal(10,2) REALs and what to pin
    inferred = json.loads(cli("plan", "--source", str(db), "--json").stdout)
    products = next(t for t in inferred["tables"] if t["name"] == "products")
    assert any('price: declared decimal(10,2) holding REALs' in n and
               'pin type = "numeric(10,2)" with round_to_scale = true' in n
               for n in products["notes"]), products["notes"]
    AR_STORE.run(target_dsn, "migrate", AR_STORE.first)  # ActiveRecord makes the Postgres schema
    fks = await foreign_keys(target_dsn)
    assert len(fks) == 4 and all(fks.values())
    report = plan_existing(AR_STORE, db, target_dsn, tmp_path / "existing.toml", "products.price")
    stores = next(t for t in report["tables"] if t["name"] == "stores")
    types = {c["name"]: c["target_type"] for c in stores["columns"]}
    assert types["uid"] == "uuid" and types["settings"] == "jsonb"
    await migrate_live_and_cut_over(AR_STORE, db, target_dsn, tmp_path / "existing.toml",
                                    "nickname")
    # price_total: SQLite sums the unrounded REALs (and ActiveRecord rounds that sum to the
    # scale: up to 0.005), Postgres the prices as the app reads each row (the three exact halves
    # are 0.005 each above their REALs)
    await assert_app_same_on_postgres(AR_STORE, db, target_dsn, numeric={"price_total"}, writes=6,
                                      within={"price_total": Decimal("0.02")}, fks=fks)


async def test_existing_schema_refusals_name_what_to_do(tmp_path, target_dsn):
    """Refused before anything is written to either side: migrations that differ, a missing
    table; and a target table holding rows the replicator did not write."""
    db = tmp_path / "shop.sqlite3"
    DJANGO.run(db, "migrate", stage=2)
    DJANGO.run(db, "seed", "5", stage=2)
    DJANGO.run(target_dsn, "migrate", DJANGO.first)
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

    DJANGO.run(target_dsn, "migrate", stage=2)
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


async def test_django_app_falls_back_to_sqlite_with_nothing_lost(tmp_path, target_dsn):
    """The fallback window with a real framework: after `cutover --fallback` the Django shop
    writes through its ORM on Postgres (aware datetimes with microseconds, UUIDs, JSON, decimals
    with F() arithmetic, cascades, M2M); its changes go back into SQLite in Django's own SQLite
    forms, so after `rollback` the same app reads every row the same on both sides and writes on
    SQLite again, streamed forward."""
    db = tmp_path / "shop.sqlite3"
    DJANGO.run(db, "migrate", stage=2)
    DJANGO.run(db, "seed", "120", stage=2)
    DJANGO.run(target_dsn, "migrate", stage=2)  # the ORM makes the Postgres schema
    config = tmp_path / "existing.toml"
    config.write_text(EXISTING)
    daemon = Daemon(db, target_dsn, config=EXISTING)
    try:
        await wait_caught_up(target_dsn, db, daemon)
        cli("cutover", "--source", str(db), "--target", target_dsn, "--config", str(config),
            "--fallback", check=True, timeout=300)
        DJANGO.run(target_dsn, "churn", "7", "120", stage=2)  # the app, on Postgres now

        async def drained() -> bool:
            return int(await pg_value(target_dsn, "SELECT count(*) FROM _replicator.rlog")) == 0
        await wait_for(drained, 120, "reverse log drained", daemon)
        # Read through the ORM, SQLite already holds what the app wrote on Postgres.
        assert DJANGO.json(db, "dump", stage=2) == DJANGO.json(target_dsn, "dump", stage=2)
        rb = json.loads(cli("rollback", "--source", str(db), "--target", target_dsn, "--config",
                            str(config), "--json", check=True, timeout=300).stdout)
        assert rb["verification"]["ok"] and rb["quarantine"] == {}, rb
        assert DJANGO.json(db, "dump", stage=2) == DJANGO.json(target_dsn, "dump", stage=2)
        differ = same_reads(DJANGO.json(db, "reads", stage=2),
                            DJANGO.json(target_dsn, "reads", stage=2), numeric={"revenue"})
        assert differ == [], differ
        DJANGO.run(db, "churn", "8", "30", stage=2)  # the app on SQLite again: streamed forward
        await wait_caught_up(target_dsn, db, daemon)
        assert DJANGO.json(db, "dump", stage=2) == DJANGO.json(target_dsn, "dump", stage=2)
    finally:
        daemon.kill9_if_running()
