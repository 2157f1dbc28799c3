"""Target DSN handling: masking, Neon's quirks (channel_binding, -pooler hosts) and TLS policy.

asyncpg forwards unknown DSN keys such as ``channel_binding`` as server startup parameters, and
its ``sslmode=require`` verifies nothing. We parse the DSN ourselves, drop what asyncpg would
mishandle, and build the TLS context explicitly: ``verify-full`` against the system CA bundle (or
``sslrootcert``) for every host that is not loopback.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from .errors import ConfigError

_SSL_KEYS = {"sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl"}
_DROPPED_KEYS = {"channel_binding"}
_VERIFYING = {"verify-ca", "verify-full"}
_VALID_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

MASK = "***"


@dataclass(frozen=True)
class TargetDSN:
    """A parsed target: what to hand asyncpg, and what is safe to print."""

    dsn: str  # DSN without the keys we handle ourselves (still holds the password)
    host: str
    port: int
    database: str
    user: str
    password: str | None
    sslmode: str | None
    sslrootcert: str | None
    dropped: tuple[str, ...] = field(default=())
    pooled: bool = False

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def masked(self) -> str:
        return mask_dsn(self.dsn)

    def ssl_context(self, verify: bool = True) -> ssl.SSLContext | str | bool | None:
        """The ``ssl`` argument for asyncpg under our policy (see module docstring)."""
        mode = self.sslmode
        if mode == "disable":
            return False
        if mode in _VERIFYING or (not self.loopback and verify):
            ctx = ssl.create_default_context(cafile=self.sslrootcert or None)
            if mode == "verify-ca":
                ctx.check_hostname = False
            return ctx
        if mode is None:
            return None if self.loopback else _no_verify_context()
        if mode in ("require", "prefer", "allow"):
            return _no_verify_context() if mode == "require" else mode
        return mode


def _no_verify_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def is_loopback(host: str) -> bool:
    if not host or host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_target(url: str) -> TargetDSN:
    """Parse a ``postgres://`` URL; raise ConfigError naming the problem (never the password)."""
    if not url:
        raise ConfigError("target: empty DSN")
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError(
            f"target: DSN must start with postgres:// or postgresql://, got {parts.scheme or '?'}://"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept, dropped, ssl_args = [], [], {}
    for key, value in query:
        if key in _DROPPED_KEYS:
            dropped.append(key)
        elif key in _SSL_KEYS:
            ssl_args[key] = value
        else:
            kept.append((key, value))
    sslmode = ssl_args.get("sslmode") or os.environ.get("PGSSLMODE") or None
    if sslmode is not None and sslmode not in _VALID_SSLMODES:
        raise ConfigError(f"target: sslmode={sslmode!r} is not one of {sorted(_VALID_SSLMODES)}")
    try:
        port = parts.port or 5432
    except ValueError as exc:
        raise ConfigError(f"target: bad port in DSN ({exc})") from None
    host = unquote(parts.hostname or "") or dict(kept).get("host", "localhost")
    password = unquote(parts.password) if parts.password is not None else None
    password = password if password is not None else os.environ.get("PGPASSWORD")
    user = unquote(parts.username or "") or os.environ.get("PGUSER", "")
    database = unquote(parts.path.lstrip("/")) or user
    clean = urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote)))
    return TargetDSN(
        dsn=clean,
        host=host,
        port=port,
        database=database,
        user=user,
        password=password,
        sslmode=sslmode,
        sslrootcert=ssl_args.get("sslrootcert") or os.environ.get("PGSSLROOTCERT") or None,
        dropped=tuple(dropped),
        pooled="-pooler." in host or host.endswith("-pooler"),
    )


def mask_dsn(url: str) -> str:
    """The DSN with any password replaced by ``***``; safe for logs, status and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable DSN>"
    if parts.password is None:
        netloc = parts.netloc
    else:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}"
    query = [
        (k, MASK if k in ("password", "sslpassword") else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def build_dsn(host: str, port: int, user: str, password: str | None, database: str) -> str:
    cred = quote(user, safe="")
    if password:
        cred += ":" + quote(password, safe="")
    return f"postgresql://{cred}@{host}:{port}/{quote(database, safe='')}"
