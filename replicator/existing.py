"""Filling a schema the application's ORM made (``target.schema_mode = "existing"``).

Teams migrating an application let its ORM own the Postgres schema: they run ``manage.py
migrate``, ``alembic upgrade head``, ``rails db:schema:load`` or ``prisma migrate deploy`` against
Neon, and the replicator fills those tables. The rules, stated in ``plan --target`` per column:

* **Names.** A SQLite table or column matches the target one of the same name as Postgres folds it
  (``target.identifiers``), or the name given in config (``tables.T.target``,
  ``tables.T.columns.C.target``). Column order is never assumed. A SQLite column without a target
  column is refused (say which migration is missing), and so is a target-only column that is NOT
  NULL without a default (the replicator could not fill it). A table needs a key SQLite declares
  (a primary key or INTEGER PRIMARY KEY): that is how both sides name a row.
* **Types.** The target column's type is the contract. Each value goes in when its meaning
  survives exactly (``convert``: uuid from canonical text, 32 hex digits or 16 bytes; jsonb from
  JSON text; boolean from 0/1 and the usual words; timestamps from ISO text and unix seconds;
  numeric(p,s) from a REAL only when its shortest decimal form fits the scale, unless rounding is
  configured; varchar(n) and integer widths checked; enum labels checked). Anything else is
  quarantined (or fails, ``on_bad_value``) with table, column, key and value; never truncated.
  Verification compares in the target type's meaning (jsonb parsed, uuid and numeric by value).
* **The target's schema is not changed**, with one exception for the migration window: its
  foreign keys touching the replicated tables are dropped while the replicator fills the tables
  (it copies tables in parallel and applies a batch as deletes then inserts, which a foreign key
  would refuse midway, or worse, an ON DELETE CASCADE would act on). Their definitions are kept in
  ``_replicator.state`` and they come back at cutover exactly as they were (added NOT VALID inside
  the freeze, then VALIDATEd), or at ``uninstall``.
* **Sequences** (serial and identity columns) are set past the copied keys after each table's
  copy (so the ORM's own migrations during the window do not collide) and again at cutover.
* **The ORM's bookkeeping tables** (``MIGRATION_RECORDS``, and Django's content types and
  permissions) already hold rows on the target: the ORM wrote them when it created the schema.
  Before anything is written the replicator checks that both sides record the same migrations
  and refuses, naming the difference, when they do not (the app would think a migration missing
  or applied twice). Then SQLite's rows replace the target's: the ids in SQLite are the ones the
  application's data refers to (a permission's content type, a generic relation). Any other
  target table that holds rows is refused: the replicator does not merge into data it did not
  write.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from . import ddl, state
from .census import ColumnCensus, TableCensus
from .config import Config
from .conventions import rounding
from .convert import accepts, key_to_json
from .errors import AwaitingTarget, StartupError
from .objects import table_objects
from .plans import ColumnPlan, TablePlan, pg_ident
from .quoting import qi, qualified
from .schema import plan_table
from .source import KEY_ROWID, Column, Table

# ORM migration records: table -> the columns naming one applied migration
MIGRATION_RECORDS = {
    "django_migrations": ("app", "name"),
    "alembic_version": ("version_num",),
    "schema_migrations": ("version",),  # Rails
    "_prisma_migrations": ("migration_name",),
    "knex_migrations": ("name",),
    "SequelizeMeta": ("name",),
    "__drizzle_migrations": ("hash",),
    "__EFMigrationsHistory": ("MigrationId",),
}
# Tables an ORM fills itself when it creates the schema (besides the migration records)
ORM_SEEDED = {"django_content_type", "auth_permission", "django_site", "ar_internal_metadata"}


@dataclass(frozen=True)
class TargetColumn:
    name: str
    pg_type: str  # format_type(): what the plan names and casts to
    base: str  # pg_type.typname (enums: "enum")
    notnull: bool
    has_default: bool  # a DEFAULT, identity or serial: the column fills itself
    generated: bool
    length: int | None = None  # varchar(n) / char(n)
    precision: int | None = None  # numeric(p,s)
    scale: int | None = None
    labels: tuple[str, ...] = ()  # enum labels


@dataclass(frozen=True)
class TargetTable:
    name: str
    columns: dict[str, TargetColumn]


_CATALOG_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS pg_type, t.typname,
       t.typtype = 'e' AS is_enum, a.atttypmod, a.attnotnull,
       a.atthasdef OR a.attidentity <> '' AS has_default, a.attgenerated <> '' AS generated,
       CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel FROM pg_enum e
            WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END AS labels
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
ORDER BY c.relname, a.attnum
"""


