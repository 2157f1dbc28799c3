"""Function rules: SQLite's date/time functions, typeof(), substr() with a negative start,
random(), scalar min()/max(), total(), last_insert_rowid() and the functions Postgres lacks.

Companion of ``rules`` (which holds the dispatch table); the same conventions apply: each rule
gets a node whose children are already rewritten and returns a replacement or None.
"""

from __future__ import annotations

from sqlglot import exp

from ..dialect import timefuncs
from ..dialect.build import cast, func, number_value, template
from .catalog import TEMPORAL
from .context import MAPPED, Ctx, src

_NO_FUNCTION = {
    "printf": ": use format() (%s, %I, %L) or to_char() for numbers",
    "format": ": Postgres format() has different codes (%s, %I, %L)",
    "quote": ": use quote_literal() / quote_nullable()",
    "zeroblob": ": use decode(repeat('00', n), 'hex')",
    "randomblob": ": use gen_random_bytes(n) (pgcrypto) or gen_random_uuid()",
    "changes": ": read the row count from the command status (cursor.rowcount)",
    "total_changes": "",
    "soundex": ": install the fuzzystrmatch extension",
    "sqlite_version": ": version() returns the Postgres version string",
    "sqlite_source_id": "",
    "hex": ": use upper(encode(convert_to(x, 'UTF8'), 'hex'))",
    "unhex": ": use decode(x, 'hex')",
}
_HINTS = ("likely", "unlikely", "likelihood")


