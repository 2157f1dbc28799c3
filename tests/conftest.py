"""Test tiers share one real Postgres per session: the embedded server (started here, as the
product starts it) or ``TEST_DATABASE_URL``. Every test gets a fresh database owned by a
non-superuser role, as on Neon."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings

from replicator import embedded
from replicator.dsn import build_dsn, parse_target

# Property tests: the suite (and CI) runs a fixed set of generated examples, so a red run is a
# real regression and can be reproduced; `HYPOTHESIS_PROFILE=explore make test` draws new ones
# on every run, to hunt for bugs. A failure found that way becomes a pinned test.
settings.register_profile("suite", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

ROOT = Path(__file__).resolve().parent.parent
CHINOOK = ROOT / "examples" / "chinook.sqlite"


class PgEnv:
    """Creates databases on the test server; hands out owner (non-superuser) DSNs."""

    def __init__(self, admin_dsn: str, owner: str, owner_password: str | None, home=None):
        self.home = home  # the embedded server's home (None with TEST_DATABASE_URL)
        self.admin_dsn = admin_dsn
        self.owner = owner
        self.owner_password = owner_password
        t = parse_target(admin_dsn)
        self.host, self.port = t.host, t.port

    async def create_db(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" OWNER "{self.owner}"')
        finally:
            await conn.close()
        return build_dsn(self.host, self.port, self.owner, self.owner_password, name)

    async def drop_db(self, dsn: str) -> None:
        name = parse_target(dsn).database
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def pg_env():
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        t = parse_target(url)
        yield PgEnv(url, t.user, t.password)
        return
    home = Path(tempfile.mkdtemp(prefix="replicator-test-pg-"))
    os.chmod(home, 0o755)
    emb = embedded.ensure_running(
        home,
        settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                  "max_connections": "200"},
    )
    yield PgEnv(emb.admin_dsn, embedded.OWNER_ROLE, emb.owner_password, home)
    embedded.stop(home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def target_dsn(pg_env):
    dsn = asyncio.run(pg_env.create_db())
    yield dsn
    if os.environ.get("REPLICATOR_TEST_KEEP"):
        print(f"kept target database: {dsn}")
        return
    asyncio.run(pg_env.drop_db(dsn))


@pytest.fixture
def chinook(tmp_path) -> Path:
    path = tmp_path / "chinook.sqlite"
    shutil.copy(CHINOOK, path)
    return path


@pytest.fixture
def embedded_config(tmp_path):
    """A config file whose target.embedded_dir is a private embedded home (the server is
    started on first use by the command under test, stopped and removed afterwards). The home
    lives outside pytest's private tmp: when we are root the server runs as another user."""
    home = Path(tempfile.mkdtemp(prefix="replicator-embedded-"))
    home.chmod(0o755)
    conf = tmp_path / "embedded.toml"
    conf.write_text(f'[target]\nembedded_dir = "{home}"\n')
    yield home, conf
    embedded.stop(home)
    shutil.rmtree(home, ignore_errors=True)