async def read_catalog(conn: asyncpg.Connection, schema: str) -> dict[str, TargetTable]:
    """The tables of the target schema as the ORM made them (the replicator's own excluded)."""
    tables: dict[str, dict[str, TargetColumn]] = {}
    for r in await conn.fetch(_CATALOG_SQL, schema):
        mod = r["atttypmod"]
        base = "enum" if r["is_enum"] else r["typname"]
        length = mod - 4 if base in ("varchar", "bpchar") and mod >= 4 else None
        precision = scale = None
        if base == "numeric" and mod >= 4:
            precision, scale = ((mod - 4) >> 16) & 0xFFFF, (mod - 4) & 0xFFFF
        tables.setdefault(r["relname"], {})[r["attname"]] = TargetColumn(
            name=r["attname"], pg_type=r["pg_type"], base=base, notnull=r["attnotnull"],
            has_default=r["has_default"], generated=r["generated"], length=length,
            precision=precision, scale=scale, labels=tuple(r["labels"] or ()))
    return {name: TargetTable(name, cols) for name, cols in tables.items()}


def target_table_name(table: str, cfg: Config) -> str:
    return cfg.table_targets.get(table) or pg_ident(table, cfg.identifiers)


def target_column_name(table: str, column: str, cfg: Config) -> str:
    return cfg.column_override(table, column).target or pg_ident(column, cfg.identifiers)


# target type -> (converter id, the rule the plan states)
_RULES: dict[str, tuple[str, str]] = {
    "int8": ("bigint", "integers"),
    "int4": ("int4", "integers within 32 bits"),
    "int2": ("int2", "integers within 16 bits"),
    "float8": ("float", "reals, and integers a double holds exactly"),
    "float4": ("float4", "reals a 4-byte float holds exactly"),
    "numeric": ("numeric", "integers and reals in their shortest exact decimal form"),
    "text": ("text_render", "text; numbers in their shortest exact decimal form"),
    "varchar": ("text_render", "text; numbers in their shortest exact decimal form"),
    "bytea": ("bytea", "BLOBs"),
    "bool": ("bool_lenient", "0/1 and true/false, t/f, yes/no, on/off (any case)"),
    "timestamptz": ("ts_any", "ISO-8601 text in any layout (without a zone: UTC, as SQLite's "
                              "datetime() and the ORMs write it) and integer unix seconds"),
    "timestamp": ("ts_naive", "ISO-8601 text without a zone, in any layout"),
    "date": ("date_text", "ISO dates YYYY-MM-DD"),
    "time": ("time_text", "HH:MM[:SS[.ffffff]]"),
    "json": ("json", "valid JSON text, kept byte for byte"),
    "jsonb": ("jsonb", "valid JSON text; jsonb keeps the meaning, not the bytes (key order, "
                       "spaces, duplicate keys), and verification compares parsed values"),
    "uuid": ("uuid_any", "canonical UUID text (either case), 32 hex digits (Django's SQLite "
                         "form) or a 16-byte BLOB"),
}


_READS = {"django": "Django reads it (15 digits, then half-even)",
          "activerecord": "ActiveRecord reads it (half-up)",
          "exact": "SQLAlchemy reads it (the float's exact value, half-even)"}


