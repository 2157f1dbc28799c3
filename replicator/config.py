"""Configuration in three steps: defaults, parse (TOML with ${VAR} expansion), validate.

The result is a frozen ``Config``. Unknown keys are refused, and every error names the field
and the offending value, so a typo in a service's config fails at start, not at 3 a.m.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

TYPE_OVERRIDES = (
    "bigint",
    "double precision",
    "numeric",
    "text",
    "bytea",
    "boolean",
    "timestamptz",
    "timestamp",
    "date",
    "jsonb",
    "json",
)
NUMERIC_PS = re.compile(r"numeric\((\d{1,4}),\s*(\d{1,4})\)")  # type = "numeric(10,2)"
BAD_VALUE_POLICIES = ("quarantine", "fail")
# When the change log is pruned while streaming (source_write explains the locking):
# auto: rollback-journal files at quiet moments (safe), WAL files only at cutover (no write at
# all while streaming); quiet: WAL files at quiet moments too (a small stated risk); cutover: never
# before cutover.
PRUNE_POLICIES = ("auto", "quiet", "cutover")


SCHEMA_MODES = ("create", "existing")


@dataclass(frozen=True)
class ColumnOverride:
    type: str | None = None
    on_bad_value: str | None = None
    target: str | None = None  # existing schema: the target column's name, when it differs
    round_to_scale: bool | str | None = None  # REALs rounded into numeric(p,s) (conventions)
    epoch: str | None = None  # numbers in a timestamp column: "s", "ms", "us" or "julian"


@dataclass(frozen=True)
class Config:
    """Every setting, validated (``build``); frozen so no stage can change it under another."""
    source: Path
    target_url: str | None = None
    target_schema: str = "public"
    state_dir: Path | None = None
    embedded_dir: Path | None = None
    busy_timeout_ms: int = 5000
    quiet_write_timeout: float = 30.0
    poll_interval: float = 0.25
    batch_interval: float = 0.1
    force_polling: bool = False
    snapshot_method: str = "copy"
    snapshot_workers: int = max(1, min(8, os.cpu_count() or 1))
    backup: bool = True
    backup_dir: Path | None = None
    batch_page: int = 50000
    prefetch_limit: int = 20000
    prune_chunk: int = 5000
    prune: str = "auto"
    prune_min_rows: int = 50_000
    identifiers: str = "lower"
    # "create": the replicator creates the target tables from the plan; "existing": it fills
    # tables the application's ORM created (see existing.py)
    schema_mode: str = "create"
    round_to_scale: bool | str = False  # true (the framework's rule), "django", "activerecord", "exact"
    on_bad_value: str = "quarantine"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    metrics_addr: str | None = "127.0.0.1:9753"
    ready_max_lag: float = 30.0
    log_level: str = "info"
    log_format: str = "auto"
    summary_interval: float = 30.0
    tls_verify: bool = True
    pooled: bool | None = None  # None: decide from the host name (-pooler)
    connect_timeout: float = 15.0
    dead_link_timeout: float = 30.0
    drain_timeout: float = 30.0
    batch_timeout: float = 300.0
    follow_drops: bool = False
    fallback: bool = False  # cutover opens the fallback window (reverse capture on Postgres)
    verify_interval: float = 6 * 3600.0
    verify_rate: float = 20_000.0
    verify_workers: int = max(1, min(8, os.cpu_count() or 1))
    columns: dict[tuple[str, str], ColumnOverride] = field(default_factory=dict)
    table_targets: dict[str, str] = field(default_factory=dict)  # SQLite name -> target name

    @property
    def state_path(self) -> Path:
        """Where the replicator keeps its local files (snapshot copy, lock, backups)."""
        if self.state_dir is not None:
            return self.state_dir
        return self.source.with_name(self.source.name + ".replicator")

    @property
    def backup_path(self) -> Path:
        return self.backup_dir if self.backup_dir is not None else self.state_path / "backups"

    def column_override(self, table: str, column: str) -> ColumnOverride:
        return self.columns.get((table, column), ColumnOverride())

    def bad_value_policy(self, table: str, column: str) -> str:
        return self.column_override(table, column).on_bad_value or self.on_bad_value

    def wants_table(self, name: str) -> bool:
        if self.include and name not in self.include:
            return False
        return name not in self.exclude


# (section, key) -> (Config field, type, check)
_SCHEMA: dict[tuple[str, str], tuple[str, type | tuple[type, ...], Any]] = {
    ("source", "path"): ("source", str, None),
    ("source", "state_dir"): ("state_dir", str, None),
    ("source", "busy_timeout_ms"): ("busy_timeout_ms", int, lambda v: 0 <= v <= 600_000),
    ("source", "quiet_write_timeout"): ("quiet_write_timeout", (int, float),
                                        lambda v: 0 <= v <= 86400),
    ("source", "poll_interval"): ("poll_interval", (int, float), lambda v: 0.01 <= v <= 60),
    ("source", "batch_interval"): ("batch_interval", (int, float), lambda v: 0 <= v <= 60),
    ("source", "force_polling"): ("force_polling", bool, None),
    ("source", "snapshot_method"): ("snapshot_method", str, ("copy", "direct")),
    ("source", "snapshot_workers"): ("snapshot_workers", int, lambda v: 1 <= v <= 64),
    ("source", "backup"): ("backup", bool, None),
    ("source", "backup_dir"): ("backup_dir", str, None),
    ("target", "url"): ("target_url", str, None),
    ("target", "schema"): ("target_schema", str, lambda v: 0 < len(v.encode()) <= 63),
    ("target", "embedded_dir"): ("embedded_dir", str, None),
    ("target", "connect_timeout"): ("connect_timeout", (int, float), lambda v: 1 <= v <= 600),
    ("target", "dead_link_timeout"): ("dead_link_timeout", (int, float), lambda v: 1 <= v <= 3600),
    ("target", "tls_verify"): ("tls_verify", bool, None),
    ("target", "pooled"): ("pooled", bool, None),
    ("target", "identifiers"): ("identifiers", str, ("lower", "preserve")),
    ("target", "schema_mode"): ("schema_mode", str, SCHEMA_MODES),
    ("replication", "round_to_scale"): ("round_to_scale", (bool, str),
                                        lambda v: _rounding_ok(v)),
    ("replication", "batch_page"): ("batch_page", int, lambda v: 100 <= v <= 1_000_000),
    ("replication", "prune_chunk"): ("prune_chunk", int, lambda v: 1 <= v <= 1_000_000),
    ("replication", "prune"): ("prune", str, PRUNE_POLICIES),
    ("replication", "prune_min_rows"): ("prune_min_rows", int, lambda v: 1 <= v <= 10**9),
    ("replication", "prefetch_limit"): ("prefetch_limit", int, lambda v: 0 <= v <= 10_000_000),
    ("replication", "on_bad_value"): ("on_bad_value", str, BAD_VALUE_POLICIES),
    ("replication", "include"): ("include", list, None),
    ("replication", "exclude"): ("exclude", list, None),
    ("replication", "drain_timeout"): ("drain_timeout", (int, float), lambda v: 0 < v <= 3600),
    ("replication", "batch_timeout"): ("batch_timeout", (int, float), lambda v: 1 <= v <= 86400),
    ("replication", "follow_drops"): ("follow_drops", bool, None),
    ("cutover", "fallback"): ("fallback", bool, None),
    ("verify", "interval"): ("verify_interval", (int, float), lambda v: v >= 0),
    ("verify", "rate"): ("verify_rate", (int, float), lambda v: v > 0),
    ("verify", "workers"): ("verify_workers", int, lambda v: 1 <= v <= 64),
    ("metrics", "addr"): ("metrics_addr", str, None),
    ("metrics", "ready_max_lag"): ("ready_max_lag", (int, float), lambda v: v > 0),
    ("log", "level"): ("log_level", str, ("debug", "info", "warning", "error")),
    ("log", "format"): ("log_format", str, ("auto", "json", "console")),
    ("log", "summary_interval"): ("summary_interval", (int, float), lambda v: v > 0),
}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(text: str, where: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is None:
                raise ConfigError(f"{where}: environment variable ${{{name}}} is not set")
            return default
        return value

    return _VAR.sub(repl, text)


def load_file(path: Path) -> dict[str, Any]:
    """Parse a TOML config file into ``{field: value}`` (not yet validated)."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for section, body in raw.items():
        if section == "tables":
            values["columns"], values["table_targets"] = _parse_tables(body)
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"config: [{section}] must be a table, got {type(body).__name__}")
        for key, value in body.items():
            spec = _SCHEMA.get((section, key))
            if spec is None:
                raise ConfigError(f"config: unknown key {section}.{key}")
            values[spec[0]] = _check(f"{section}.{key}", value, spec)
    return values


