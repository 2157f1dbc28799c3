"""Statement-level rules: SELECT shape checks (bare columns, boolean results, text ordering),
INSERT OR REPLACE / IGNORE as ON CONFLICT, PRAGMA, and DDL details (AUTOINCREMENT, 64-bit
INTEGER, COLLATE NOCASE columns)."""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp

from ..dialect.build import is_predicate
from .catalog import TableInfo
from .context import Ctx, src
from .sqltext import masked

_PRAGMA_ADVICE = {
    "foreign_keys": "Postgres always enforces foreign keys; drop the statement.",
    "table_info": "query information_schema.columns instead.",
    "table_xinfo": "query information_schema.columns instead.",
    "index_list": "query pg_indexes instead.",
    "index_info": "query pg_indexes instead.",
    "foreign_key_list": "query pg_constraint (contype = 'f') instead.",
    "user_version": "keep the schema version in a table (as migration tools do).",
    "optimize": "run ANALYZE instead.",
    "case_sensitive_like": "Postgres LIKE is always case-sensitive; use ILIKE where needed.",
    "integrity_check": "no equivalent (the amcheck extension checks indexes).",
}
_ENGINE = ("journal_mode", "synchronous", "cache_size", "mmap_size", "temp_store", "busy_timeout",
           "wal_checkpoint", "locking_mode", "page_size", "auto_vacuum", "wal_autocheckpoint")


def check_selects(tree: exp.Expression, ctx: Ctx) -> None:
    """Findings about SELECT shapes (run on the untouched SQLite tree)."""
    for sel in tree.find_all(exp.Select):
        _bool_results(sel, ctx)
        _bare_columns(sel, ctx)
        _order_text(sel, ctx)
    upper = [a.alias for a in tree.find_all(exp.Alias)
             if a.alias != a.alias.lower() and isinstance(a.parent, exp.Select)]
    if upper and isinstance(tree, exp.Query):
        ctx.flag("alias-case", ", ".join(upper), alias=", ".join(upper))
    if re.search(r"\bifnull\s*\(", masked(ctx.text), re.I):
        ctx.flag("ifnull", "ifnull()", fixed=True)


_AGG_NAMES = {"total", "group_concat", "json_group_array", "json_group_object"}


def _aggregated(node: exp.Expression) -> bool:
    return any(isinstance(n, exp.AggFunc) or (isinstance(n, exp.Anonymous)
                                               and n.name.lower() in _AGG_NAMES)
               for n in node.walk())


def _bool_results(sel: exp.Select, ctx: Ctx) -> None:
    for proj in sel.expressions:
        if is_predicate(proj.unalias()):
            ctx.flag("bool-result", proj.unalias())


def _bare_columns(sel: exp.Select, ctx: Ctx) -> None:
    if sel.find(exp.Window):
        return
    projections = [p.unalias() for p in sel.expressions]
    group = sel.args.get("group")
    if not group and not any(_aggregated(p) for p in projections):
        return
    keys = list(group.expressions) if group else []
    for i, g in enumerate(keys):  # GROUP BY 2 means the second output column
        n = g.this if isinstance(g, exp.Literal) and not g.is_string else None
        if n and n.isdigit() and 0 < int(n) <= len(projections):
            keys[i] = projections[int(n) - 1]
    grouped = {g.sql(dialect="sqlite").lower() for g in keys}
    grouped_names = {g.name.lower() for g in keys if isinstance(g, exp.Column)}
    bare = []
    for alias_node, proj in zip(sel.expressions, projections, strict=True):
        if _aggregated(proj) or isinstance(proj, (exp.Star, exp.Literal)):
            continue
        if proj.sql(dialect="sqlite").lower() in grouped or alias_node.alias_or_name.lower() in grouped:
            continue
        cols = list(proj.find_all(exp.Column))
        if all(_grouped(c, grouped, grouped_names, ctx) for c in cols):
            continue
        bare.append(src(proj))
    if bare:
        ctx.flag("bare-column", ", ".join(bare), cols=", ".join(bare),
                 verb="is" if len(bare) == 1 else "are")


def _grouped(col: exp.Column, grouped: set[str], names: set[str], ctx: Ctx) -> bool:
    if col.sql(dialect="sqlite").lower() in grouped or (not col.table and col.name.lower() in names):
        return True
    table: TableInfo | None = ctx.table_of(col)
    return bool(table and table.key and all(k.lower() in names for k in table.key))


