"""Neon's DSNs and TLS: channel_binding dropped, sslmode honoured, verify-full by default off
loopback, checked against a local Postgres with a self-signed CA."""

from __future__ import annotations

import ssl

import asyncpg

from replicator.dsn import mask_dsn, parse_target

from .support.helpers import Daemon, cli, compare_all, wait_caught_up
from .support.pg_tls import tls_pg  # noqa: F401 - the fixture

NEON = ("postgresql://neondb_owner:npg_S3cret@ep-cool-darkness-123456.us-east-2.aws.neon.tech/"
        "neondb?sslmode=require&channel_binding=require")


def test_neon_console_dsn_policy():
    t = parse_target(NEON)
    assert t.dropped == ("channel_binding",) and "channel_binding" not in t.dsn
    ctx = t.ssl_context(verify=True)
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname  # require -> verify-full
    assert not t.pooled and parse_target(NEON.replace("123456.", "123456-pooler.")).pooled
    insecure = t.ssl_context(verify=False)
    assert insecure.verify_mode == ssl.CERT_NONE  # only when tls_verify = false is set
    assert mask_dsn(NEON).startswith("postgresql://neondb_owner:***@") and "S3cret" not in mask_dsn(NEON)
    assert parse_target("postgresql://u@127.0.0.1/db").ssl_context() is None  # loopback: prefer


async def test_the_daemon_connects_with_neon_style_parameters_over_tls(chinook, tls_pg):  # noqa: F811
    dsn = tls_pg.dsn(sslmode="require", channel_binding="require")
    daemon = Daemon(chinook, dsn)
    try:
        # (plain asyncpg would forward channel_binding and be refused: the test uses a clean DSN)
        await wait_caught_up(tls_pg.dsn(sslmode="require"), chinook, daemon)
        conn = await asyncpg.connect(tls_pg.dsn(), ssl=False)
        try:
            rows = await conn.fetch(
                "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                "WHERE a.application_name = 'replicator'")
        finally:
            await conn.close()
        assert rows and all(r["ssl"] for r in rows), rows
    finally:
        daemon.stop()
    assert any(e["event"] == "dsn_keys_dropped" for e in daemon.events())
    await compare_all(chinook, tls_pg.dsn(), expect_quarantined={})


def test_verify_full_needs_a_trusted_certificate(chinook, tls_pg):  # noqa: F811
    out = cli("copy", "--source", str(chinook), "--target", tls_pg.dsn(sslmode="verify-full"))
    assert out.returncode == 3 and "certificate verify failed" in out.stderr
    assert tls_pg.password not in out.stderr
    good = tls_pg.dsn(sslmode="verify-full", sslrootcert=str(tls_pg.ca))
    assert cli("copy", "--source", str(chinook), "--target", good).returncode == 0


def test_target_pooled_in_the_config_reaches_every_command(tmp_path):
    """Every command (cutover's verify included) connects through config_target: the config's
    target.pooled must override the host-name guess there, in both directions."""
    from replicator import config
    from replicator.cli.output import config_target

    for text, host, expected in (("[target]\npooled = true\n", "127.0.0.1", True),
                                 ("[target]\npooled = false\n", "ep-x-pooler.neon.tech", False),
                                 ("", "ep-x-pooler.neon.tech", True), ("", "127.0.0.1", False)):
        path = tmp_path / "c.toml"
        path.write_text(text)
        cfg = config.build(path, {"target_url": f"postgresql://u:p@{host}/db",
                                  "source": str(tmp_path / "app.db")})
        assert config_target(cfg).pooled is expected, (text, host)
