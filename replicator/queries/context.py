"""Per-statement context for the rules: which tables the statement names, what each column's
Postgres type is, and the findings collected so far."""

from __future__ import annotations

from sqlglot import exp

from .catalog import Catalog, ColumnInfo, TableInfo
from .traps import Trap, make

NUMBER_TYPES = ("bigint", "numeric", "double precision")
# Postgres types the copy gives columns whose SQLite values are text or 0/1 integers
MAPPED = ("timestamptz", "timestamp", "date", "boolean", "uuid", "json", "jsonb")


class Ctx:
    """What one statement's rewrite knows and has found."""

    def __init__(self, tree: exp.Expression, catalog: Catalog | None, dq: set[str], text: str):
        self.catalog = catalog
        self.dq = dq
        self.text = text
        self.traps: list[Trap] = []
        self._seen: set[tuple[str, str]] = set()
        self.tables: dict[str, TableInfo] = {}
        self.names: set[str] = set()  # aliases and CTE names defined by the statement
        self.complete = catalog is not None  # every named table is in the catalog
        self.ddl = isinstance(tree, (exp.Create, exp.Alter, exp.Drop))
        self._collect(tree)

    def _collect(self, tree: exp.Expression) -> None:
        ctes = {c.alias.lower() for c in tree.find_all(exp.CTE)}
        self.names |= ctes
        for t in tree.find_all(exp.Table):
            info = self.catalog.table(t.name) if self.catalog else None
            if info is None:
                if t.name.lower() not in ctes:
                    self.complete = False
                continue
            self.tables[t.alias_or_name.lower()] = info
            self.tables.setdefault(t.name.lower(), info)
        for a in tree.find_all(exp.Alias):
            self.names.add(a.alias.lower())
        for ta in tree.find_all(exp.TableAlias):
            self.names.add(ta.name.lower())
            self.names |= {c.name.lower() for c in ta.columns}

    def flag(self, code: str, node: exp.Expression | str | None = None, **kw) -> None:
        """Record a finding once per (code, snippet), and once per identical explanation."""
        snippet = node if isinstance(node, str) else src(node) if node is not None else ""
        if (code, snippet) in self._seen:
            return
        self._seen.add((code, snippet))
        trap = make(code, snippet, **kw)
        if any(t.code == code and t.message == trap.message for t in self.traps):
            return
        self.traps.append(trap)

    def column(self, col: exp.Expression) -> ColumnInfo | None:
        """The catalog column a Column node refers to, when it can be told."""
        if not isinstance(col, exp.Column) or not self.catalog:
            return None
        if col.table:
            t = self.tables.get(col.table.lower())
            return t.column(col.name) if t else None
        hits = {id(t): c for t in self.tables.values() if (c := t.column(col.name)) is not None}
        found = list(hits.values())
        if len(found) == 1 or (found and len({c.pg_type for c in found}) == 1
                               and len({c.classes for c in found}) == 1):
            return found[0]
        return None

    def table_of(self, col: exp.Column) -> TableInfo | None:
        if col.table:
            return self.tables.get(col.table.lower())
        distinct = {id(t): t for t in self.tables.values()}
        return next(iter(distinct.values())) if len(distinct) == 1 else None

    def pg_type(self, node: exp.Expression | None) -> str | None:
        """The Postgres type of an expression, for the simple cases the rules need."""
        if node is None:
            return None
        if isinstance(node, exp.Column):
            info = self.column(node)
            return info.pg_type if info else None
        if isinstance(node, exp.Literal):
            if node.is_string:
                return "text"
            return "bigint" if node.this.lstrip("-").isdigit() else "numeric"
        if isinstance(node, (exp.Paren, exp.Neg)):
            return self.pg_type(node.this)
        if isinstance(node, exp.Cast):
            return _cast_type(node)
        if isinstance(node, (exp.Count, exp.Length)):
            return "bigint"
        if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)):
            pair = {self.pg_type(node.this), self.pg_type(node.expression)}
            if None in pair:
                return None
            for t in ("double precision", "numeric", "bigint"):
                if t in pair and pair <= set(NUMBER_TYPES):
                    return t
        if isinstance(node, exp.DPipe):
            return "text"
        return None

    def classes(self, node: exp.Expression | None) -> frozenset[str] | None:
        """Storage classes a column holds in SQLite (None when not a known column)."""
        info = self.column(node) if isinstance(node, exp.Column) else None
        return info.classes if info else None


def _cast_type(node: exp.Cast) -> str | None:
    t = node.to.this
    DT = exp.DataType.Type
    if t in (DT.INT, DT.BIGINT, DT.SMALLINT, DT.TINYINT):
        return "bigint"
    if t in (DT.DOUBLE, DT.FLOAT):
        return "double precision"
    if t in (DT.DECIMAL,):
        return "numeric"
    if t in (DT.TEXT, DT.VARCHAR, DT.CHAR, DT.NVARCHAR):
        return "text"
    return None


def src(node: exp.Expression) -> str:
    """The node's SQLite text as it was before any rewrite (recorded by ``remember``)."""
    return node.meta.get("src") or node.sql(dialect="sqlite")


def remember(tree: exp.Expression) -> None:
    """Store every node's original SQLite text, so findings quote the original."""
    for node in tree.walk():
        if not isinstance(node, (exp.Identifier, exp.Literal)):
            node.meta["src"] = node.sql(dialect="sqlite")
