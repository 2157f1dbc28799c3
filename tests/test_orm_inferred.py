"""The Django app on the schema the replicator infers itself (no schema made by the ORM): its
conventions are recognised (uuid from char(32) hex, jsonb from JSON_VALID-checked text,
timestamptz from DateTimeField text in two layouts), and with the decimal scales pinned (the one
fact a bare SQLite DECIMAL does not hold) the app answers on Postgres as on SQLite (issue 11)."""

from __future__ import annotations

import json

import pytest

from .support.helpers import Daemon, cli, wait_streaming
from .support.orm_apps import DJANGO, assert_app_same_on_postgres

pytestmark = pytest.mark.slow

PINNED = """
[replication]
round_to_scale = true
[verify]
interval = 0
[tables.shop_product.columns.price]
type = "numeric(10,2)"
[tables.shop_orderline.columns.unit_price]
type = "numeric(10,2)"
[tables.shop_order.columns.total]
type = "numeric(12,2)"
"""


async def test_django_app_runs_on_the_inferred_schema(tmp_path, target_dsn):
    db = tmp_path / "shop.sqlite3"
    DJANGO.run(db, "migrate", stage=2)
    DJANGO.run(db, "seed", "120", stage=2)
    plan = cli("plan", "--source", str(db), "--json")
    report = json.loads(plan.stdout)
    columns = {(t["name"], c["name"]): c for t in report["tables"] for c in t["columns"]}
    for key, pg_type in {("shop_customer", "uid"): "uuid", ("shop_customer", "prefs"): "jsonb",
                         ("shop_customer", "joined"): "timestamptz",
                         ("shop_product", "price"): "numeric"}.items():
        assert columns[key]["pg_type"] == pg_type, columns[key]
    assert "Django convention" in columns[("shop_customer", "uid")]["reason"]
    assert any("numeric(p,s)" in n for n in columns[("shop_product", "price")]["notes"])

    config = tmp_path / "pinned.toml"
    config.write_text(PINNED)
    daemon = Daemon(db, target_dsn, config=PINNED)
    try:
        await wait_streaming(target_dsn, daemon)
        DJANGO.run(db, "churn", "4", "90", stage=2)
        done = cli("cutover", "--source", str(db), "--target", target_dsn, "--config", str(config),
                   timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        daemon.stop()
    await assert_app_same_on_postgres(DJANGO, db, target_dsn, numeric={"revenue"}, writes=6)
