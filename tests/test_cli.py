"""The command line contract: commands, exit codes, errors that name what is wrong."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from replicator import config
from replicator.cli import build_parser
from replicator.errors import ConfigError

from .support.helpers import ROOT, Daemon, cli, wait_streaming


def app_schema(path: Path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' "
            "ORDER BY type, name").fetchall()
    finally:
        conn.close()


def test_every_command_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert re.search(rf"replicator {name}\b", readme), f"`replicator {name}` not in README"


async def test_uninstall_removes_everything_and_the_schema_is_identical(chinook, target_dsn):
    before = app_schema(chinook)
    daemon = Daemon(chinook, target_dsn)
    await wait_streaming(target_dsn, daemon)
    assert app_schema(chinook) != before
    busy = cli("uninstall", "--source", str(chinook))
    assert busy.returncode == 3 and "stop it first" in busy.stderr
    assert daemon.stop() == 0
    out = cli("uninstall", "--source", str(chinook), "--target", target_dsn, "--target-schema",
              check=True)
    assert "removed 33 triggers and 2 tables" in out.stdout
    assert app_schema(chinook) == before
    conn = sqlite3.connect(chinook)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_copy_then_status_json(chinook, target_dsn):
    out = cli("copy", "--source", str(chinook), "--target", target_dsn, "--json", check=True)
    data = json.loads(out.stdout)
    assert data["rows"] == 15607 and data["tables"]["Track"]["rows"] == 3503
    assert app_schema(chinook) and not [r for r in app_schema(chinook) if "_replicator" in r[1]]
    st = json.loads(cli("status", "--source", str(chinook), "--target", target_dsn, "--json",
                        check=True).stdout)
    assert st["state"] == "done" and st["backlog_changes"] == 0 and st["lag_seconds"] == 0.0
    assert st["tables"]["Track"]["rows_copied"] == 3503


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[source]\npath = 3\n", "source.path: expected a string"),
        ("[source]\npoll_interval = 'fast'\n", "source.poll_interval: expected a number"),
        ("[replication]\non_bad_value = 'drop'\n", "replication.on_bad_value: 'drop' is not one of"),
        ("[target]\nurl = '${NOPE_NOT_SET}'\n", "environment variable ${NOPE_NOT_SET} is not set"),
        ("[target]\nbogus = 1\n", "unknown key target.bogus"),
        ("[tables.t.columns.c]\ntype = 'varchar(3)'\n", "tables.t.columns.c.type"),
        ("[source\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_field(tmp_path, toml, message):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.build(path, {"source": "x.db"})
    out = cli("plan", "--source", "x.db", "--config", str(path))
    assert out.returncode == 2 and message.split(":")[0] in out.stderr


def test_config_expands_env_and_flags_override(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text("[source]\npath = 'a.db'\n[target]\nurl = '${MY_DSN}'\n[metrics]\naddr = 'off'\n")
    monkeypatch.setenv("MY_DSN", "postgresql://u:p@h/db")
    cfg = config.build(path, {"source": "b.db"})
    assert cfg.source == Path("b.db") and cfg.target_url == "postgresql://u:p@h/db"
    assert cfg.metrics_addr is None


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["run"], 2, "--source"),
        (["status", "--source", "/nonexistent/x.db", "--target", "postgresql://u@127.0.0.1:1/x"],
         3, "does not exist"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_exit_codes(args, code, text):
    out = cli(*args)
    assert out.returncode == code, out.stderr
    assert text in out.stderr


def test_not_a_sqlite_file_is_refused_before_anything_is_written(tmp_path, target_dsn):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a database\n" * 100)
    out = cli("run", "--source", str(bogus), "--target", target_dsn, "--metrics-addr", "off")
    assert out.returncode == 3 and "not a readable SQLite database" in out.stderr
    assert bogus.read_text() == "this is not a database\n" * 100



def test_a_taken_metrics_port_is_a_startup_error_before_anything_is_written(chinook, target_dsn):
    """Two daemons on one host both default to 127.0.0.1:9753: the second one says which field
    to change (it used to print an OSError traceback as an unexpected error, exit 1)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = cli("run", "--source", str(chinook), "--target", target_dsn,
                  "--metrics-addr", f"127.0.0.1:{port}")
    assert out.returncode == 3, out.stderr
    assert f"metrics.addr 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr
    conn = sqlite3.connect(chinook)
    try:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE '%replicator%'"
                            ).fetchone()[0] == 0
    finally:
        conn.close()

