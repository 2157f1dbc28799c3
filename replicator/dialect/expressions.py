"""Translate SQLite SQL (defaults, CHECKs, index expressions, generated columns, views, triggers)
into Postgres with sqlglot plus our own rewrites where sqlglot is weak (date functions,
LIKE's case-insensitivity, INTEGER's width, GLOB, randomblob).

A translation is a draft until Postgres accepts it: the DDL step creates every translated object
in a savepoint and lists what fails, with the original SQL, in the plan and the report.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from ..quoting import qi
from ..source import split_statements
from . import timefuncs
from .build import parse

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its parse fallbacks are ours to report
UTC_NOW = "(now() AT TIME ZONE 'UTC')"


@dataclass
class Translation:
    original: str
    sql: str | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.sql is not None


class Untranslatable(Exception):
    pass


def _names(mapping: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in mapping.items()}


def _post_order(node: exp.Expression, fn) -> exp.Expression:
    """Rewrite children first, then the node (sqlglot's transform does not revisit the children
    of a node it replaced)."""
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expression):
            node.set(key, _post_order(value, fn))
        elif isinstance(value, list):
            node.set(key, [_post_order(v, fn) if isinstance(v, exp.Expression) else v for v in value])
    return fn(node)


def _col(name: str, table: str | None = None, table_quoted: bool = True) -> exp.Column:
    return exp.Column(
        this=exp.to_identifier(name, quoted=True),
        table=exp.to_identifier(table, quoted=table_quoted) if table else None,
    )


def _now_text(fmt: str) -> exp.Expression:
    return parse(f"to_char({UTC_NOW}, '{fmt}')", read="postgres")


def _rewrite(node: exp.Expression, columns: dict[str, str], notes: list[str]) -> exp.Expression:
    """One AST node, SQLite meaning -> Postgres meaning."""
    if isinstance(node, exp.Column) and not node.table:
        name = node.name
        target = columns.get(name.lower())
        if target is None and node.this.quoted is False and name.lower() in ("true", "false"):
            return node
        return _col(target or name)
    if isinstance(node, exp.Column) and node.table.upper() in ("NEW", "OLD"):
        target = columns.get(node.name.lower(), node.name)
        return _col(target, node.table.upper(), table_quoted=False)
    if isinstance(node, exp.Anonymous):
        return _rewrite_function(node, notes)
    if isinstance(node, exp.Date) and _is_now(node.this):
        return _now_text("YYYY-MM-DD")
    if isinstance(node, exp.TimeToStr):
        return _strftime(node, notes)
    if isinstance(node, exp.Like):
        notes.append("LIKE is case-insensitive (ASCII) in SQLite: translated to ILIKE")
        return exp.ILike(this=node.this, expression=node.expression)
    if isinstance(node, exp.Glob):
        return _glob(node)
    if isinstance(node, exp.DataType) and node.this in (exp.DataType.Type.INT,):
        return exp.DataType.build("BIGINT")
    if type(node).__name__ == "LowerHex":
        return exp.Anonymous(this="encode", expressions=[node.this, exp.Literal.string("hex")])
    if isinstance(node, exp.Hex):
        encoded = exp.Anonymous(this="encode", expressions=[node.this, exp.Literal.string("hex")])
        return exp.Upper(this=encoded)
    if isinstance(node, exp.Typeof):
        raise Untranslatable("typeof() has no Postgres equivalent (pg_typeof names differ)")
    if isinstance(node, exp.Rand):
        raise Untranslatable("random() returns a 64-bit integer in SQLite, a float in Postgres")
    if isinstance(node, exp.Collate):
        coll = node.expression.name.upper()
        if coll == "NOCASE":
            return exp.Lower(this=node.this)
        if coll == "RTRIM":
            return exp.Anonymous(this="rtrim", expressions=[node.this, exp.Literal.string(" ")])
        return node.this
    return node


def _is_now(arg: exp.Expression | None) -> bool:
    return isinstance(arg, exp.Literal) and arg.is_string and arg.name.lower() == "now"


def _rewrite_function(node: exp.Anonymous, notes: list[str]) -> exp.Expression:
    name = node.name.lower()
    args = node.expressions
    if name in ("datetime", "time") and len(args) == 1 and _is_now(args[0]):
        return _now_text("YYYY-MM-DD HH24:MI:SS" if name == "datetime" else "HH24:MI:SS")
    if name == "julianday" and len(args) == 1 and _is_now(args[0]):
        return parse("(extract(epoch FROM now()) / 86400.0 + 2440587.5)", read="postgres")
    if name == "unixepoch" and (not args or len(args) == 1 and _is_now(args[0])):
        return parse("floor(extract(epoch FROM now()))::bigint", read="postgres")
    if name == "randomblob" and len(args) == 1 and isinstance(args[0], exp.Literal):
        n = int(args[0].name)
        if 0 < n <= 16:
            notes.append("randomblob(n): n random bytes from gen_random_uuid() (4 bits fixed)")
            return parse(
                f"substring(decode(replace(gen_random_uuid()::text, '-', ''), 'hex') FROM 1 FOR {n})",
                read="postgres",
            )
    if name == "json_valid" and len(args) == 1:
        # Postgres 16+: the same question of the text (for a json/jsonb column, always true)
        return exp.Anonymous(this="pg_input_is_valid", expressions=[
            exp.Cast(this=args[0], to=exp.DataType.build("text")), exp.Literal.string("json")])
    raise Untranslatable(f"function {node.name}() is not translated")


def _strftime(node: exp.TimeToStr, notes: list[str]) -> exp.Expression:
    fmt = node.args.get("format")
    fmt_text = fmt.name if isinstance(fmt, exp.Literal) else None
    src = node.this
    inner = src.this if isinstance(src, exp.TsOrDsToTimestamp) else src
    if fmt_text is None or not _is_now(inner):
        raise Untranslatable("strftime() is translated only for literal formats of 'now'")
    now, _uses_now, _months = timefuncs.timestamp(exp.Literal.string("now"), [], None)
    try:
        return timefuncs.strftime(fmt_text, now)  # the query translator's table of codes
    except timefuncs.Unsupported as exc:
        raise Untranslatable(f"strftime: {exc}") from None


def _glob(node: exp.Glob) -> exp.Expression:
    pattern = node.expression
    if not (isinstance(pattern, exp.Literal) and pattern.is_string):
        raise Untranslatable("GLOB with a non-literal pattern is not translated")
    regex = "^"
    for ch in pattern.name:
        regex += {"*": ".*", "?": "."}.get(ch, ch if ch in "[]^-" else re.escape(ch))
    regex += "$"
    return exp.RegexpLike(this=node.this, expression=exp.Literal.string(regex))


def expression(sql: str, columns: dict[str, str] | None = None) -> Translation:
    """Translate a scalar SQLite expression; ``columns`` maps SQLite to Postgres column names."""
    out = Translation(original=sql)
    try:
        tree = parse(sql, read="sqlite")
        names = _names(columns or {})
        tree = _post_order(tree, lambda n: _rewrite(n, names, out.notes))
        out.sql = tree.sql(dialect="postgres")
        parse(out.sql, read="postgres")
    except Untranslatable as exc:
        out.sql, out.error = None, str(exc)
    except sqlglot.errors.SqlglotError as exc:
        out.sql, out.error = None, f"cannot parse: {str(exc).splitlines()[0]}"
    return out


def default(sql: str, pg_type: str, columns: dict[str, str] | None = None) -> Translation:
    """A column DEFAULT: the same value on insert in Postgres as SQLite would store."""
    text = sql.strip()
    upper = text.upper().strip("()")
    if upper in ("CURRENT_TIMESTAMP", "CURRENT_DATE", "CURRENT_TIME"):
        if pg_type == "timestamptz":
            # SQLite stores whole seconds: so does the DEFAULT (a row the app inserts on
            # Postgres during the fallback window then goes back to SQLite exactly)
            return Translation(original=sql, sql="date_trunc('second', now())"
                               if upper == "CURRENT_TIMESTAMP" else "now()")
        if pg_type == "date":
            return Translation(original=sql, sql=f"{UTC_NOW}::date")
        fmt = {"CURRENT_TIMESTAMP": "YYYY-MM-DD HH24:MI:SS", "CURRENT_DATE": "YYYY-MM-DD",
               "CURRENT_TIME": "HH24:MI:SS"}[upper]
        return Translation(original=sql, sql=f"to_char({UTC_NOW}, '{fmt}')",
                           notes=[f"{upper} is UTC text in SQLite"])
    out = expression(text, columns)
    if not out.ok:
        return out
    if pg_type == "timestamptz" and "TO_CHAR" in (out.sql or "").upper():
        out.sql = "now()"
    elif pg_type == "boolean" and out.sql in ("0", "1"):
        out.sql = "false" if out.sql == "0" else "true"
    elif not _is_literal(text):
        # SQLite applies the column's affinity to whatever the expression returns.
        out.sql = f"CAST({out.sql} AS {pg_type})"
    return out


def _is_literal(text: str) -> bool:
    try:
        node = parse(text, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return False
    while isinstance(node, (exp.Paren, exp.Neg)):
        node = node.this
    return isinstance(node, (exp.Literal, exp.Null, exp.Boolean))


def select(sql: str, ident, schema: str | None = None) -> Translation:
    """A statement (a view's SELECT, a trigger's INSERT/UPDATE/DELETE) with table and column
    names mapped to Postgres by ``ident`` (tables qualified with ``schema`` when given)."""
    out = Translation(original=sql)

    class _Names(dict):
        def get(self, key, default=None):  # every name maps through the identifier policy
            return ident(key)

    names = _Names()
    try:
        tree = parse(sql, read="sqlite")
        aliases = {t.alias for t in tree.find_all(exp.Table) if t.alias}

        def fix(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Table):
                node.set("this", exp.to_identifier(ident(node.name), quoted=True))
                if schema:
                    node.set("db", exp.to_identifier(schema, quoted=True))
                return node
            if isinstance(node, exp.Schema):  # INSERT INTO t (a, b): the column list
                node.set("expressions", [
                    exp.to_identifier(ident(i.name), quoted=True) if isinstance(i, exp.Identifier)
                    else i for i in node.expressions
                ])
                return node
            if isinstance(node, exp.Column) and node.table and node.table.upper() not in ("NEW", "OLD"):
                table = node.table if node.table in aliases else ident(node.table)
                return _col(ident(node.name), table)
            return _rewrite(node, names, out.notes)

        tree = _post_order(tree, fix)
        out.sql = tree.sql(dialect="postgres")
    except Untranslatable as exc:
        out.error = str(exc)
    except sqlglot.errors.SqlglotError as exc:
        out.error = f"cannot parse: {str(exc).splitlines()[0]}"
    return out


_TRIGGER = re.compile(
    r"CREATE\s+(?:TEMP(?:ORARY)?\s+)?TRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>\S+)\s+"
    r"(?P<when>BEFORE|AFTER|INSTEAD\s+OF)?\s*(?P<event>INSERT|DELETE|UPDATE(?:\s+OF\s+[^O]+?)?)\s+"
    r"ON\s+(?P<table>\S+)\s+(?:FOR\s+EACH\s+ROW\s+)?(?:WHEN\s+(?P<cond>.+?)\s+)?BEGIN\s+(?P<body>.*)END\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)


@dataclass
class TriggerTranslation(Translation):
    function_sql: str | None = None
    trigger_sql: str | None = None


def trigger(sql: str, pg_table: str, schema: str, columns: dict[str, str], ident) -> TriggerTranslation:
    """An application trigger as a PL/pgSQL function plus a row trigger (created disabled)."""
    out = TriggerTranslation(original=sql)
    m = _TRIGGER.match(sql.strip())
    if not m:
        out.error = "trigger header not understood"
        return out
    name = _unquote(m["name"])
    timing = (m["when"] or "BEFORE").upper()
    if timing.startswith("INSTEAD"):
        out.error = "INSTEAD OF triggers (on views) are not translated"
        return out
    event = re.sub(r"\s+", " ", m["event"].upper())
    if event.startswith("UPDATE OF"):
        lowered = _names(columns)
        cols = [lowered.get(c.strip().strip('"[]`').lower(), c.strip()) for c in
                m["event"][len("UPDATE OF"):].split(",")]
        event = "UPDATE OF " + ", ".join(qi(c) for c in cols)
    body, cond = [], None
    try:
        if m["cond"]:
            t = expression(m["cond"], columns)
            if not t.ok:
                raise Untranslatable(f"WHEN clause: {t.error}")
            cond = t.sql
        for stmt in split_statements(m["body"]):
            raise_ = re.match(r"SELECT\s+RAISE\s*\(\s*(ABORT|FAIL|ROLLBACK)\s*,"
                              r"\s*('(?:[^']|'')*')\s*\)\s*;?$",
                              stmt, re.IGNORECASE)
            if raise_:
                body.append(f"RAISE EXCEPTION '%', {raise_[2]};")
                continue
            t = select(stmt.rstrip(";"), ident, schema)
            if not t.ok:
                raise Untranslatable(t.error or "statement not translated")
            out.notes += t.notes
            body.append(f"{t.sql};")
    except Untranslatable as exc:
        out.error = str(exc)
        return out
    fn = f"{qi(schema)}.{qi(_short(f'{pg_table}_{name}_fn'))}"
    ret = "NEW" if timing == "BEFORE" and event != "DELETE" else ("OLD" if timing == "BEFORE" else "NULL")
    stmts = "\n        ".join(body)
    inner = f"IF {cond} THEN\n        {stmts}\n    END IF;" if cond else stmts
    out.function_sql = (
        f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
        f"BEGIN\n    {inner}\n    RETURN {ret};\nEND\n$fn$"
    )
    out.trigger_sql = (
        f"CREATE TRIGGER {qi(name)} {timing} {event} ON {qi(schema)}.{qi(pg_table)} "
        f"FOR EACH ROW EXECUTE FUNCTION {fn}()"
    )
    out.sql = out.function_sql + ";\n" + out.trigger_sql
    return out


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] in "\"[`" and name[-1] in "\"]`":
        return name[1:-1].replace('""', '"')
    return name


def _short(name: str) -> str:
    return name.encode()[:63].decode(errors="ignore")
