"""The Django app on the schema the replicator infers itself (no schema made by the ORM): its
conventions are recognised (uuid from char(32) hex, jsonb from JSON_VALID-checked text,
timestamptz from DateTimeField text in two layouts), and with the decimal scales pinned (the one
fact a bare SQLite DECIMAL does not hold) the app answers on Postgres as on SQLite (issue 11)."""

from __future__ import annotations

import json

import pytest

from .support.helpers import cli
from .support.orm_apps import (
    DJANGO,
    DJANGO_PINNED,
    assert_app_same_on_postgres,
    stream_and_cut_over,
)

pytestmark = pytest.mark.slow



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
    config.write_text(DJANGO_PINNED)
    await stream_and_cut_over(DJANGO, db, target_dsn, config)
    await assert_app_same_on_postgres(DJANGO, db, target_dsn, numeric={"revenue"}, writes=6)
