"""The DSN password never leaves: logs, errors (asyncpg's included), status, plan, verify, report,
metrics, the target's bookkeeping, on success and failure paths alike."""

from __future__ import annotations

import json
import urllib.request

import asyncpg
import pytest

from replicator.dsn import parse_target
from replicator.embedded import free_port

from .support.helpers import Daemon, cli, wait_caught_up

pytestmark = pytest.mark.slow
PASSWORD = "Sup3r$ecret-Pa55:w0rd@x"  # characters that need URL-quoting, on purpose


@pytest.fixture
async def secret_dsn(pg_env, target_dsn):
    from urllib.parse import quote

    t = parse_target(target_dsn)
    admin = await asyncpg.connect(pg_env.admin_dsn)
    try:
        await admin.execute("DROP ROLE IF EXISTS secretive")
        await admin.execute(f"CREATE ROLE secretive LOGIN PASSWORD '{PASSWORD}'")
        await admin.execute(f'ALTER DATABASE "{t.database}" OWNER TO secretive')
    finally:
        await admin.close()
    return f"postgresql://secretive:{quote(PASSWORD, safe='')}@127.0.0.1:{t.port}/{t.database}"


async def test_the_password_appears_nowhere(chinook, secret_dsn, tmp_path):
    outputs: list[str] = []

    def run(*args: str) -> None:
        out = cli(*args)
        outputs.extend([out.stdout, out.stderr])

    port = free_port()
    daemon = Daemon(chinook, secret_dsn, "--metrics-addr", f"127.0.0.1:{port}", "--log-level", "debug")
    try:
        await wait_caught_up(secret_dsn, chinook, daemon)
        outputs.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode())
        for fmt in ([], ["--json"]):
            run("status", "--source", str(chinook), "--target", secret_dsn, *fmt)
        run("verify", "--source", str(chinook), "--target", secret_dsn, "--json")
        run("plan", "--source", str(chinook), "--json")
        run("doctor", "--target", secret_dsn)
        run("cutover", "--source", str(chinook), "--target", secret_dsn, "--json")
        daemon.wait(30)
        for fmt in ("md", "json", "html"):
            run("report", "--source", str(chinook), "--target", secret_dsn, "--format", fmt)
    finally:
        daemon.kill9_if_running()
    outputs.append(daemon.log.read_text())
    # Failure paths: a wrong password, a dead port, a bad DSN, a bad config value.
    wrong = secret_dsn.replace("secretive:", "secretive:x")
    run("copy", "--source", str(chinook), "--target", wrong)
    dead = secret_dsn.rsplit(":", 1)[0].rsplit("@", 1)[0] + "@127.0.0.1:1/db"
    run("status", "--source", str(chinook), "--target", dead)
    run("copy", "--source", str(chinook), "--target", secret_dsn.replace("postgresql://", "mysql://"))
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"[target]\nurl = '{secret_dsn}'\nconnect_timeout = 'soon'\n")
    run("copy", "--source", str(chinook), "--config", str(cfg))
    conn = await asyncpg.connect(secret_dsn)
    try:
        for table in ("state", "events", "tables"):
            outputs.append(json.dumps([dict(r) for r in await conn.fetch(
                f"SELECT * FROM _replicator.{table}")], default=str))
    finally:
        await conn.close()
    everything = "\n".join(outputs)
    assert "password authentication failed" in everything  # the failure paths really ran
    for needle in (PASSWORD, PASSWORD.replace("$", "%24").replace(":", "%3A").replace("@", "%40")):
        assert needle not in everything