_UNITS = {"s": "unix seconds", "ms": "unix milliseconds", "us": "unix microseconds",
          "julian": "Julian day numbers (only where the timestamp gives back the same float)"}


def conversion(tcol: TargetColumn, rule: str | None, epoch: str | None = None
               ) -> tuple[str, str] | None:
    """The converter id and its rule for a target column; None when no exact conversion exists.
    ``epoch``: the unit of numbers in a timestamp column (config), unix seconds by default."""
    if tcol.base in ("timestamptz", "timestamp") and epoch:
        kind = "ts_any" if tcol.base == "timestamptz" else "ts_naive"
        return (f"{kind}:{epoch}", "ISO-8601 text in any layout" + (" (without a zone: UTC)" if
                kind == "ts_any" else " without a zone") + f", and numbers as {_UNITS[epoch]} "
                "(epoch, set in config)")
    if tcol.base in ("varchar", "bpchar") and tcol.length is not None:
        kind = "varchar" if tcol.base == "varchar" else "char"
        return (f"{kind}:{tcol.length}", f"text of at most {tcol.length} characters; numbers in "
                f"their shortest exact decimal form" + ("; padded with spaces as char(n) stores it"
                                                        if kind == "char" else ""))
    if tcol.base == "numeric" and tcol.scale is not None and tcol.precision is not None:
        conv = f"scaled:{tcol.precision}:{tcol.scale}" + (f":{rule}" if rule else "")
        text = (f"integers and reals within numeric({tcol.precision},{tcol.scale}); a REAL with "
                f"more than {tcol.scale} decimal digits is ")
        return conv, text + (f"rounded to the scale as {_READS[rule]} (round_to_scale)"
                             if rule else
                             "refused (set round_to_scale = true to round it as the app reads it)")
    if tcol.base == "enum":
        return "enum:" + json.dumps(list(tcol.labels)), f"one of the labels {list(tcol.labels)}"
    return _RULES.get(tcol.base)


def fit_table(table: Table, cen: TableCensus | None, cfg: Config,
              catalog: dict[str, TargetTable]) -> tuple[TablePlan | None, list[str]]:
    """The plan that fills the target table; or None and why it cannot (every reason at once)."""
    pg_name = target_table_name(table.name, cfg)
    target = catalog.get(pg_name)
    if target is None:
        return None, [f"table {table.name!r}: the target schema {cfg.target_schema!r} has no "
                      f"table {pg_name!r}; run the application's migrations against the target "
                      "(or map it: tables.<name>.target)"]
    refusals: list[str] = []
    if table.key_kind == KEY_ROWID:
        refusals.append(f"table {table.name!r}: no primary key in SQLite; filling an existing "
                        "table needs a key both sides share")
    columns, used = [], set()
    for col in table.columns:
        tname = target_column_name(table.name, col.name, cfg)
        tcol = target.columns.get(tname)
        if tcol is None:
            refusals.append(f"column {table.name}.{col.name}: the target table {pg_name!r} has no "
                            f"column {tname!r}; apply the migration that adds it to the target "
                            "(or map it: tables.<t>.columns.<c>.target)")
            continue
        used.add(tname)
        fitted, why = _fit_column(table, col, tcol, cen.columns.get(col.name) if cen else None,
                                  cfg)
        if why:
            refusals.append(why)
        columns.append(fitted)
    for tname, tcol in target.columns.items():
        if tname not in used and tcol.notnull and not tcol.has_default and not tcol.generated:
            refusals.append(f"target column {pg_name}.{tname} is NOT NULL without a default and "
                            "SQLite has no column for it: the replicator could not fill it")
    if refusals:
        return None, refusals
    plan = TablePlan(
        name=table.name, pg_name=pg_name, key_kind=table.key_kind, key_columns=table.key_columns,
        rowid_name=table.rowid_name, columns=tuple(columns), indexes=(), key_note=table.key_note,
        notes=(f"existing target table {pg_name}: filled, its schema left as the ORM made it",),
        existing=True,
        declared_key=tuple(c.name for c in sorted((c for c in table.columns if c.pk),
                                                  key=lambda c: c.pk)),
    )
    # SQLite's indexes stay in the plan, never created (the ORM made the target's): drift follows
    # them, and the applier honours REPLACE's deletes with the unique ones. No object (CHECK,
    # foreign key, trigger, view) is translated: the target has its own.
    return replace(plan, indexes=table_objects(plan, table, cfg).indexes), []


