"""PgBouncer in transaction mode in front of the session's Postgres: what a Neon ``-pooler`` endpoint
is. Uses the system's ``pgbouncer`` binary (Debian package; the CI installs it too).

Use the fixture by importing it into a test module::

    from .pgbouncer import pgbouncer  # noqa: F401  (a pytest fixture)

    async def test_x(pgbouncer, target_dsn):
        conn = await asyncpg.connect(pgbouncer.dsn_for(target_dsn), statement_cache_size=0)

Any database name routes through (``* = host=... port=...``); clients authenticate as the owner role
with SCRAM against an auth_file, and PgBouncer logs in to Postgres with the same password. As root
it runs as the ``postgres`` OS user (PgBouncer refuses to run as root), its files in a 0755 temp dir.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from replicator import embedded

from .proxy import rewrite_dsn

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


class PgBouncer:
    """A running PgBouncer: ``.port``, ``.dsn_for(dsn)``, ``.log`` (its log file)."""

    def __init__(self, upstream_host: str, upstream_port: int, user: str, password: str | None,
                 *, pool_mode: str = "transaction", pool_size: int = 10):
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.user, self.password = user, password
        self.pool_mode, self.pool_size = pool_mode, pool_size
        self.host = "127.0.0.1"
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        assert self.dir is not None
        return self.dir / "pgbouncer.log"

    def dsn_for(self, dsn: str) -> str:
        """``dsn`` with its host and port replaced by PgBouncer's (user, password, db kept)."""
        return rewrite_dsn(dsn, self.host, self.port)

    def start(self) -> PgBouncer:
        if not Path(PGBOUNCER).exists():
            pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
        self.dir = Path(tempfile.mkdtemp(prefix="replicator-pgbouncer-"))
        os.chmod(self.dir, 0o755)
        self.port = embedded.free_port()
        auth = self.dir / "userlist.txt"
        auth.write_text(f'"{_quote(self.user)}" "{_quote(self.password or "")}"\n')
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={self.upstream_host} port={self.upstream_port}\n"
            "\n[pgbouncer]\n"
            f"listen_addr = {self.host}\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            f"auth_type = {'scram-sha-256' if self.password else 'trust'}\n"
            f"auth_file = {auth}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            "min_pool_size = 0\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.log}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
            "log_connections = 1\n"
            "log_disconnections = 1\n"
            "server_login_retry = 1\n"
        )
        argv = [PGBOUNCER, str(ini)]
        if os.geteuid() == 0:
            user = embedded.service_user()
            pw = pwd.getpwnam(user)
            for path in (self.dir, auth, ini):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            os.chmod(auth, 0o600)
            argv = ["runuser", "-u", user, "--", *argv]
        self._stderr = open(self.dir / "stderr.txt", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + 20
        while not _listening(self.host, self.port):
            if self.proc.poll() is not None:
                msg = (f"pgbouncer exited {self.proc.returncode}: "
                       f"{(self.dir / 'stderr.txt').read_text()[-2000:]}\n{self._log_tail()}")
                self.stop()
                raise RuntimeError(msg)
            if time.monotonic() > deadline:
                msg = f"pgbouncer did not listen on {self.port}\n{self._log_tail()}"
                self.stop()
                raise RuntimeError(msg)
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            pid = self._pgbouncer_pid()
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)  # runuser passes it on
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    if pid:
                        self._kill_if_ours(pid, signal.SIGKILL)
                    self.proc.kill()
                    self.proc.wait(10)
            if pid:
                self._kill_if_ours(pid, signal.SIGKILL)  # only if it outlived runuser
            self._stderr.close()
            self.proc = None
        if self.dir is not None and not os.environ.get("REPLICATOR_TEST_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def _pgbouncer_pid(self) -> int | None:
        try:
            return int((self.dir / "pgbouncer.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _kill_if_ours(self, pid: int, sig: int) -> None:
        """Signal ``pid`` only while it is still the pgbouncer we started (our ini file)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if str(self.dir / "pgbouncer.ini").encode() in cmdline:
            _kill(pid, sig)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return ""

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def pgbouncer(pg_env):
    """PgBouncer (transaction pooling) in front of the session's Postgres."""
    bouncer = PgBouncer(pg_env.host, pg_env.port, pg_env.owner, pg_env.owner_password)
    bouncer.start()
    yield bouncer
    bouncer.stop()


def _quote(text: str) -> str:
    return text.replace('"', '""')


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
