"""A second embedded Postgres with TLS on, its certificate signed by a throw-away CA, for the
doctor's TLS checks (verification against the system CA fails; with ``sslrootcert`` it passes).

The certificates come from the ``openssl`` CLI: a self-signed CA and a server certificate for
``localhost``. The server runs as an unprivileged user when we are root, so the key is handed
to that user with mode 0600, as Postgres requires.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from replicator import embedded
from replicator.dsn import build_dsn


@dataclass(frozen=True)
class TlsServer:
    port: int
    password: str
    ca: Path

    def dsn(self, **query: str) -> str:
        base = build_dsn("localhost", self.port, embedded.OWNER_ROLE, self.password,
                         embedded.DEFAULT_DB)
        return base + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(where: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.crt, server.key): a CA and a server certificate for localhost."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "2", "-subj", "/CN=replicator test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=where)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=localhost", cwd=where)
    (where / "server.ext").write_text(
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
             cwd=where)
    return where / "ca.pem", where / "server.crt", where / "server.key"


def _server_user() -> str | None:
    """The user embedded Postgres runs as (None when we are not root)."""
    return embedded.service_user() if os.geteuid() == 0 else None


@pytest.fixture(scope="module")
def tls_pg(pg_env):  # pg_env first: the session server is up and the service user exists
    home = Path(tempfile.mkdtemp(prefix="replicator-tls-pg-"))
    os.chmod(home, 0o755)
    certs = home / "tls"
    certs.mkdir()
    os.chmod(certs, 0o755)
    ca, crt, key = make_certs(certs)
    os.chmod(crt, 0o644)
    os.chmod(key, 0o600)
    user = _server_user()
    if user:
        pw = pwd.getpwnam(user)
        os.chown(key, pw.pw_uid, pw.pw_gid)
        os.chown(crt, pw.pw_uid, pw.pw_gid)
    emb = embedded.ensure_running(home, settings={
        "ssl": "on", "ssl_cert_file": f"'{crt}'", "ssl_key_file": f"'{key}'",
        "fsync": "off", "max_connections": "20",
    })
    try:
        yield TlsServer(emb.port, emb.owner_password, ca)
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)