def _order_text(sel: exp.Select, ctx: Ctx) -> None:
    order = sel.args.get("order")
    if not order:
        return
    cols = [src(o.this) for o in order.expressions if ctx.pg_type(o.this) == "text"
            and not isinstance(o.this, exp.Collate)]
    if cols:
        ctx.flag("order-text", ", ".join(cols), cols=", ".join(cols))


def finish(tree: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    """Statement rewrites after the expression rules; None when nothing can be translated."""
    if isinstance(tree, exp.Pragma):
        m = re.search(r"PRAGMA\s+(?:\w+\.)?(\w+)", ctx.text, re.I)
        name = (m.group(1) if m else "").lower()
        advice = _PRAGMA_ADVICE.get(name) or (
            "a storage-engine setting with no Postgres counterpart; drop it." if name in _ENGINE
            else "no equivalent; remove it or find the matching server setting.")
        ctx.flag("pragma", f"PRAGMA {name}", advice=advice)
        return None
    if isinstance(tree, exp.Insert):
        _upsert(tree, ctx)
    for oc in tree.find_all(exp.OnConflict):
        for key in oc.args.get("conflict_keys") or []:
            if isinstance(key, exp.Ordered):
                key.replace(key.this)  # sqlglot adds NULLS FIRST, which Postgres rejects here
    if ctx.ddl:
        _ddl(tree, ctx)
    return tree


def _ident(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _upsert(node: exp.Insert, ctx: Ctx) -> None:
    alt = (node.args.get("alternative") or "").upper()
    if not alt:
        return
    schema = node.this
    table = schema.this if isinstance(schema, exp.Schema) else schema
    cols = [i.name for i in schema.expressions] if isinstance(schema, exp.Schema) else None
    info = ctx.catalog.table(table.name) if ctx.catalog and isinstance(table, exp.Table) else None
    if cols is None and info:
        cols = [c.name for c in info.columns.values()]
    if alt == "IGNORE":
        node.set("alternative", None)
        node.set("conflict", exp.OnConflict(action=exp.var("DO NOTHING")))
        ctx.flag("upsert-ignore", "INSERT OR IGNORE", fixed=True)
        return
    if alt != "REPLACE":
        node.set("alternative", None)
        ctx.flag("insert-or", f"INSERT OR {alt}", alt=alt)
        return
    keys, why = _conflict_keys(info, cols)
    if keys is None:
        ctx.flag("upsert-replace", "INSERT OR REPLACE", keys="the table's key",
                 severity="fails")
        return
    node.set("alternative", None)
    lowered = {k.lower() for k in keys}
    updates = [c for c in cols or [] if c.lower() not in lowered]
    action = ("DO UPDATE SET " + ", ".join(f"{_ident(c)} = EXCLUDED.{_ident(c)}" for c in updates)
              if updates else "DO NOTHING")
    clause = f"ON CONFLICT ({', '.join(_ident(k) for k in keys)}) {action}"
    dummy = sqlglot.parse_one(f"INSERT INTO t (x) VALUES (1) {clause}", read="postgres")
    node.set("conflict", dummy.args["conflict"])
    ctx.flag("upsert-replace", "INSERT OR REPLACE", fixed=True, keys=", ".join(keys))
    if why:
        ctx.flag("upsert-key", "ON CONFLICT", keys=", ".join(keys), why=why)


def _conflict_keys(info: TableInfo | None, cols: list[str] | None
                   ) -> tuple[list[str] | None, str | None]:
    if not cols:
        return None, None
    lowered = {c.lower() for c in cols}
    if info is not None:
        for key in (info.key, *info.uniques):
            if key and all(k.lower() in lowered for k in key):
                return list(key), None
        return None, None
    return [cols[0]], ("assumed to be the first inserted column; run with --source to read "
                       "the real primary key")


def _ddl(tree: exp.Expression, ctx: Ctx) -> None:
    for dt in list(tree.find_all(exp.DataType)):
        if dt.this == exp.DataType.Type.INT:
            dt.replace(exp.DataType.build("bigint"))
    for cd in tree.find_all(exp.ColumnDef):
        kinds = [c.args.get("kind") for c in cd.args.get("constraints") or []]
        if any(isinstance(k, exp.AutoIncrementColumnConstraint) for k in kinds):
            ctx.flag("autoincrement", cd.name + " AUTOINCREMENT", fixed=True)
        if any(isinstance(k, exp.CollateColumnConstraint) and k.this.name.upper() == "NOCASE"
               for k in kinds):
            ctx.flag("collate-nocase", cd.name + " COLLATE NOCASE",
                     action="use the citext type or a case-insensitive ICU collation")
