"""``replicator queries``: the scanner on a sample app tree, the translator on the traps, and
replay of the Chinook corpus against a real Postgres loaded by ``replicator copy``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from replicator.dsn import parse_target
from replicator.queries.replay import open_readonly
from replicator.queries.translate import looks_like_sql, translate

from .support.helpers import ROOT, cli

CORPUS = Path(__file__).parent / "corpus" / "chinook_traps.sql"
APP = ROOT / "examples" / "app"


def queries(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``queries ...`` through the stand-alone runner (the main CLI is wired separately)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("REPLICATOR_TARGET_URL", "DATABASE_URL")}
    return subprocess.run([sys.executable, "-m", "replicator", "queries", *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**base, **(env or {})})


def scan_json(*args: str) -> dict:
    proc = queries("scan", str(APP), "--format", "json", *args)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def by_place(report: dict) -> dict[str, dict]:
    return {f"{f['file']}:{f['line']}": f for f in report["findings"]}


def codes(finding: dict) -> set[str]:
    return {t["code"] for t in finding["traps"]}


@pytest.fixture
def loaded(chinook, target_dsn):
    cli("copy", "--source", str(chinook), "--target", target_dsn, check=True)
    return chinook, target_dsn


# -- scanner ----------------------------------------------------------------------------------


def test_scan_finds_sql_with_file_and_line_and_asyncpg_placeholders():
    found = by_place(scan_json("--driver", "asyncpg"))
    assert set(found) == {
        "examples/app/api/tracks.py:11", "examples/app/api/tracks.py:18",
        "examples/app/api/tracks.py:26", "examples/app/api/tracks.py:27",
        "examples/app/api/tracks.py:31", "examples/app/go/store.go:7",
        "examples/app/go/store.go:15", "examples/app/php/employees.php:4",
        "examples/app/php/employees.php:10", "examples/app/ruby/report.rb:5",
        "examples/app/ruby/report.rb:14", "examples/app/sql/reports.sql:2",
        "examples/app/sql/reports.sql:8", "examples/app/sql/reports.sql:10",
        "examples/app/web/customers.ts:7", "examples/app/web/customers.ts:11",
        "examples/app/web/invoices.js:6", "examples/app/web/invoices.js:10",
        "examples/app/web/invoices.js:19",
    }, sorted(found)
    named = found["examples/app/api/tracks.py:18"]
    assert named["params"] == [":album", ":genre"]
    assert "t.albumid = $1 AND t.genreid = $2 OR t.albumid = $1" in named["postgres"]
    assert found["examples/app/go/store.go:7"]["params"] == ["?1"]
    assert found["examples/app/go/store.go:15"]["params"] == ["$name", "$id"]
    assert "SET name = $1 WHERE playlistid = $2" in found["examples/app/go/store.go:15"]["postgres"]
    assert found["examples/app/ruby/report.rb:14"]["params"] == ["@id", "@name"]
    assert found["examples/app/php/employees.php:4"]["params"] == [":title"]
    tagged = found["examples/app/web/customers.ts:7"]
    assert tagged["tagged_template"] and "country = $1" in tagged["postgres"]


def test_scan_psycopg_style_repeats_named_parameters_and_doubles_percent():
    found = by_place(scan_json("--driver", "psycopg"))
    named = found["examples/app/api/tracks.py:18"]
    assert named["params"] == [":album", ":genre", ":album"]
    assert "t.albumid = %s AND t.genreid = %s OR t.albumid = %s" in named["postgres"]
    yearly = found["examples/app/web/invoices.js:6"]
    assert yearly["postgres"].count("%s") == 1 and "psycopg-percent" not in codes(yearly)
    php = found["examples/app/php/employees.php:10"]
    assert php["params"] == [":year"] and "= %s" in php["postgres"]


def test_scan_reports_the_traps_of_each_statement():
    found = by_place(scan_json())
    expected = {
        "examples/app/api/tracks.py:11": {"like-case"},
        "examples/app/api/tracks.py:18": {"ifnull", "int-division", "alias-case"},
        "examples/app/api/tracks.py:26": {"upsert-replace", "upsert-key"},
        "examples/app/api/tracks.py:27": {"last-insert-rowid"},
        "examples/app/api/tracks.py:31": {"interpolated", "rowid"},
        "examples/app/go/store.go:7": {"collate-nocase"},
        "examples/app/php/employees.php:10": {"substr-negative", "time-func"},
        "examples/app/ruby/report.rb:5": {"typeof"},
        "examples/app/ruby/report.rb:14": {"upsert-ignore"},
        "examples/app/sql/reports.sql:8": {"bare-column"},
        "examples/app/sql/reports.sql:10": {"pragma"},
        "examples/app/web/customers.ts:7": {"concat-null", "limit-negative"},
        "examples/app/web/customers.ts:11": {"minmax-scalar", "glob"},
        "examples/app/web/invoices.js:10": {"interpolated", "time-unsupported"},
        "examples/app/web/invoices.js:19": {"group-concat"},
    }
    for place, want in expected.items():
        assert want <= codes(found[place]), (place, codes(found[place]))
    upsert = found["examples/app/api/tracks.py:26"]["postgres"]
    assert "ON CONFLICT(genreid) DO UPDATE SET name = excluded.name" in upsert
    assert found["examples/app/sql/reports.sql:10"]["postgres"] is None
    for t in found["examples/app/api/tracks.py:11"]["traps"]:
        assert t["message"] and t["severity"] in ("fails", "differs", "review")


def test_scan_with_source_uses_the_copied_types(chinook):
    found = by_place(scan_json("--source", str(chinook)))
    hired = found["examples/app/php/employees.php:10"]["postgres"]
    assert "TO_CHAR(hiredate AT TIME ZONE 'UTC', 'YYYY')" in hired  # timestamptz in Postgres
    assert "bare-column" not in codes(found["examples/app/sql/reports.sql:8"])  # grouped by PK
    assert "upsert-key" not in codes(found["examples/app/api/tracks.py:26"])  # key known


def test_scan_text_report_names_file_and_line():
    proc = queries("scan", str(APP / "web"), "--driver", "neon")
    assert proc.returncode == 1  # open "fails"/"differs" findings
    assert "examples/app/web/invoices.js:19  [differs]" in proc.stdout
    assert "string_agg" in proc.stdout.lower()
    md = queries("scan", str(APP / "web"), "--format", "md")
    assert md.stdout.startswith("# SQL found in the application")


def test_not_sql_is_not_taken_for_sql():
    for text in ("Select a file to upload", "Update available", "Create account", "SELECT",
                 "Insert coin", "Drop it like it's hot", "select * from"):
        assert not looks_like_sql(text), text
    for text in ("SELECT 1", "select count(*) from t", "REPLACE INTO t (a) VALUES (1)",
                 "PRAGMA foreign_keys = ON", "CREATE TABLE t (a TEXT) WITHOUT ROWID"):
        assert looks_like_sql(text), text


def test_translation_fixes_what_sqlglot_leaves_wrong():
    tr = translate("SELECT a || b, x FROM t WHERE y LIKE 'A%' LIMIT -1")
    assert "||" in tr.postgres and "CONCAT" not in tr.postgres.upper()
    assert "LIMIT" not in tr.postgres
    tr = translate("INSERT INTO t (id, v) VALUES (1, 2) ON CONFLICT (id) DO NOTHING")
    assert "NULLS" not in tr.postgres
    tr = translate("SELECT strftime('%s', 'now'), CAST(x AS INTEGER) FROM t")
    assert "'%s'" not in tr.postgres and "AS BIGINT" in tr.postgres
    tr = translate("SELECT x FROM t WHERE y LIKE :p", driver="psycopg")
    assert tr.postgres.endswith("LIKE %s") and tr.params == [":p"]
    tr = translate("SELECT x FROM t WHERE y LIKE 'a%' AND z = ?", driver="psycopg")
    assert "'a%%'" in tr.postgres and "psycopg-percent" in {t.code for t in tr.traps}


# -- replay -----------------------------------------------------------------------------------


def test_corpus_replay_classifies_every_query_as_its_header_says(loaded):
    source, dsn = loaded
    proc = queries("replay", str(CORPUS), "--source", str(source), "--target", dsn,
                   "--format", "json", "--runs", "1", "--slow-ms", "0")
    report = json.loads(proc.stdout)
    wrong = [(r["name"], r["expect"], r["status"], r["reason"]) for r in report["results"]
             if r["status"] != r["expect"]]
    assert not wrong, wrong
    assert proc.returncode == 0, proc.stderr
    assert len(report["results"]) >= 25
    assert {r["status"] for r in report["results"]} == {"same", "different", "failed", "skipped"}
    assert parse_target(dsn).password not in proc.stdout + proc.stderr
    first = next(r for r in report["results"] if r["name"] == "boolean-result")
    assert "boolean" in first["reason"] and first["sqlite_row"] == [1, 1]
    timed = next(r for r in report["results"] if r["name"] == "integer-division")
    assert timed["sqlite_ms"] is not None and timed["pg_ms"] is not None
    assert timed["plan"] and "Seq Scan on track" in timed["plan"]["nodes"]


def test_replay_refuses_writes_without_executing_them(loaded, tmp_path):
    source, dsn = loaded
    corpus = tmp_path / "writes.sql"
    corpus.write_text("-- name: wipe\nDELETE FROM Track;\n"
                      "-- name: rename\nUPDATE Track SET Name = 'x';\n"
                      "-- name: drop\nDROP TABLE Track;\n")
    proc = queries("replay", str(corpus), "--source", str(source), "--target", dsn,
                   "--format", "json")
    report = json.loads(proc.stdout)
    assert [r["status"] for r in report["results"]] == ["skipped"] * 3
    assert all(r["reason"].startswith("refused") for r in report["results"])
    conn = sqlite3.connect(source)
    try:
        assert conn.execute("SELECT count(*), max(Name) FROM Track").fetchone()[0] == 3503
    finally:
        conn.close()
    assert _pg_count(dsn) == 3503


def test_replay_sqlite_connection_cannot_write(chinook):
    conn = open_readonly(chinook)
    try:
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute("DELETE FROM Track")
        assert conn.execute("SELECT count(*) FROM Track").fetchone()[0] == 3503
    finally:
        conn.close()


def test_replay_target_from_environment(loaded, tmp_path):
    source, dsn = loaded
    corpus = tmp_path / "one.sql"
    corpus.write_text("-- expect: same\nSELECT count(*) FROM Genre;\n")
    proc = queries("replay", str(corpus), "--source", str(source),
                   env={"REPLICATOR_TARGET_URL": dsn})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 same" in proc.stdout and "***" in proc.stdout


def test_advise_names_unindexed_foreign_keys_and_big_sequential_scans(loaded, tmp_path):
    source, dsn = loaded
    _pg_exec(dsn, "DROP INDEX ifk_trackgenreid")
    corpus = tmp_path / "scan.sql"
    corpus.write_text("SELECT count(*) FROM Track WHERE Milliseconds > 300000;\n")
    proc = queries("advise", str(corpus), "--source", str(source), "--target", dsn,
                   "--seq-scan-rows", "1000", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    advice = json.loads(proc.stdout)["advice"]
    fk = [a for a in advice if a["kind"] == "fk"]
    assert [(a["table"], a["columns"]) for a in fk] == [("track", ["genreid"])]
    assert fk[0]["statement"].startswith("CREATE INDEX CONCURRENTLY")
    seq = [a for a in advice if a["kind"] == "seq-scan"]
    assert [(a["table"], a["columns"]) for a in seq] == [("track", ["milliseconds"])]
    for a in advice:  # the advice runs as given
        _pg_exec(dsn, a["statement"])
    proc = queries("advise", "--source", str(source), "--target", dsn)
    assert "nothing to add" in proc.stdout


def _pg_count(dsn: str) -> int:
    import asyncio

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SELECT count(*) FROM track")
        finally:
            await conn.close()

    return asyncio.run(count())


def _pg_exec(dsn: str, sql: str) -> None:
    import asyncio

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg", "node-postgres", "neon"])
def test_findings_speak_the_applications_parameters_and_the_drivers_placeholders(driver):
    tr = translate("SELECT * FROM Track WHERE Name LIKE :name AND Composer LIKE ?", driver)
    texts = [t.message + (t.suggestion or "") + t.snippet for t in tr.traps]
    assert tr.traps and not any("__p" in x for x in texts), texts
    like = next(t for t in tr.traps if t.code == "like-case")
    assert ":name" in like.message
    assert like.suggestion == ("Name ILIKE %s" if driver == "psycopg" else "Name ILIKE $1")