def least_greatest(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    args = [node.this, *node.expressions]
    if all(isinstance(a, exp.Literal) for a in args):
        return None
    pg = "LEAST" if isinstance(node, exp.Least) else "GREATEST"
    ctx.flag("minmax-scalar", node, fixed=True, func="min" if pg == "LEAST" else "max", pg=pg)
    any_null = " OR ".join(f"_{i + 1} IS NULL" for i, a in enumerate(args)
                           if not isinstance(a, exp.Literal))
    call = func(pg, *[a.copy() for a in args])
    return template(f"CASE WHEN {any_null} THEN NULL ELSE _{len(args) + 1} END", *args, call)




# -- functions ------------------------------------------------------------------------------------


def anonymous(node: exp.Anonymous, ctx: Ctx) -> exp.Expression | None:
    name = node.name.lower()
    args = node.expressions
    if name in timefuncs.TIME_FUNCS:
        return time_call(node, name, list(args), ctx)
    if name == "total" and len(args) == 1:
        ctx.flag("total", node, fixed=True)
        return template("CAST(COALESCE(SUM(_1), 0) AS DOUBLE PRECISION)", args[0])
    if name == "last_insert_rowid":
        ctx.flag("last-insert-rowid", node, fixed=True)
        return func("LASTVAL")
    if name in _HINTS and args:
        return args[0].copy()
    if name.startswith("json"):
        ctx.flag("json", node, name=name)
    elif name in _NO_FUNCTION:
        ctx.flag("no-function", node, name=name, hint=_NO_FUNCTION[name])
    return None


def time_call(node: exp.Expression, name: str, args: list, ctx: Ctx) -> exp.Expression | None:
    value = args[1] if name == "strftime" and len(args) > 1 else args[0] if args else None
    value_type = ctx.pg_type(value) if isinstance(value, exp.Column) else None
    if isinstance(value, exp.Column) and value_type in MAPPED:
        value.meta["time_value"] = True
    try:
        res = timefuncs.translate_call(name, args, value_type)
    except timefuncs.Unsupported as exc:
        ctx.flag("time-unsupported", node, func=name, detail=str(exc))
        return None
    ctx.flag("time-func", node, fixed=True, func=name, target=res.target)
    if res.uses_now:
        ctx.flag("time-now", node, fixed=True)
    if res.month_math:
        ctx.flag("time-month", node)
    other = compared_with(node)
    other_type = ctx.pg_type(other) if other is not None else None
    if res.ts is not None and other is not None and other_type in TEMPORAL:
        # a timestamptz column compared with SQLite's text form: compare as time instead
        parent = node.parent if isinstance(node.parent, exp.Expression) else None
        ctx.flag("temporal-compare", parent, col=src(other), pg_type=other_type)
        if other_type == "date":
            return cast(res.ts, "date")
        return template("_1 AT TIME ZONE 'UTC'", res.ts) if other_type == "timestamptz" \
            else res.ts
    return res.node


COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


def compared_with(node: exp.Expression) -> exp.Expression | None:
    parent = node.parent
    if isinstance(parent, COMPARISONS):
        return parent.expression if node is parent.this else parent.this
    if isinstance(parent, exp.Between):
        return parent.this if node is not parent.this else None
    return None


def date(node: exp.Date, ctx: Ctx) -> exp.Expression | None:
    args = ([node.this] if node.this is not None else []) + list(node.expressions)
    return time_call(node, "date", args, ctx)


def time_to_str(node: exp.TimeToStr, ctx: Ctx) -> exp.Expression | None:
    value = node.this.this if isinstance(node.this, exp.TsOrDsToTimestamp) else node.this
    return time_call(node, "strftime", [node.args["format"], value], ctx)


def current(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    if ctx.ddl or node.find_ancestor(exp.ColumnDef):
        return None
    names: dict[type[exp.Expression], tuple[str, str, str]] = {
        exp.CurrentTimestamp: ("CURRENT_TIMESTAMP", "YYYY-MM-DD HH24:MI:SS", "timestamptz"),
        exp.CurrentDate: ("CURRENT_DATE", "YYYY-MM-DD", "date"),
        exp.CurrentTime: ("CURRENT_TIME", "HH24:MI:SS", "timetz"),
    }
    name, fmt, pg = names[type(node)]
    ctx.flag("current-time", name, fixed=True, func=name, pg=pg)
    return func("TO_CHAR", template("now() AT TIME ZONE 'UTC'"), exp.Literal.string(fmt))


def typeof(node: exp.Typeof, ctx: Ctx) -> exp.Expression | None:
    ctx.flag("typeof", node, fixed=True)
    return template(
        "CASE WHEN _1 IS NULL THEN 'null' "
        "WHEN pg_typeof(_1) IN ('bigint'::regtype, 'integer'::regtype, 'smallint'::regtype) "
        "THEN 'integer' "
        "WHEN pg_typeof(_1) = 'numeric'::regtype THEN "
        "CASE WHEN CAST(_1 AS NUMERIC) = TRUNC(CAST(_1 AS NUMERIC)) THEN 'integer' "
        "ELSE 'real' END "
        "WHEN pg_typeof(_1) IN ('double precision'::regtype, 'real'::regtype) THEN 'real' "
        "WHEN pg_typeof(_1) = 'bytea'::regtype THEN 'blob' ELSE 'text' END", node.this)


def substring(node: exp.Substring, ctx: Ctx) -> exp.Expression | None:
    start = node.args.get("start")
    value = number_value(start)
    if value is not None and value >= 0:
        return None
    length = node.args.get("length")
    if value is None:
        if start is not None and not isinstance(start, exp.Literal):
            ctx.flag("substr-negative", node, severity="review",
                     action="If the start can be negative, use right() or length() arithmetic.")
        return None
    n = exp.Literal.number(int(-value))
    ctx.flag("substr-negative", node, fixed=True,
             action="Translated to right() / substring(x FROM length(x) + 1 - n).")
    if length is None:
        return func("RIGHT", node.this.copy(), n)
    return template("SUBSTRING(_1 FROM LENGTH(_1) + 1 - _2 FOR _3)", node.this, n, length)


def rand(node: exp.Rand, ctx: Ctx) -> exp.Expression | None:
    parent = node.parent
    if isinstance(parent, exp.Abs) and isinstance(parent.parent, exp.Mod):
        return None  # abs(random()) % n: rewritten by _mod
    if isinstance(parent, (exp.Ordered, exp.Order)):
        return None  # ORDER BY random() shuffles in both
    ctx.flag("random", node, action="scale it explicitly, e.g. floor(random() * n).")
    return None




def json_func(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    name = src(node).split("(", 1)[0].lower()
    ctx.flag("json", node, name=name)
    return None


def no_function(name: str):
    def rule(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
        ctx.flag("no-function", node, name=name, hint=_NO_FUNCTION.get(name, ""))
        return None
    return rule