def _fit_column(table: Table, col: Column, tcol: TargetColumn, cen: ColumnCensus | None,
                cfg: Config) -> tuple[ColumnPlan, str | None]:
    override = cfg.column_override(table.name, col.name)
    setting = override.round_to_scale if override.round_to_scale is not None \
        else cfg.round_to_scale
    found = conversion(tcol, rounding(setting, table), override.epoch)
    why = None
    if override.type:
        why = (f"column {table.name}.{col.name}: type overrides do not apply to an existing "
               f"target schema (its type is {tcol.pg_type}); remove tables.{table.name}.columns."
               f"{col.name}.type")
    if found is None:
        why = (f"column {table.name}.{col.name}: no exact conversion into the target type "
               f"{tcol.pg_type}")
        found = ("text", "")
    conv, rule = found
    present = cen.present() if cen else set()
    accepted = accepts(conv)
    problems = tuple(f"{cen.counts[c]} {c.upper()} value(s) have no {tcol.pg_type} form"
                     for c in sorted(present - accepted)) if cen else ()
    return ColumnPlan(
        name=col.name, pg_name=tcol.name, declared=col.declared, affinity="", pg_type=tcol.pg_type,
        conv=conv, notnull=tcol.notnull, generated=col.generated,
        policy=override.on_bad_value or cfg.on_bad_value,
        reason=rule, exact=not problems,
        problems=problems, pinned=True,
        # A column the target computes itself is not written (Postgres refuses values for it).
        generated_sql="(computed by the target)" if tcol.generated else None,
    ), why


def plan_for(table: Table, cen: TableCensus | None, cfg: Config,
             catalog: dict[str, TargetTable] | None, *, streaming: bool = False) -> TablePlan:
    """The one entry to planning a table: the replicator's own schema (``schema.plan_table``), or
    the table the ORM made. A misfit found while streaming waits for the user's migration
    (AwaitingTarget); before the snapshot it stops the start (StartupError)."""
    if cfg.schema_mode != "existing":
        return plan_table(table, cen, cfg)
    assert catalog is not None, "existing schema mode plans against the target's catalog"
    plan, why = fit_table(table, cen, cfg, catalog)
    if plan is not None:
        return plan
    if streaming:
        raise AwaitingTarget("the target schema lacks what SQLite now has (apply the same "
                             "migration to the target; streaming resumes by itself):\n  "
                             + "\n  ".join(why))
    raise StartupError("the target schema does not fit the SQLite file (schema_mode = "
                       "\"existing\"):\n  " + "\n  ".join(why))


def fit_all(tables: list[Table], censuses: dict[str, TableCensus], cfg: Config,
            catalog: dict[str, TargetTable]) -> dict[str, TablePlan]:
    """Plans for every table, or StartupError naming everything that does not fit."""
    plans, refusals = {}, []
    for table in tables:
        plan, why = fit_table(table, censuses.get(table.name), cfg, catalog)
        refusals += why
        if plan is not None:
            plans[table.name] = plan
    if refusals:
        raise StartupError("the target schema does not fit the SQLite file (schema_mode = "
                           "\"existing\"):\n  " + "\n  ".join(refusals))
    return plans


# --- rows the target's own constraints refuse ------------------------------------------------

