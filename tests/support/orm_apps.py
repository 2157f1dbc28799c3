"""The real-framework applications of tests/apps, driven as processes, and the story every one of
them goes through: the ORM made both schemas, the app writes while the daemon streams, a
migration reaches SQLite first (the daemon waits for the target), then cutover; afterwards the
same app must answer the same on Postgres and its writes must work (issue 11).

Every app has the same command line: ``APP DB migrate [VERSION] | seed N | churn SEED N | reads |
dump | writes``; DB is a SQLite path or a postgresql:// URL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import asyncpg

from .helpers import Daemon, cli, pg_state, wait_for, wait_streaming

APPS = Path(__file__).resolve().parents[1] / "apps"

EXISTING = """
[target]
schema_mode = "existing"
[replication]
round_to_scale = true
[verify]
interval = 0
"""


# The Django shop on the schema the replicator infers: its decimal scales pinned as the models
# declare them (a bare SQLite DECIMAL does not hold them), rounded as Django reads them.
DJANGO_PINNED = """
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


@dataclass(frozen=True)
class App:
    name: str
    command: tuple[str, ...]  # the interpreter and the app's script
    first: str  # the first migration's version: the schema before the live migration
    stage_variable: str | None = None  # models that follow the migration (Python apps)

    def env(self, stage: int) -> dict[str, str]:
        extra = {self.stage_variable: str(stage)} if self.stage_variable else {}
        return {**os.environ, **extra}

    def run(self, db: str | Path, *args: str, stage: int = 1) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.command, str(db), *args], capture_output=True, text=True,
                              timeout=300, env=self.env(stage))
        if proc.returncode != 0:
            raise AssertionError(f"{self.name} {args}: exit {proc.returncode}\n"
                                 f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        return proc

    def json(self, db: str | Path, *args: str, stage: int = 1) -> dict:
        return json.loads(self.run(db, *args, stage=stage).stdout)


DJANGO = App("django_shop", (sys.executable, str(APPS / "django_shop" / "app.py")), "0001",
             "SHOP_STAGE")
LEDGER = App("sqla_ledger", (sys.executable, str(APPS / "sqla_ledger" / "app.py")), "0001",
             "LEDGER_STAGE")
AR_STORE = App("ar_store", ("ruby", str(APPS / "ar_store" / "app.rb")), "20250101000001")


def activerecord_missing() -> str | None:
    """Why the ActiveRecord app cannot run here (None: it can). CI installs Debian's ruby,
    ruby-activerecord, ruby-sqlite3 and ruby-pg (.ci/run)."""
    if shutil.which("ruby") is None:
        return "ruby is not installed (apt-get install ruby ruby-activerecord ruby-sqlite3 ruby-pg)"
    probe = subprocess.run(["ruby", "-e", 'require "active_record"; require "sqlite3"; require "pg"'],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return ("ruby cannot load active_record, sqlite3 and pg (apt-get install ruby-activerecord "
                f"ruby-sqlite3 ruby-pg): {probe.stderr.strip()[-300:]}")
    return None


def same_reads(sqlite_answers: dict, pg_answers: dict, numeric: set[str],
               within: dict[str, Decimal] | None = None) -> list[str]:
    """The answers that differ. ``numeric``: answers compared as decimal values (SQLite sums a
    decimal column as floats and the ORM renders the float's digits; Postgres sums exactly).
    ``within``: sums that may differ by this much (SQLite sums the unrounded REALs, Postgres the
    values as the app reads each row: rows * half a unit of the scale at most)."""
    out = []
    for key, value in sqlite_answers.items():
        other = pg_answers.get(key)
        if key in numeric and value is not None and other is not None:
            if abs(Decimal(value) - Decimal(other)) > (within or {}).get(key, Decimal(0)):
                out.append(f"{key}: {value!r} vs {other!r}")
        elif value != other:
            out.append(f"{key}: {value!r} vs {other!r}")
    return out


async def foreign_keys(dsn: str) -> dict[str, bool]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT conname, convalidated FROM pg_constraint WHERE contype = 'f' "
                                "AND connamespace = 'public'::regnamespace")
        return {r["conname"]: r["convalidated"] for r in rows}
    finally:
        await conn.close()


def plan_existing(app: App, db: Path, target_dsn: str, config: Path, rounded: str) -> dict:
    """``plan --target``: fails while REALs beyond a column's scale (``rounded``, as
    table.column) need rounding, passes once it is configured; returns the first report."""
    plain = cli("plan", "--source", str(db), "--target", target_dsn, "--json")
    assert plain.returncode == 1, plain.stderr
    report = json.loads(plain.stdout)
    assert any(rounded in a and "round_to_scale" in a for a in report["attention"]), \
        report["attention"]
    assert [r for t in report["tables"] for r in t["refused"]] == []
    assert report["migrations"]["same"]
    config.write_text(EXISTING)
    ok = cli("plan", "--source", str(db), "--target", target_dsn, "--config", str(config))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    return report


async def migrate_live_and_cut_over(app: App, db: Path, target_dsn: str, config: Path,
                                    new_column: str) -> None:
    """The daemon streams while the app writes; the app's next migration reaches SQLite first
    (the daemon waits, naming ``new_column``, and resumes by itself once the same migration
    reaches Postgres); more writes; cutover."""
    daemon = Daemon(db, target_dsn, config=EXISTING)
    try:
        await wait_streaming(target_dsn, daemon)
        churn = subprocess.Popen([*app.command, str(db), "churn", "1", "120"], env=app.env(1),
                                 stderr=subprocess.PIPE, text=True)
        _out, err = churn.communicate(timeout=300)
        assert churn.returncode == 0, err
        app.run(db, "migrate", stage=2)
        app.run(db, "churn", "2", "30", stage=2)

        async def waiting():
            st = await pg_state(target_dsn)
            return st and st["state"] == "waiting" and new_column in (st["error"] or "")

        await wait_for(waiting, 60, "the daemon waiting for the target's migration", daemon)
        app.run(target_dsn, "migrate", stage=2)
        await wait_streaming(target_dsn, daemon)
        app.run(db, "churn", "3", "30", stage=2)
        _cut_over(db, target_dsn, config)
    finally:
        daemon.stop()
    events = [e["event"] for e in daemon.events()]
    assert "awaiting_target" in events and "recovered" in events


async def stream_and_cut_over(app: App, db: Path, target_dsn: str, config: Path) -> None:
    """The daemon (with ``config``) streams while the app writes at stage 2; then cutover."""
    daemon = Daemon(db, target_dsn, config=config.read_text())
    try:
        await wait_streaming(target_dsn, daemon)
        app.run(db, "churn", "4", "90", stage=2)
        _cut_over(db, target_dsn, config)
    finally:
        daemon.stop()


def _cut_over(db: Path, target_dsn: str, config: Path) -> None:
    done = cli("cutover", "--source", str(db), "--target", target_dsn, "--config", str(config),
               timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


async def assert_app_same_on_postgres(app: App, db: Path, target_dsn: str, *, numeric: set[str],
                                      writes: int, within: dict[str, Decimal] | None = None,
                                      fks: dict[str, bool] | None = None) -> None:
    """Every row of every model read through the ORM on both sides is equal (value by value, in
    the app's own meaning); the app's read queries answer the same; the foreign keys held during
    the window are back and validated; the app's writes work on Postgres."""
    assert app.json(db, "dump", stage=2) == app.json(target_dsn, "dump", stage=2)
    differ = same_reads(app.json(db, "reads", stage=2), app.json(target_dsn, "reads", stage=2),
                        numeric=numeric, within=within)
    assert differ == [], differ
    if fks is not None:
        assert await foreign_keys(target_dsn) == fks
    checks = app.json(target_dsn, "writes", stage=2)
    assert checks == {k: "ok" for k in checks} and len(checks) == writes
