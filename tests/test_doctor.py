"""``replicator doctor`` against real servers: a healthy target, a wrong password, a closed
port, and a TLS server whose certificate only verifies with its own CA."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

from replicator.dsn import parse_target
from replicator.embedded import free_port

from .support.helpers import ROOT
from .support.pg_tls import tls_pg  # noqa: F401 - the fixture

WRONG = "not-the-password-4711"


def doctor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The doctor through the stand-alone runner (the main CLI is wired separately)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("REPLICATOR_TARGET_URL", "DATABASE_URL")}
    return subprocess.run([sys.executable, "-m", "replicator", "doctor", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**base, **(env or {})})


def lines(out: str) -> dict[str, str]:
    """check name -> its line."""
    found = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            found.setdefault(parts[1], line)
    return found


def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def test_reachable_target_is_all_ok(target_dsn):
    proc = doctor("--target", target_dsn + "?channel_binding=require")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = lines(proc.stdout)
    for name in ("dsn", "dns", "tcp", "tls", "auth", "server", "endpoint", "connections",
                 "privileges", "schema", "copy", "latency", "transaction"):
        assert checks[name].startswith("ok "), checks.get(name)
    assert "channel_binding removed" in checks["dsn"]
    assert "ms)" in checks["tcp"]
    assert parse_target(target_dsn).password not in proc.stdout + proc.stderr


def test_wrong_password_says_authentication_failed(target_dsn):
    real = parse_target(target_dsn).password
    proc = doctor("--target", with_password(target_dsn, WRONG))
    assert proc.returncode == 1
    checks = lines(proc.stdout)
    assert checks["auth"].startswith("FAIL")
    assert "password authentication failed" in checks["auth"]
    out = proc.stdout + proc.stderr
    assert WRONG not in out and real not in out
    assert "***" in proc.stdout.splitlines()[0]


def test_closed_port_fails_tcp_with_advice(target_dsn):
    port = free_port()  # nothing listens there
    parts = urlsplit(target_dsn)
    dsn = urlunsplit(parts._replace(netloc=parts.netloc.rpartition(":")[0] + f":{port}"))
    proc = doctor("--target", dsn)
    assert proc.returncode == 1
    checks = lines(proc.stdout)
    assert checks["tcp"].startswith("FAIL")
    assert "nothing listens there" in checks["tcp"]
    assert checks["rest"].startswith("skip")


def test_unverifiable_certificate_fails_then_passes_with_its_ca(tls_pg):  # noqa: F811
    proc = doctor("--target", tls_pg.dsn(sslmode="verify-full"))
    assert proc.returncode == 1, proc.stdout
    tls = lines(proc.stdout)["tls"]
    assert tls.startswith("FAIL") and "does not verify" in tls and "sslrootcert" in tls

    by_ip = tls_pg.dsn(sslmode="verify-full", sslrootcert=str(tls_pg.ca)).replace(
        "@localhost:", "@127.0.0.1:")
    proc = doctor("--target", by_ip)
    assert proc.returncode == 1, proc.stdout
    assert "not valid for host '127.0.0.1'" in proc.stdout, proc.stdout

    proc = doctor("--target", tls_pg.dsn(sslmode="verify-full", sslrootcert=str(tls_pg.ca)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = lines(proc.stdout)
    assert "certificate verified against sslrootcert" in checks["tls"]
    assert checks["auth"].startswith("ok ")
    assert tls_pg.password not in proc.stdout + proc.stderr


def test_no_target_checks_the_embedded_default_as_every_command_does(embedded_config):
    _home, conf = embedded_config
    proc = doctor("--config", str(conf))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "embedded Postgres" in proc.stderr
    assert lines(proc.stdout)["auth"].startswith("ok ")  # it reached and logged in to it