# A CHECK, NOT NULL or UNIQUE of the ORM's schema that SQLite did not have: the row is named in
# quarantine (with the constraint), never dropped, and the rest of the batch or chunk goes in.
REFUSED_BY_TARGET = (asyncpg.CheckViolationError, asyncpg.NotNullViolationError,
                     asyncpg.UniqueViolationError, asyncpg.ExclusionViolationError)


async def insert_each(conn: asyncpg.Connection, plan: TablePlan, schema: str, columns: list[str],
                      rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Insert rows one at a time, each in a savepoint (after a bulk write the target refused);
    returns the refused ones as quarantine entries (typed key, typed row, column, reason, key)."""
    marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
    sql = (f"INSERT INTO {qualified(schema, plan.pg_name)} ({', '.join(qi(c) for c in columns)}) "
           f"VALUES ({marks})")
    key_pos = [columns.index(plan.column(k).pg_name) for k in plan.key_columns]
    refused = []
    for row in rows:
        try:
            async with conn.transaction():
                await conn.execute(sql, *row)
        except REFUSED_BY_TARGET as exc:
            key = [row[i] for i in key_pos]
            column = _column_of(plan, exc)
            refused.append((key_to_json(key), key_to_json(row), column,
                            f"the target's constraint {exc.constraint_name or '?'} refuses the "
                            f"row ({type(exc).__name__}: {exc})", key))
    return refused


def _column_of(plan: TablePlan, exc: asyncpg.PostgresError) -> str:
    name = getattr(exc, "column_name", None)
    for col in plan.columns:
        if col.pg_name == name:
            return col.name
    return plan.key_columns[0] if plan.key_columns else plan.columns[0].name


# --- what is checked and done in the target before and after the window ---------------------


async def preflight(conn: asyncpg.Connection, cfg: Config, tables: list[Table],
                    source: sqlite3.Connection) -> None:
    """Before the replicator writes anything anywhere: every table and column fits the target,
    and both sides record the same migrations."""
    catalog = await read_catalog(conn, cfg.target_schema)
    recorded = sqlite_migrations(source, {t.name for t in tables})
    problems = []
    try:  # the usual root cause first: the app's migrations are not at the same version
        await check_migrations(conn, cfg.target_schema, cfg, recorded, catalog)
    except StartupError as exc:
        problems.append(str(exc))
    try:
        plans = fit_all(tables, {}, cfg, catalog)
    except StartupError as exc:
        problems.append(str(exc))
        plans = {}
    owned = await state.owned_tables(conn) if await state.exists(conn) else set()
    for plan in plans.values():
        if not _replaceable(plan, owned):
            rows = await _rows_up_to(conn, plan, cfg.target_schema, 1000)
            if rows:
                problems.append(_holds_rows(plan, cfg.target_schema, rows))
    if problems:
        raise StartupError("\n".join(problems))


def sqlite_migrations(conn: sqlite3.Connection, names: set[str]) -> dict[str, set[tuple[str, ...]]]:
    out = {}
    for table, cols in MIGRATION_RECORDS.items():
        if table in names:
            sel = ", ".join(qi(c) for c in cols)
            out[table] = {tuple(map(str, r)) for r in conn.execute(f"SELECT {sel} FROM {qi(table)}")}
    return out


async def check_migrations(conn: asyncpg.Connection, schema: str, cfg: Config,
                           recorded: dict[str, set[tuple[str, ...]]],
                           catalog: dict[str, TargetTable]) -> None:
    """Both sides must record the same migrations before SQLite's record replaces the target's."""
    problems = []
    for table, mine in recorded.items():
        pg_name = target_table_name(table, cfg)
        if pg_name not in catalog:
            continue
        cols = ", ".join(f"{qi(target_column_name(table, c, cfg))}::text"
                         for c in MIGRATION_RECORDS[table])
        theirs = {tuple(r) for r in await conn.fetch(
            f"SELECT {cols} FROM {qualified(schema, pg_name)}")}
        if not theirs:
            continue
        missing, extra = sorted(mine - theirs), sorted(theirs - mine)
        if missing:
            problems.append(f"{table}: the target lacks {len(missing)} migration(s) SQLite has "
                            f"applied, e.g. {' '.join(missing[0])}: run the app's migrations "
                            "against the target first")
        if extra:
            problems.append(f"{table}: the target has {len(extra)} migration(s) SQLite has not "
                            f"applied, e.g. {' '.join(extra[0])}: migrate SQLite to the same "
                            "version, or recreate the target schema at SQLite's version")
    if problems:
        raise StartupError("the application's migrations differ between SQLite and the target:"
                           "\n  " + "\n  ".join(problems))


async def claim_table(conn: asyncpg.Connection, plan: TablePlan, schema: str,
                      owned: set[str]) -> None:
    """Make the target table ready to receive the copy: empty, or emptied when what it holds is
    the replicator's own earlier copy or the ORM's bookkeeping; refused otherwise."""
    rows = await _rows_up_to(conn, plan, schema, 1000)
    if rows == 0:
        return
    if not _replaceable(plan, owned):
        raise StartupError(_holds_rows(plan, schema, rows))
    await conn.execute(f"TRUNCATE {qualified(schema, plan.pg_name)}")


def _replaceable(plan: TablePlan, owned: set[str]) -> bool:
    """Rows the replicator may replace: its own earlier copy, and the ORM's bookkeeping."""
    names = {plan.name, plan.pg_name}
    return bool(names & owned or names & set(MIGRATION_RECORDS) or names & ORM_SEEDED)


async def _rows_up_to(conn: asyncpg.Connection, plan: TablePlan, schema: str, limit: int) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM (SELECT 1 FROM "
                                   f"{qualified(schema, plan.pg_name)} LIMIT {limit}) s"))


