"""One SQLite statement -> its Postgres translation, bind-parameter order and traps.

The pipeline: bind parameters are replaced by named sentinels (sqlglot cannot parse ``?1``);
sqlglot parses the SQLite dialect; the rules in ``rules``/``statements`` record traps and
rewrite what sqlglot leaves SQLite-only or gets wrong; identifiers are lower-cased (the
replicator's naming policy: Postgres names are ASCII-lower-cased SQLite names, so quoted
``"Name"`` must become ``"name"``); sqlglot writes Postgres; the sentinels become the driver's
placeholders (``$n`` for asyncpg, node-postgres and Neon's driver, ``%s`` for psycopg).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import asdict, dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from . import DRIVERS, rules, statements
from .catalog import Catalog
from .context import Ctx, remember
from .sqltext import code_start, double_quoted, find_params, first_keyword
from .traps import Trap, make, worst

_DDL_COMMAND = re.compile(
    r"\s*(CREATE\s+(UNIQUE\s+|TEMP\s+|TEMPORARY\s+|VIRTUAL\s+)*(TABLE|INDEX|VIEW|TRIGGER)"
    r"|ALTER\s+TABLE|DROP\s+(TABLE|INDEX|VIEW|TRIGGER))\b", re.I)
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter, exp.Command,
           exp.Pragma, exp.Merge)
_KINDS = ((exp.Query, "select"), (exp.Insert, "insert"), (exp.Update, "update"),
          (exp.Delete, "delete"), (exp.Create, "ddl"), (exp.Drop, "ddl"), (exp.Alter, "ddl"),
          (exp.Pragma, "pragma"))


@dataclass
class Translation:
    """The result for one statement."""

    original: str
    kind: str  # select | insert | update | delete | ddl | pragma | other
    read_only: bool
    postgres: str | None
    params: list[str] = field(default_factory=list)  # SQLite tokens in the driver's order
    traps: list[Trap] = field(default_factory=list)
    error: str | None = None

    @property
    def severity(self) -> str | None:
        return worst(self.traps)

    def to_json(self) -> dict:
        data = asdict(self)
        data["severity"] = self.severity
        return data


@contextlib.contextmanager
def _quiet():
    """sqlglot logs a warning when it falls back to a Command; we report that ourselves."""
    logger = logging.getLogger("sqlglot")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def parse(sql: str) -> list[exp.Expression]:
    """Parse SQLite text into statements (raises SqlglotError)."""
    with _quiet():
        return [t for t in sqlglot.parse(_replace_into(sql), read="sqlite")
                if isinstance(t, exp.Expression)]


def _replace_into(sql: str) -> str:
    start = code_start(sql)
    m = re.match(r"REPLACE\s+INTO\b", sql[start:], re.I)
    if not m:
        return sql
    return sql[:start] + "INSERT OR REPLACE INTO" + sql[start + m.end():]


def looks_like_sql(text: str) -> bool:
    """A statement keyword first, a successful parse, and a plausible shape (so that
    'Select a file' or 'Update available' in a UI string is not taken for SQL)."""
    if first_keyword(text) is None:
        return False
    try:
        trees = parse(_sentinels(text)[0])
    except SqlglotError:
        return False
    return bool(trees) and all(_plausible(t, text) for t in trees)


def _plausible(tree: exp.Expression, text: str) -> bool:
    if isinstance(tree, exp.Command):
        return bool(_DDL_COMMAND.match(text[code_start(text):]))
    if isinstance(tree, exp.Select):
        if not tree.expressions:
            return False
        if tree.args.get("from_") is None and tree.args.get("from") is None:
            return not any(isinstance(p.unalias(), exp.Column) for p in tree.expressions)
    if isinstance(tree, exp.Insert):
        return tree.expression is not None or bool(tree.args.get("default"))
    if isinstance(tree, exp.Update):
        return bool(tree.expressions)
    return True


def is_read_only(tree: exp.Expression) -> bool:
    """A query (SELECT, WITH ... SELECT, UNION ...) with no data-changing node anywhere."""
    return isinstance(tree, exp.Query) and not any(tree.find_all(*_WRITES))


def kind_of(tree: exp.Expression) -> str:
    return next((name for cls, name in _KINDS if isinstance(tree, cls)), "other")


def _sentinels(sql: str) -> tuple[str, list]:
    params = find_params(sql)
    out = sql
    for k, p in reversed(list(enumerate(params))):
        out = out[:p.start] + f":__p{k}" + out[p.end:]
    return out, params


def translate(sql: str, driver: str = "asyncpg", catalog: Catalog | None = None) -> Translation:
    """Translate one SQLite statement (leading comments allowed) for ``driver``."""
    if driver not in DRIVERS:
        raise ValueError(f"driver must be one of {', '.join(DRIVERS)}, got {driver!r}")
    sql = sql[code_start(sql):].strip()
    text, params = _sentinels(sql)
    original = sql
    try:
        trees = parse(text)
    except SqlglotError as exc:
        return Translation(original, "other", False, None, error=_first_line(exc))
    if len(trees) != 1:
        return Translation(original, "other", False, None,
                           error=f"expected one statement, found {len(trees)}")
    tree = trees[0]
    kind, read_only = kind_of(tree), is_read_only(tree)
    if isinstance(tree, exp.Command):
        tr = Translation(original, "ddl" if _DDL_COMMAND.match(original) else "other", False,
                         None, traps=[make("unparsed", original[:60])])
        tr.postgres, tr.params = _placeholders_text(original, driver)
        return tr
    ctx = Ctx(tree, catalog, double_quoted(text), text)
    remember(tree)
    statements.check_selects(tree, ctx)
    tree = rules.apply(tree, ctx)
    final = statements.finish(tree, ctx)
    tr = Translation(original, kind, read_only, None,
                     traps=_sort_traps(_named(ctx.traps, params, driver), original))
    if final is None:
        return tr
    _identifiers(final, catalog.identifiers if catalog else "lower")
    tr.postgres, tr.params = _render(final, params, driver, tr)
    return tr


_SENTINEL = re.compile(r"%\(__p(\d+)\)s|:__p(\d+)\b")


def _named(traps: list[Trap], params: list, driver: str) -> list[Trap]:
    """Findings speak the application's parameter names (``:name``, ``?``) in the SQLite text they
    quote, and the chosen driver's placeholders (``$1``, ``%s``) in the Postgres they suggest,
    never the translator's internal stand-ins."""
    if not params:
        return traps

    def sqlite_side(m: re.Match) -> str:
        return params[int(m.group(1) or m.group(2))].token

    def driver_side(m: re.Match) -> str:
        return "%s" if driver == "psycopg" else f"${params[int(m.group(1) or m.group(2))].index}"

    for t in traps:
        t.message = _SENTINEL.sub(lambda m: driver_side(m) if m.group(1) else sqlite_side(m),
                                  t.message)
        t.snippet = _SENTINEL.sub(sqlite_side, t.snippet)
        if t.suggestion:
            t.suggestion = _SENTINEL.sub(driver_side, t.suggestion)
    return traps