def _check(name: str, value: Any, spec: tuple[str, Any, Any]) -> Any:
    _field, typ, check = spec
    if isinstance(value, str):
        value = expand_vars(value, name)
    if typ is not bool and not (isinstance(typ, tuple) and bool in typ) and isinstance(value, bool):
        raise ConfigError(f"{name}: expected {_type_name(typ)}, got a boolean ({value!r})")
    if not isinstance(value, typ):
        raise ConfigError(f"{name}: expected {_type_name(typ)}, got {type(value).__name__} {value!r}")
    if isinstance(check, tuple) and value not in check:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(repr, check))}")
    if callable(check) and not check(value):
        raise ConfigError(f"{name}: value {value!r} is out of range")
    if typ is list:
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of table names (strings)")
        return tuple(value)
    return value


def _type_name(typ: Any) -> str:
    if isinstance(typ, tuple) and bool in typ:
        return "true, false or a rule name"
    if isinstance(typ, tuple):
        return "a number"
    return {str: "a string", int: "an integer", bool: "true or false", list: "a list"}[typ]


def _parse_tables(body: Any) -> tuple[dict[tuple[str, str], ColumnOverride], dict[str, str]]:
    out: dict[tuple[str, str], ColumnOverride] = {}
    renames: dict[str, str] = {}
    if not isinstance(body, dict):
        raise ConfigError("config: [tables] must be a table")
    for table, tbody in body.items():
        extra = set(tbody) - {"columns", "target"} if isinstance(tbody, dict) else {"?"}
        if extra:
            raise ConfigError(f"config: tables.{table}: unknown key(s) {sorted(extra)}")
        if "target" in tbody:
            renames[table] = _name(f"tables.{table}.target", tbody["target"])
        for column, cbody in tbody.get("columns", {}).items():
            where = f"tables.{table}.columns.{column}"
            if not isinstance(cbody, dict):
                raise ConfigError(f"config: {where} must be a table")
            unknown = set(cbody) - {"type", "on_bad_value", "target", "round_to_scale", "epoch"}
            if unknown:
                raise ConfigError(f"config: {where}: unknown key(s) {sorted(unknown)}")
            typ, policy = cbody.get("type"), cbody.get("on_bad_value")
            if typ is not None and typ not in TYPE_OVERRIDES and not _numeric_ps(typ):
                raise ConfigError(f"config: {where}.type: {typ!r} is not one of {TYPE_OVERRIDES} "
                                  "nor numeric(p,s) with 0 <= s <= p <= 1000")
            if policy is not None and policy not in BAD_VALUE_POLICIES:
                raise ConfigError(
                    f"config: {where}.on_bad_value: {policy!r} is not one of {BAD_VALUE_POLICIES}"
                )
            rounding = cbody.get("round_to_scale")
            if rounding is not None and not _rounding_ok(rounding):
                raise ConfigError(f"config: {where}.round_to_scale: expected true, false, "
                                  f"\"django\", \"activerecord\" or \"exact\", got {rounding!r}")
            target = _name(f"{where}.target", cbody["target"]) if "target" in cbody else None
            epoch = cbody.get("epoch")
            if epoch is not None and epoch not in ("s", "ms", "us", "julian"):
                raise ConfigError(f"config: {where}.epoch: {epoch!r} is not one of 's', 'ms', "
                                  "'us', 'julian'")
            out[(table, column)] = ColumnOverride(type=typ, on_bad_value=policy, target=target,
                                                  round_to_scale=rounding, epoch=epoch)
    return out, renames