def _holds_rows(plan: TablePlan, schema: str, rows: int) -> str:
    return (f"target: table {qualified(schema, plan.pg_name)} already holds "
            f"{rows if rows < 1000 else '1000 or more'} row(s) the replicator did not write; it "
            "does not merge into existing data. Empty it (the ORM's seed data comes over from "
            "SQLite anyway) or exclude the table")


async def hold_foreign_keys(conn: asyncpg.Connection, schema: str, tables: set[str]) -> int:
    """Drop the target's foreign keys that touch the filled tables, keeping their definitions
    (first in ``_replicator.state``, then dropped: a crash in between loses nothing)."""
    rows = await conn.fetch(
        "SELECT c.conname, t.relname AS tbl, pg_get_constraintdef(c.oid) AS def "
        "FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
        "JOIN pg_class f ON f.oid = c.confrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE c.contype = 'f' AND n.nspname = $1 AND (t.relname = ANY($2) OR f.relname = ANY($2))",
        schema, sorted(tables))
    if not rows:
        return 0
    st = await state.load(conn)
    held = list(st.info.get("held_foreign_keys", [])) if st else []
    known = {(h["table"], h["name"]) for h in held}
    held += [{"table": r["tbl"], "name": r["conname"], "definition": r["def"]} for r in rows
             if (r["tbl"], r["conname"]) not in known]
    async with conn.transaction():
        await state.merge_info(conn, held_foreign_keys=held)
        for r in rows:
            await conn.execute(f"ALTER TABLE {qualified(schema, r['tbl'])} "
                               f"DROP CONSTRAINT {qi(r['conname'])}")
    return len(rows)