def _first_line(exc: Exception) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines()[0][:300]


def _identifiers(tree: exp.Expression, policy: str) -> None:
    """Postgres names are the SQLite names ASCII-lower-cased (or preserved, then quoted); a
    name that is a keyword in Postgres (``user``, ``order``...) is quoted, else ``user`` would
    mean current_user."""
    for ident in tree.find_all(exp.Identifier):
        if policy == "preserve":
            ident.set("quoted", True)
            continue
        ident.set("this", ident.name.translate(_LOWER))
        if ident.name in PG_KEYWORDS:
            ident.set("quoted", True)


# Postgres reserved key words, and those that can only be function or type names
_KEYWORDS = """
all analyse analyze and any array as asc asymmetric authorization binary both case cast check
collate collation column concurrently constraint create cross current_catalog current_date
current_role current_schema current_time current_timestamp current_user default deferrable desc
distinct do else end except false fetch for foreign freeze from full grant group having ilike in
initially inner intersect into is isnull join lateral leading left like limit localtime
localtimestamp natural not notnull null offset on only or order outer overlaps placing primary
references returning right select session_user similar some symmetric system_user table
tablesample then to trailing true union unique user using variadic verbose when where window
with"""
PG_KEYWORDS = frozenset(_KEYWORDS.split())


_LOWER = str.maketrans({chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)})


def _render(tree: exp.Expression, params: list, driver: str, tr: Translation
            ) -> tuple[str, list[str]]:
    for ph in list(tree.find_all(exp.Placeholder)):
        name = ph.name or ""
        if name.startswith("__p"):
            ph.replace(exp.var(f"__PARAM{name[3:]}__"))
    sql = tree.sql(dialect="postgres")
    return _substitute(sql, params, driver, tr)


def _substitute(sql: str, params: list, driver: str, tr: Translation | None
                ) -> tuple[str, list[str]]:
    """Sentinels -> driver placeholders; the SQLite tokens in the driver's order."""
    if driver == "psycopg":
        if params and "%" in sql:
            sql = sql.replace("%", "%%")
            if tr is not None:
                tr.traps.append(make("psycopg-percent", "%"))
        order = []

        def psy(m: re.Match) -> str:
            order.append(_label(params[int(m.group(1))]))
            return "%s"

        return re.sub(r"__PARAM(\d+)__", psy, sql), order
    by_index: dict[int, str] = {}
    for p in params:
        by_index.setdefault(p.index, _label(p))
    sql = re.sub(r"__PARAM(\d+)__", lambda m: f"${params[int(m.group(1))].index}", sql)
    return sql, [by_index[i] for i in sorted(by_index)]


def _label(param) -> str:
    """How a parameter is named in reports: ``?`` gets its number (?1, ?2...)."""
    return f"?{param.index}" if param.token == "?" else param.token


def _sort_traps(traps: list[Trap], text: str) -> list[Trap]:
    """Findings in the order their snippets appear in the statement."""
    low = text.lower()

    def pos(t: Trap) -> int:
        i = low.find(t.snippet.lower()) if t.snippet else -1
        return i if i >= 0 else len(low)

    return sorted(traps, key=pos)


def _placeholders_text(original: str, driver: str) -> tuple[str, list[str]]:
    """Placeholders for text that could not be parsed (offsets are relative to the statement)."""
    params = find_params(original)
    text = original
    for k, p in reversed(list(enumerate(params))):
        text = text[:p.start] + f"__PARAM{k}__" + text[p.end:]
    return _substitute(text, params, driver, None)