def test_wrong_password_is_a_startup_error_without_the_password(chinook, target_dsn):
    bad = target_dsn.replace("@127.0.0.1", "x9secretx@127.0.0.1").replace(
        "replicator:", "replicator:wrong")
    out = cli("copy", "--source", str(chinook), "--target", bad)
    assert out.returncode == 3
    assert "password authentication failed" in out.stderr
    assert "wrong" not in out.stderr and "x9secretx" not in out.stderr
    # status shows what it can from the source, but its exit code says the target was not reached
    st = cli("status", "--source", str(chinook), "--target", bad)
    assert st.returncode == 3 and "password authentication failed" in st.stdout
    assert "x9secretx" not in st.stdout + st.stderr


async def test_status_check_fails_and_says_so_when_no_daemon_applies_the_log(chinook, target_dsn):
    daemon = Daemon(chinook, target_dsn)
    try:
        await wait_streaming(target_dsn, daemon)
        assert cli("status", "--source", str(chinook), "--target", target_dsn, "--check"
                   ).returncode == 0
    finally:
        daemon.stop()
    conn = sqlite3.connect(chinook)
    conn.execute("UPDATE artist SET name = name || '!' WHERE artistid < 4")
    conn.commit()
    conn.close()
    st = cli("status", "--source", str(chinook), "--target", target_dsn, "--check")
    assert st.returncode == 1  # streaming state on record, but nothing is streaming
    assert "daemon:     not running" in st.stdout
    assert "the change log grows (3 changes waiting)" in st.stdout
    assert f"replicator uninstall --source {chinook}" in st.stdout
    # The target unreadable: what only it knows is unknown, not "new" and "0 changes".
    bad = target_dsn.replace("replicator:", "replicator:wrong")
    st = cli("status", "--source", str(chinook), "--target", bad)
    assert st.returncode == 3, st.stdout + st.stderr
    assert "state:      unknown  (the target could not be read)" in st.stdout
    assert "backlog:" not in st.stdout and "state:      new" not in st.stdout
    assert "is known only to the target" in st.stdout


def test_the_example_config_is_valid(monkeypatch):
    monkeypatch.setenv("NEON_DATABASE_URL", "postgresql://u:p@ep-x.neon.tech/db?sslmode=require")
    cfg = config.build(ROOT / "config" / "replicator.example.toml")
    assert cfg.source == Path("/var/lib/app/app.db") and cfg.snapshot_method == "copy"


def test_every_metric_is_documented_in_the_readme():
    from replicator import metrics

    readme = (ROOT / "README.md").read_text()
    for metric in metrics.REGISTRY.collect():
        name = metric.name + ("_total" if metric.type == "counter" else "")
        assert f"`{name}" in readme, f"metric {name} is not in the README's table"


def test_every_config_key_is_in_the_example_config():
    example = (ROOT / "config" / "replicator.example.toml").read_text()
    for section, key in config._SCHEMA:
        assert re.search(rf"^#? ?{key} *=", example, re.M), f"{section}.{key} missing from the example"