async def restore_foreign_keys(conn: asyncpg.Connection, schema: str) -> list[dict[str, Any]]:
    """Inside the cutover's freeze: put back the held foreign keys as they were, NOT VALID (no
    scan of old rows; new rows are checked at once). ``validate_foreign_keys`` comes after."""
    st = await state.load(conn)
    held = st.info.get("held_foreign_keys", []) if st else []
    out = []
    for h in held:
        exists = await conn.fetchval(
            "SELECT 1 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace "
            "n ON n.oid = t.relnamespace WHERE n.nspname = $1 AND t.relname = $2 AND c.conname = $3",
            schema, h["table"], h["name"])
        if not exists:
            definition = h["definition"].replace(" NOT VALID", "")
            await conn.execute(f"ALTER TABLE {qualified(schema, h['table'])} ADD CONSTRAINT "
                               f"{qi(h['name'])} {definition} NOT VALID")
        out.append({"table": h["table"], "object": f"foreign_key {h['name']}", "status": "added",
                    "original": h["definition"]})
    if held:
        await state.merge_info(conn, held_foreign_keys=[], restored_foreign_keys=held)
    return out


async def validate_foreign_keys(conn: asyncpg.Connection, schema: str) -> list[dict[str, Any]]:
    """After the freeze: VALIDATE the restored keys; a key old rows break stays NOT VALID, named,
    with the statement to run once a human fixed the rows."""
    st = await state.load(conn)
    out = []
    for h in (st.info.get("restored_foreign_keys", []) if st else []):
        table = qualified(schema, h["table"])
        sql = f"ALTER TABLE {table} VALIDATE CONSTRAINT {qi(h['name'])}"
        detail = None
        try:
            async with conn.transaction():
                await conn.execute(sql)
        except asyncpg.PostgresError as exc:
            detail = f"{type(exc).__name__}: {exc}"
        out.append({"table": h["table"], "object": f"foreign_key {h['name']}",
                    "status": "not valid" if detail else "validated", "detail": detail,
                    "original": h["definition"],
                    **({"fix": f"fix the rows it names, then: {sql}"} if detail else {})})
    return out


async def set_sequences(conn: asyncpg.Connection, plan: TablePlan, schema: str
                        ) -> list[dict[str, Any]]:
    """Every serial/identity column of the table: its sequence set past the largest value."""
    out = []
    table = qualified(schema, plan.pg_name)
    for col in plan.columns:
        seq = await conn.fetchval("SELECT pg_get_serial_sequence($1, $2)", table, col.pg_name)
        if seq is None:
            continue
        top = await conn.fetchval(f"SELECT max({qi(col.pg_name)}) FROM {table}")
        if top is None:
            continue
        await conn.execute("SELECT setval($1, $2, true)", seq, int(top))
        out.append({"table": plan.name, "object": f"sequence {seq}", "status": "set",
                    "detail": f"next value {int(top) + 1}"})
    return out


async def final_objects(conn: asyncpg.Connection, plans: dict[str, TablePlan], views: list[Any],
                        schema: str, sequences: dict[str, int], cfg: Config
                        ) -> list[dict[str, Any]]:
    """The objects that come last, inside the freeze: the replicator's own (``ddl``), or, for a
    schema the ORM made, its foreign keys put back and its sequences moved past the keys (its
    views, checks and triggers never left)."""
    if cfg.schema_mode != "existing":
        return await ddl.final_objects(conn, plans, views, schema, sequences)
    out = await restore_foreign_keys(conn, schema)
    for plan in plans.values():
        out += await set_sequences(conn, plan, schema)
    return out


async def hold_objects(conn: asyncpg.Connection, plans: dict[str, TablePlan], schema: str,
                       cfg: Config) -> int:
    """After a rollback: what cutover added and forward apply must not meet (``ddl.hold_objects``;
    for a schema the ORM made, its foreign keys, held again as before the first cutover)."""
    if cfg.schema_mode != "existing":
        return await ddl.hold_objects(conn, plans, schema)
    return await hold_foreign_keys(conn, schema, {p.pg_name for p in plans.values()})


async def validate_objects(conn: asyncpg.Connection, plans: dict[str, TablePlan], schema: str,
                           cfg: Config) -> list[dict[str, Any]]:
    """After the freeze: old rows validated against the constraints added NOT VALID."""
    if cfg.schema_mode != "existing":
        return await ddl.validate_objects(conn, plans, schema)
    return await validate_foreign_keys(conn, schema)
