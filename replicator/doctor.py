"""``replicator doctor``: the connection diagnostics a user runs first.

One line per check, each saying ok or what to do: DNS, TCP, TLS (offered? verified against the
system CA or ``sslrootcert``? host name?), authentication (wrong password, unknown database and
missing pg_hba entry told apart), server version, pooled vs direct endpoint, connection slots,
the privileges the replicator needs, a create + COPY + rollback, round-trip latency and a
transaction. A failed step skips the checks that depend on it. The password never appears: the
DSN is printed masked and every message passes through ``log.scrub``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import ssl
import statistics
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg

from . import log
from .dsn import TargetDSN
from .errors import ReplicatorError
from .source import open_source
from .source_write import journal_advice

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
MIN_VERSION = 150000
SLOW_RTT_MS = 50.0


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    ms: float | None = None


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


def _err(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return log.scrub(text.splitlines()[0] if text else type(exc).__name__)


async def run(target: TargetDSN, *, schema: str = "public", timeout: float = 10.0,
              fmt: str = "text", source: Path | None = None) -> int:
    """Run every check, print the report; 0 when nothing failed, else 1."""
    log.add_secret(target.password)
    checks = source_checks(source) if source is not None else []
    checks += await diagnose(target, schema=schema, timeout=timeout)
    print(render(checks, target, fmt))
    return 1 if any(c.status == "fail" for c in checks) else 0


def render(checks: list[Check], target: TargetDSN, fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps({"target": target.masked, "ok": not any(c.status == "fail"
                                                                 for c in checks),
                           "checks": [asdict(c) for c in checks]}, indent=2)
    lines = [f"doctor: {target.masked}"]
    for c in checks:
        timing = f" ({c.ms} ms)" if c.ms is not None else ""
        lines.append(f"{c.status.upper() if c.status == 'fail' else c.status:5} "
                     f"{c.name:14} {log.scrub(c.detail)}{timing}")
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    lines.append(f"{failed} failed, {warned} warning(s), "
                 f"{sum(c.status == 'ok' for c in checks)} ok")
    return "\n".join(lines)


def source_checks(path: Path) -> list[Check]:
    """The SQLite file: readable as a database, and what its journal mode means for the app."""
    t0 = time.perf_counter()
    try:
        conn = open_source(path, readonly=True)
    except ReplicatorError as exc:
        return [Check("source", "fail", str(exc), _ms(t0))]
    try:
        checks = [Check("source", "ok", f"{path} is a SQLite database", _ms(t0))]
        status, detail = journal_advice(conn, path)
        checks.append(Check("journal", status, detail))
    finally:
        conn.close()
    return checks


async def diagnose(target: TargetDSN, *, schema: str = "public", timeout: float = 10.0
                   ) -> list[Check]:
    checks = [_dsn_check(target)]
    if target.host.startswith("/"):
        checks.append(Check("network", "skip", f"unix socket {target.host}: no DNS, TCP or TLS"))
        addrs: list[str] = []
    else:
        dns, addrs = await _dns(target, timeout)
        checks.append(dns)
        if dns.status == "fail":
            return checks + [_skipped("tcp", "tls", "auth")]
        tcp, addrs = await _tcp(target, addrs, timeout)
        checks.append(tcp)
        if tcp.status == "fail":
            return checks + [_skipped("tls", "auth")]
        tls = await _tls(target, addrs[0], timeout)
        checks.append(tls)
        if tls.status == "fail":
            return checks + [_skipped("auth")]
    auth, conn = await _auth(target, timeout)
    checks.append(auth)
    if conn is None:
        return checks
    try:
        checks += await _server_checks(conn, target, schema)
    finally:
        await conn.close()
    return checks


def _skipped(*names: str) -> Check:
    return Check("rest", "skip", f"not attempted ({', '.join(names)}, ...): fix the failure "
                 "above first")


def _dsn_check(target: TargetDSN) -> Check:
    notes = [f"host {target.host}, port {target.port}, database {target.database}, "
             f"user {target.user or '(none)'}"]
    if target.dropped:
        notes.append(f"{', '.join(target.dropped)} removed (asyncpg would send it to the server "
                     "as a startup parameter)")
    if target.password is None:
        notes.append("no password in the DSN or PGPASSWORD")
    return Check("dsn", "ok", "; ".join(notes))


async def _dns(target: TargetDSN, timeout: float) -> tuple[Check, list[str]]:
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM), timeout)
    except (OSError, TimeoutError) as exc:
        return Check("dns", "fail", f"cannot resolve {target.host!r} ({_err(exc)}): check the "
                     "host name in the DSN and the machine's DNS"), []
    addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
    return Check("dns", "ok", f"{target.host} -> {', '.join(addrs)}", _ms(t0)), addrs


async def _tcp(target: TargetDSN, addrs: list[str], timeout: float
               ) -> tuple[Check, list[str]]:
    errors = []
    for addr in addrs:
        t0 = time.perf_counter()
        try:
            _r, writer = await asyncio.wait_for(asyncio.open_connection(addr, target.port),
                                                timeout)
        except ConnectionRefusedError:
            errors.append(f"{addr}: refused")
            continue
        except (OSError, TimeoutError) as exc:
            errors.append(f"{addr}: {_err(exc) if not isinstance(exc, TimeoutError) else 'timeout'}")
            continue
        ms = _ms(t0)
        writer.close()
        await writer.wait_closed()
        return Check("tcp", "ok", f"connected to {addr}:{target.port}", ms), [addr] + [
            a for a in addrs if a != addr]
    advice = ("nothing listens there: check the port (Postgres uses 5432) and that the server "
              "is running" if all(e.endswith("refused") for e in errors) else
              "no answer: a firewall, a wrong host, or no route; Neon needs outbound TCP 5432")
    return Check("tcp", "fail", f"cannot connect to port {target.port} "
                 f"({'; '.join(errors)}): {advice}"), []


def _must_verify(target: TargetDSN) -> bool:
    """What the replicator enforces (see dsn.TargetDSN.ssl_context)."""
    mode = target.sslmode
    return mode in ("verify-ca", "verify-full") or (not target.loopback and mode != "disable")


def _needs_tls(target: TargetDSN) -> bool:
    return target.sslmode in ("require", "verify-ca", "verify-full") or not target.loopback


def _probe(addr: str, target: TargetDSN, ctx: ssl.SSLContext, timeout: float) -> str:
    """SSLRequest then a handshake; returns the TLS version + cipher, or raises."""
    with socket.create_connection((addr, target.port), timeout=timeout) as sock:
        sock.sendall(SSL_REQUEST)
        answer = sock.recv(1)
        if answer != b"S":
            raise _NoTLS()
        # an IP address is matched against the certificate's IP entries; no SNI is sent for it
        with ctx.wrap_socket(sock, server_hostname=target.host.strip("[]")) as tls:
            cipher = tls.cipher()
            return f"{tls.version()}, {cipher[0] if cipher else '?'}"


class _NoTLS(Exception):
    """The server answered the SSLRequest with 'N'."""


def _contexts(target: TargetDSN) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    verifying = ssl.create_default_context(cafile=target.sslrootcert or None)
    if target.sslmode == "verify-ca":
        verifying.check_hostname = False
    lax = ssl.create_default_context()
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE
    return verifying, lax


async def _tls(target: TargetDSN, addr: str, timeout: float) -> Check:
    if target.sslmode == "disable":
        return Check("tls", "warn" if not target.loopback else "ok",
                     "sslmode=disable: no encryption" + ("" if target.loopback else
                                                         " over the network; remove it"))
    ca = f"sslrootcert {target.sslrootcert}" if target.sslrootcert else "the system CA bundle"
    try:
        verifying, lax = _contexts(target)
    except (OSError, ssl.SSLError) as exc:
        return Check("tls", "fail", f"cannot load {ca}: {_err(exc)}")
    t0 = time.perf_counter()
    try:
        info = await asyncio.to_thread(_probe, addr, target, verifying, timeout)
        what = "certificate verified against " + ca + (
            "" if verifying.check_hostname else " (host name not checked: verify-ca)")
        return Check("tls", "ok", f"{info}; {what}", _ms(t0))
    except _NoTLS:
        if _needs_tls(target):
            return Check("tls", "fail", "the server does not offer TLS, but "
                         f"{'sslmode=' + target.sslmode if target.sslmode else 'a remote host'} "
                         "requires it: enable ssl on the server or check the host")
        return Check("tls", "ok", "not offered by the server (loopback: plain connection)")
    except ssl.SSLCertVerificationError as exc:
        return await _unverified(target, addr, timeout, lax, ca, exc)
    except (OSError, ssl.SSLError, TimeoutError, ValueError) as exc:
        return Check("tls", "fail", f"TLS handshake failed: {_err(exc)}")


async def _unverified(target: TargetDSN, addr: str, timeout: float, lax: ssl.SSLContext,
                      ca: str, exc: ssl.SSLCertVerificationError) -> Check:
    reason = exc.verify_message or _err(exc)
    try:
        info = await asyncio.to_thread(_probe, addr, target, lax, timeout)
    except (OSError, ssl.SSLError, _NoTLS) as again:
        return Check("tls", "fail", f"TLS handshake failed: {_err(again)}")
    if "mismatch" in reason.lower():
        detail = (f"{info}; the certificate is not valid for host {target.host!r} ({reason}): "
                  "connect with the host name the certificate names")
    else:
        detail = (f"{info}; the certificate does not verify against {ca} ({reason}): pass "
                  "sslrootcert=/path/to/ca.pem with the CA that signed the server certificate")
    return Check("tls", "fail" if _must_verify(target) else "ok",
                 detail if _must_verify(target) else
                 f"{info}; not verified ({reason}); fine for loopback without sslmode=verify-*")


async def _auth(target: TargetDSN, timeout: float
                ) -> tuple[Check, asyncpg.Connection | None]:
    kwargs = {"dsn": target.dsn, "timeout": timeout, "ssl": target.ssl_context(),
              "server_settings": {"application_name": "replicator-doctor"}}
    if target.password is not None:
        kwargs["password"] = target.password
    if target.pooled:
        kwargs["statement_cache_size"] = 0
    t0 = time.perf_counter()
    try:
        conn = await asyncpg.connect(**kwargs)
    except asyncpg.InvalidPasswordError:
        return Check("auth", "fail", f"password authentication failed for user "
                     f"{target.user!r}: the password is wrong (or the role does not exist); "
                     "reset it (Neon: console > Roles) and update the DSN"), None
    except asyncpg.InvalidCatalogNameError:
        return Check("auth", "fail", f"database {target.database!r} does not exist: create it "
                     "or fix the database name at the end of the DSN"), None
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        msg = _err(exc)
        if "pg_hba" in msg:
            advice = ("the server has no pg_hba.conf entry for this host, user and database: "
                      "add one, or connect with TLS if only hostssl entries exist")
        else:
            advice = "the server refuses this role"
        return Check("auth", "fail", f"{advice} ({msg})"), None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ssl.SSLError,
            TimeoutError) as exc:
        state = getattr(exc, "sqlstate", None)
        return Check("auth", "fail", f"cannot log in: {type(exc).__name__}: {_err(exc)}"
                     + (f" [{state}]" if state else "")), None
    return Check("auth", "ok", f"logged in as {target.user!r} to {target.database!r}",
                 _ms(t0)), conn


async def _server_checks(conn: asyncpg.Connection, target: TargetDSN, schema: str
                         ) -> list[Check]:
    out = [await _version(conn), _endpoint(target), await _read_write(conn),
           await _slots(conn)]
    out += await _privileges(conn, schema)
    out += [await _copy_test(conn, schema), await _latency(conn), await _transaction(conn)]
    return out


async def _version(conn: asyncpg.Connection) -> Check:
    num = int(await conn.fetchval("SHOW server_version_num"))
    text = await conn.fetchval("SHOW server_version")
    if num < MIN_VERSION:
        return Check("server", "warn", f"Postgres {text} is older than 15; upgrade if you can "
                     "(Neon's default is 17)")
    return Check("server", "ok", f"Postgres {text} (Neon's default is 17)")


def _endpoint(target: TargetDSN) -> Check:
    if target.pooled:
        return Check("endpoint", "warn", "a -pooler host (PgBouncer, transaction mode): use the "
                     "direct endpoint (the host without -pooler) for migrations")
    return Check("endpoint", "ok", "direct endpoint (not a -pooler host)")


async def _read_write(conn: asyncpg.Connection) -> Check:
    standby = await conn.fetchval("SELECT pg_is_in_recovery()")
    read_only = await conn.fetchval("SHOW transaction_read_only")
    if standby or read_only == "on":
        return Check("read-write", "fail", "this server is read-only (a replica or standby): "
                     "use the primary, read-write endpoint")
    return Check("read-write", "ok", "primary, accepts writes")


async def _slots(conn: asyncpg.Connection) -> Check:
    limit = int(await conn.fetchval("SHOW max_connections"))
    used = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                               "'client backend'")
    free = limit - used
    status = "ok" if free >= 5 else "warn"
    detail = f"max_connections {limit}, {used} in use"
    if status == "warn":
        detail += ": fewer than 5 free; the replicator needs 2 to 4"
    return Check("connections", status, detail)


async def _privileges(conn: asyncpg.Connection, schema: str) -> list[Check]:
    role = await conn.fetchval("SELECT current_user")
    db = await conn.fetchval("SELECT current_database()")
    can_db = await conn.fetchval("SELECT has_database_privilege(current_database(), 'CREATE')")
    own = await conn.fetchval("SELECT to_regnamespace('_replicator') IS NOT NULL")
    own_ok = own and await conn.fetchval(
        "SELECT has_schema_privilege('_replicator', 'CREATE')")
    if can_db or own_ok:
        book = Check("privileges", "ok", f"{role} can create schema _replicator" if not own
                     else f"{role} can write schema _replicator")
    else:
        book = Check("privileges", "fail", f"{role} cannot create schema _replicator: run "
                     f"GRANT CREATE ON DATABASE {db} TO {role} (or CREATE SCHEMA _replicator "
                     f"AUTHORIZATION {role})")
    exists = await conn.fetchval("SELECT to_regnamespace($1) IS NOT NULL", schema)
    if not exists:
        target = Check("schema", "ok" if can_db else "fail",
                       f"schema {schema} does not exist; "
                       + ("it will be created" if can_db else f"create it for {role}"))
    elif await conn.fetchval("SELECT has_schema_privilege($1, 'CREATE') AND "
                             "has_schema_privilege($1, 'USAGE')", schema):
        target = Check("schema", "ok", f"{role} can create tables in schema {schema}")
    else:
        target = Check("schema", "fail", f"{role} cannot create tables in schema {schema}: run "
                       f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {role} (Postgres 15+ no "
                       "longer grants CREATE on public to everyone)")
    return [book, target]


async def _copy_test(conn: asyncpg.Connection, schema: str) -> Check:
    """Create a table, COPY three rows into it, count them, roll everything back."""
    name = f"_replicator_doctor_{secrets.token_hex(4)}"
    t0 = time.perf_counter()
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'CREATE TABLE "{schema}"."{name}" (id bigint, t text)')
        await conn.copy_records_to_table(name, schema_name=schema,
                                         records=[(1, "a"), (2, None), (3, "c")])
        n = await conn.fetchval(f'SELECT count(*) FROM "{schema}"."{name}"')
    except asyncpg.PostgresError as exc:
        return Check("copy", "fail", f"create table + COPY failed: {_err(exc)} "
                     f"[{exc.sqlstate}]")
    finally:
        await tx.rollback()
    ok = n == 3
    return Check("copy", "ok" if ok else "fail",
                 "created a table, COPY wrote 3 rows, rolled back" if ok
                 else f"COPY wrote {n} rows instead of 3", _ms(t0))


async def _latency(conn: asyncpg.Connection) -> Check:
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        await conn.fetchval("SELECT 1")
        times.append((time.perf_counter() - t0) * 1000)
    med = round(statistics.median(times), 2)
    if med > SLOW_RTT_MS:
        return Check("latency", "warn", f"median round trip {med} ms over 10 queries: run the "
                     "replicator close to the database (same region)")
    return Check("latency", "ok", f"median round trip {med} ms over 10 queries")


async def _transaction(conn: asyncpg.Connection) -> Check:
    t0 = time.perf_counter()
    try:
        async with conn.transaction(isolation="repeatable_read"):
            await conn.execute("SET LOCAL lock_timeout = '5s'")
            xid = await conn.fetchval("SELECT pg_current_xact_id()::text")
    except asyncpg.PostgresError as exc:
        return Check("transaction", "fail", f"a transaction failed: {_err(exc)} "
                     f"[{exc.sqlstate}]")
    return Check("transaction", "ok", f"repeatable-read transaction {xid} committed", _ms(t0))