async def test_rehearsals_of_each_file_have_their_own_embedded_database(tmp_path, embedded_config):
    """Issue 16: the embedded target was one database for every file, so a second rehearsal (or
    a fresh clone's demo) found the first one's finished migration. Each file now has its own,
    and `embedded drop --source` resets one without touching the others."""
    home, conf = embedded_config
    a, b = tmp_path / "a" / "app.sqlite", tmp_path / "b" / "app.sqlite"  # same name, two files
    for path in (a, b):
        path.parent.mkdir()
        shutil.copy(ROOT / "examples" / "chinook.sqlite", path)
    copied = cli("copy", "--source", str(a), "--config", str(conf), "--json", timeout=300)
    assert copied.returncode == 0, copied.stderr
    dsn_a = cli("embedded", "dsn", "--dir", str(home), "--source", str(a), check=True).stdout.strip()
    dsn_b = cli("embedded", "dsn", "--dir", str(home), "--source", str(b), check=True).stdout.strip()
    assert dsn_a.rsplit("/", 1)[1] != dsn_b.rsplit("/", 1)[1]
    pg = await asyncpg.connect(dsn_a)
    try:
        assert await pg.fetchval("SELECT count(*) FROM track") == 3503
    finally:
        await pg.close()
    pg = await asyncpg.connect(dsn_b)
    try:
        assert await pg.fetchval("SELECT to_regclass('track')") is None  # b's is untouched
    finally:
        await pg.close()
    dropped = cli("embedded", "drop", "--dir", str(home), "--source", str(a), check=True)
    assert "dropped database app_" in dropped.stdout
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncpg.connect(dsn_a)
    again = cli("copy", "--source", str(a), "--config", str(conf), timeout=300)
    assert again.returncode == 0, again.stderr  # a fresh rehearsal of the same file
    # A wrong --source is refused before the embedded target makes a database for it.
    notdb = tmp_path / "notdb.sqlite"
    notdb.write_text("not a database\n")
    out = cli("run", "--source", str(notdb), "--config", str(conf), "--metrics-addr", "off")
    assert out.returncode == 3 and "not a readable SQLite database" in out.stderr, out.stderr
    # Commands that only look at (or end) a migration make no database for a file never
    # replicated: status says "new", the others say what to run.
    fresh = tmp_path / "fresh.sqlite"
    shutil.copy(ROOT / "examples" / "chinook.sqlite", fresh)
    st = cli("status", "--source", str(fresh), "--config", str(conf))
    assert st.returncode == 0 and st.stdout.startswith("state:      new  (nothing has been "
                                                        "replicated from"), st.stdout + st.stderr
    assert cli("status", "--source", str(fresh), "--config", str(conf), "--check").returncode == 1
    for command in ("report", "verify", "cutover"):
        out = cli(command, "--source", str(fresh), "--config", str(conf))
        assert out.returncode == 3 and f"replicator run --source {fresh}" in out.stderr, out.stderr
    out = cli("uninstall", "--source", str(fresh), "--config", str(conf), "--target-schema")
    assert out.returncode == 0, out.stderr
    pg = await asyncpg.connect(dsn_b)
    try:
        names = [r[0] for r in await pg.fetch("SELECT datname FROM pg_database")]
    finally:
        await pg.close()
    assert [n for n in names if n.startswith("app_")] and \
        not [n for n in names if n.startswith(("notdb_", "fresh_"))], names


def test_a_reader_that_goes_away_ends_the_command_quietly(chinook):
    # `replicator plan --json | head -1`: the pipe closes before everything is written.
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "replicator", "plan", "--source", str(chinook),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


async def test_a_run_that_fails_after_installing_capture_says_what_stays(chinook, target_dsn):
    pg = await asyncpg.connect(target_dsn)
    try:  # a table the replicator did not create: the snapshot refuses to touch it
        await pg.execute('CREATE TABLE "genre" (x int)')
    finally:
        await pg.close()
    daemon = Daemon(chinook, target_dsn)
    assert daemon.wait(120) == 3
    stays = [e for e in daemon.events() if e.get("event") == "capture_left_installed"]
    assert stays and f"replicator uninstall --source {chinook}" in stays[0]["detail"]
    assert "already exists and was not created by the replicator" in daemon.log.read_text()


def test_plan_starts_with_what_it_says_and_names_each_rule_once(chinook, tmp_path):
    out = cli("plan", "--source", str(chinook), check=True).stdout
    lines = out.splitlines()
    assert lines[2] == "11 tables, 15,607 rows: all 11 arrive exact."
    assert lines[3].startswith("Framework: none recognised")
    assert "lower-cased (Album -> album" in lines[4] and 'identifiers = "preserve"' in lines[4]
    assert out.count("INTEGER affinity: bigint") == 1  # the rule once, not per column
    column_lines = [ln for ln in lines if ln.startswith(("  ok ", "  !! "))]
    assert len(column_lines) == 64 and all(re.search(r" R\d+  \[", ln) for ln in column_lines)
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).execute("VACUUM")
    out = cli("plan", "--source", str(empty), check=True).stdout
    assert "holds no table to migrate" in out and "All 0" not in out


def test_the_screens_changes_per_second_is_what_happens_now():
    """The live line's rate looks back RATE_WINDOW seconds: a burst shows, and an idle minute
    after it shows 0/s (an average since the start would still show the burst)."""
    from replicator.cli.progress import RATE_WINDOW, TableProgress

    screen = TableProgress()
    t, applied = 0.0, 0
    for _ in range(40):  # 200 changes/s for 10 s, sampled at 4 Hz like the screen
        t, applied = t + 0.25, applied + 50
        rate = screen._rate(t, applied)
    assert rate == pytest.approx(200, rel=0.05)
    for _ in range(int(4 * (RATE_WINDOW + 5))):  # then nothing for 15 s
        t += 0.25
        rate = screen._rate(t, applied)
    assert rate == 0
    assert screen._rate(t + 0.25, 0) == 0  # a restarted count starts a new window