def _rounding_ok(value: Any) -> bool:
    return isinstance(value, bool) or value in ("django", "activerecord", "exact")


def _numeric_ps(typ: Any) -> bool:
    m = NUMERIC_PS.fullmatch(typ) if isinstance(typ, str) else None
    return m is not None and 0 < int(m[1]) <= 1000 and int(m[2]) <= int(m[1])


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value.encode()) <= 63:
        raise ConfigError(f"config: {where}: expected a Postgres name (1 to 63 bytes), got {value!r}")
    return value


def target_from_env() -> str | None:
    return os.environ.get("REPLICATOR_TARGET_URL") or os.environ.get("DATABASE_URL") or None


def build(
    config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """Defaults, then the file, then CLI overrides (None means "not given"), then the env target."""
    values: dict[str, Any] = load_file(config_file) if config_file else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    if not values.get("target_url"):
        values["target_url"] = target_from_env()
    if not values.get("source"):
        raise ConfigError("--source: a SQLite database path is required (or source.path in config)")
    for key in ("source", "state_dir", "embedded_dir", "backup_dir"):
        if values.get(key):
            values[key] = Path(values[key]).expanduser()
        else:
            values.pop(key, None)
    if values.get("metrics_addr") in ("", "off", "none"):
        values["metrics_addr"] = None
    if values.get("metrics_addr"):
        parse_addr(values["metrics_addr"])
    return Config(**values)


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--metrics-addr: expected HOST:PORT, got {addr!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
