"""Expression rules: find each SQLite trap in a parsed statement and, where the SQLite meaning
can be kept exactly, rewrite it for Postgres.

Rules run bottom-up (children before parents) on the SQLite tree, after ``context.remember``
stored each node's original text. A rule returns a replacement node or None; either way it may
record findings with ``ctx.flag``. What sqlglot already translates correctly (``ifnull``,
``iif``, ``LIMIT a, b``, ``IS``, ``NULLS FIRST``) is only noted; what it gets wrong or leaves
SQLite-only is rewritten here, each verified against both databases by the test corpus.
"""

from __future__ import annotations

import re

from sqlglot import exp

from ..dialect.build import cast, func, is_predicate, number_value, string_value, template
from .catalog import TEMPORAL, ColumnInfo
from .context import MAPPED, NUMBER_TYPES, Ctx, src
from .funcrules import (
    COMPARISONS,
    anonymous,
    current,
    date,
    json_func,
    least_greatest,
    no_function,
    rand,
    substring,
    time_to_str,
    typeof,
)

ROWID_NAMES = ("rowid", "_rowid_", "oid")
_TEXT_CONTEXT = (exp.Substring, exp.DPipe, exp.Like, exp.Length, exp.GroupConcat, exp.Upper,
                 exp.Lower, exp.Trim, exp.StrPosition, exp.Concat, exp.Glob)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def apply(tree: exp.Expression, ctx: Ctx) -> exp.Expression:
    """Run every rule over ``tree`` bottom-up; returns the (possibly new) root."""
    root = tree
    for node in reversed(list(tree.walk())):
        if not isinstance(node, exp.Expression):
            continue
        rule = RULES.get(type(node))
        if rule is None:
            continue
        new = rule(node, ctx)
        if new is not None and new is not node:
            if node is root:
                root = new
            else:
                node.replace(new)
    return root


# -- columns, conditions, literals ----------------------------------------------------------------


def _in_condition(node: exp.Expression) -> bool:
    parent = node.parent
    if isinstance(parent, (exp.Where, exp.Having, exp.And, exp.Or, exp.Not)):
        return True
    if isinstance(parent, exp.If) and node.arg_key == "this":
        case = parent.parent  # in CASE x WHEN v the v is a value, not a condition
        return not (isinstance(case, exp.Case) and case.this is not None)
    return isinstance(parent, exp.Join) and node.arg_key == "on"


def _column(node: exp.Column, ctx: Ctx) -> exp.Expression | None:
    name = node.name
    info = ctx.column(node)
    if info is None and name.lower() in ROWID_NAMES and not node.this.quoted:
        return _rowid(node, ctx)
    if info is None and not node.table and node.this.quoted and name in ctx.dq:
        literal = _dq_string(node, ctx)
        if literal is not None:
            return literal
    if info is not None and info.pg_type in MAPPED:
        return _mapped(node, ctx, info)
    if _in_condition(node):
        return _bool_column(node, ctx, info.pg_type if info else None)
    return None


def _projection(node: exp.Expression) -> bool:
    parent = node.parent
    if isinstance(parent, exp.Alias):
        node, parent = parent, parent.parent
    return isinstance(parent, exp.Select) and node.arg_key == "expressions"


def sqlite_text(node: exp.Expression, info: ColumnInfo) -> exp.Expression | None:
    """The Postgres value rendered as SQLite stored it (dates and times), else None."""
    layout = info.text_layout
    if info.pg_type in TEMPORAL and layout:
        value = template("_1 AT TIME ZONE 'UTC'", node) if info.pg_type == "timestamptz" else node
        return func("TO_CHAR", value.copy(), exp.Literal.string(layout))
    if info.pg_type in ("uuid", "json"):
        return cast(node.copy(), "text")
    return None


def _mapped(node: exp.Column, ctx: Ctx, info: ColumnInfo) -> exp.Expression | None:
    """A column the copy gave a richer Postgres type (timestamp, date, boolean, uuid, json)."""
    parent, col, pg = node.parent, src(node), info.pg_type
    if isinstance(parent, _TEXT_CONTEXT):
        text = sqlite_text(node, info)
        if text is not None:
            how = text.sql(dialect="postgres")
            ctx.flag("mapped-text", node, fixed=True, col=col, pg_type=pg, how=how)
            return text
    if _projection(node):
        _mapped_projection(node, ctx, info)
    elif isinstance(parent, (*COMPARISONS, exp.Between)) and pg in TEMPORAL:
        others = [a for a in parent.args.values() if isinstance(a, exp.Expression) and a is not node]
        if any(string_value(a) or isinstance(a, exp.Placeholder) for a in others):
            ctx.flag("temporal-compare", parent, col=col, pg_type=pg,
                     severity="differs" if _date_bound(parent, node, others) else None)
    return None


_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date_bound(parent: exp.Expression, col: exp.Expression, others: list) -> bool:
    """A date-only literal as an inclusive upper bound or an equality: as text it sorts before
    every time of that day (SQLite), as a time it is that day's midnight (Postgres)."""
    dates = [a for a in others if _DATE_ONLY.fullmatch(string_value(a) or "")]
    if not dates or (pg_time := col.parent) is None:
        return False
    if isinstance(parent, exp.Between):
        return dates[-1] is parent.args.get("high")
    flipped = parent.this is not col
    upper = (exp.LTE, exp.GT) if not flipped else (exp.GTE, exp.LT)
    return isinstance(pg_time, (exp.EQ, *upper))


def _mapped_projection(node: exp.Column, ctx: Ctx, info: ColumnInfo) -> None:
    col, pg = src(node), info.pg_type
    text = sqlite_text(node, info)
    if pg in TEMPORAL:
        returns = "a date/datetime object instead of a string"
        sqlite = "text" if "text" in info.classes else "numbers"
    elif pg == "boolean":
        returns, sqlite = "True/False instead of 1/0", "0/1 integers"
    elif pg == "uuid":
        returns, sqlite = "a UUID object instead of a string", "text"
    else:
        return
    advice = (f"select {text.sql(dialect='postgres')} where the old form is needed."
              if text is not None else "convert it in the application where the old form "
              "is needed.")
    ctx.flag("mapped-type", node, col=col, sqlite=sqlite, pg_type=pg, returns=returns,
             advice=advice)


def _rowid(node: exp.Column, ctx: Ctx) -> exp.Expression | None:
    table = ctx.table_of(node)
    if table and table.rowid_alias:
        ctx.flag("rowid", node, fixed=True,
                 action=f"translated to {table.name}.{table.rowid_alias}, its INTEGER PRIMARY KEY "
                 "(rowid is an alias of it in SQLite).")
        return exp.column(table.rowid_alias, table=node.table or None)
    why = (f"{table.name} has no INTEGER PRIMARY KEY; use its primary key" if table
           else "use the table's INTEGER PRIMARY KEY column (rowid is its alias in SQLite)")
    ctx.flag("rowid", node, action=why + ".")
    return None


def _dq_string(node: exp.Column, ctx: Ctx) -> exp.Expression | None:
    """SQLite reads a double-quoted word as a string when no column has that name. Without the
    schema that cannot be decided: a word that does not look like a name is flagged."""
    name = node.name
    if not ctx.complete:
        if not _IDENT.fullmatch(name) and name.lower() not in ctx.names:
            ctx.flag("dq-ambiguous", node, text=name)
        return None
    known = ctx.names | {c for t in ctx.tables.values() for c in t.columns}
    known |= {t.name.lower() for t in ctx.tables.values()}
    if name.lower() in known:
        return None
    ctx.flag("dq-string", f'"{name}"', fixed=True, text=name)
    return exp.Literal.string(name)


def _bool_column(node: exp.Expression, ctx: Ctx, pg_type: str | None) -> exp.Expression | None:
    what = f"column {src(node)}"
    if pg_type in NUMBER_TYPES:
        ctx.flag("bool-column", node, fixed=True, what=what,
                 action=f"translated to ({src(node)} <> 0).")
        return exp.Paren(this=exp.NEQ(this=node.copy(), expression=exp.Literal.number(0)))
    if pg_type != "boolean":
        ctx.flag("bool-column", node, what=what,
                 action=f"write ({src(node)} <> 0) if it holds numbers.")
    return None


def _literal(node: exp.Literal, ctx: Ctx) -> exp.Expression | None:
    if node.is_string or not _in_condition(node):
        return None
    value = number_value(node)
    ctx.flag("bool-column", node, fixed=True, what=f"the number {node.this}",
             action="translated to TRUE/FALSE.")
    return exp.true() if value else exp.false()


def _comparison(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    """``flag = TRUE`` and ``flag = 'true'`` against numeric columns."""
    for side, other in ((node.this, node.expression), (node.expression, node.this)):
        other_type = ctx.pg_type(other)
        if other_type == "boolean" and number_value(side) in (0, 1) and isinstance(
                side, exp.Literal):
            ctx.flag("bool-number", node, fixed=True, what=src(other))
            side.replace(exp.true() if number_value(side) else exp.false())
            continue
        if isinstance(side, exp.Boolean) and other_type != "boolean":
            ctx.flag("bool-literal", node, fixed=True, what=src(other))
            side.replace(exp.Literal.number(1 if side.this else 0))
        text = string_value(side)
        if text and text.lower() in ("true", "false") and other_type != "text":
            ctx.flag("bool-string", node, text=text)
    return None


# -- LIKE, GLOB, COLLATE ----------------------------------------------------------------------------


def _like(node: exp.Like, ctx: Ctx) -> exp.Expression | None:
    pattern = string_value(node.expression)
    lhs_type = ctx.pg_type(node.this)
    if lhs_type in NUMBER_TYPES:
        ctx.flag("like-nontext", node, fixed=True, what=src(node.this), pg_type=lhs_type)
        node.set("this", cast(node.this, "text"))
    elif pattern is None or re.search(r"[A-Za-z]", pattern):
        ilike = exp.ILike(this=node.this.copy(), expression=node.expression.copy())
        ctx.flag("like-case", node, suggestion=ilike.sql(dialect="postgres"))
    if pattern and "\\" in pattern and not isinstance(node.parent, exp.Escape):
        ctx.flag("like-backslash", node, fixed=True)
        return exp.Escape(this=node.copy(), expression=exp.Literal.string(""))
    return None


def glob_to_regex(pattern: str) -> str:
    """A GLOB pattern as an anchored POSIX regular expression (both are case-sensitive)."""
    out, i = ["^"], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and "]" in pattern[i + 2:]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1:j]
            neg = body.startswith("^")
            body = body[1:] if neg else body
            out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append("\\" + c if c in ".^$|()[]{}+\\" else c)
        i += 1
    return "".join(out) + "$"


def _glob(node: exp.Glob, ctx: Ctx) -> exp.Expression | None:
    pattern = string_value(node.expression)
    if pattern is None:
        ctx.flag("glob", node, action="rewrite it as a regular expression match (~).")
        return None
    ctx.flag("glob", node, fixed=True,
             action="translated to a regular expression match (~), case-sensitive like GLOB.")
    return exp.RegexpLike(this=node.this.copy(),
                          expression=exp.Literal.string(glob_to_regex(pattern)))


def _collate(node: exp.Collate, ctx: Ctx) -> exp.Expression | None:
    name = node.expression.name.upper()
    parent = node.parent
    if name == "BINARY":
        ctx.flag("collate-other", node, fixed=True, name=name,
                 action='translated to COLLATE "C" (byte order, like BINARY).')
        return exp.Collate(this=node.this.copy(), expression=exp.Identifier(this="C", quoted=True))
    if name not in ("NOCASE", "RTRIM"):
        ctx.flag("collate-other", node, name=name, action="Postgres has no such collation.")
        return None
    fold = "LOWER" if name == "NOCASE" else "RTRIM"
    code = "collate-nocase" if name == "NOCASE" else "collate-other"
    if isinstance(parent, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In)):
        for sib in (parent.this, parent.expression, *parent.expressions):
            if sib is not None and sib is not node and not isinstance(sib, exp.Collate):
                sib.replace(func(fold, sib.copy()))
    elif not isinstance(parent, exp.Ordered):
        ctx.flag(code, node, name=name, action=f"group or compare on {fold.lower()}(x) instead")
        return None
    ctx.flag(code, node, fixed=True, name=name,
             action=f"translated to {fold.lower()}() on both sides of the comparison or sort")
    return func(fold, node.this.copy())


# -- arithmetic, aggregates, concatenation -------------------------------------------------------


def _numeric_float(node: exp.Expression, operands: list, ctx: Ctx) -> None:
    if node.find_ancestor(exp.Round):
        return  # rounded: the float error is gone on the SQLite side too
    for op in operands:
        classes = ctx.classes(op)
        if classes and ctx.pg_type(op) == "numeric" and "real" in classes:
            ctx.flag("numeric-float", node, col=src(op))


def _bool_operands(node: exp.Expression, ctx: Ctx) -> None:
    for key in ("this", "expression"):
        op = node.args.get(key)
        if isinstance(op, exp.Expression) and is_predicate(op):
            ctx.flag("bool-arith", node, fixed=True)
            node.set(key, cast(op, "int"))


def _arith(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    _bool_operands(node, ctx)
    _numeric_float(node, [node.this, node.expression], ctx)
    return None


def _div(node: exp.Div, ctx: Ctx) -> exp.Expression | None:
    _arith(node, ctx)
    divisor = number_value(node.expression)
    if divisor:
        node.set("safe", False)  # sqlglot's NULLIF guard is noise for a nonzero literal
    left, right = node.this, node.expression
    types = (ctx.pg_type(left), ctx.pg_type(right))
    zero = ("" if divisor else " Division by zero gives NULL in SQLite and an error in "
            "Postgres; the translation keeps a NULLIF guard.")
    for op in (left, right):
        classes = ctx.classes(op)
        if classes and "integer" in classes and ctx.pg_type(op) == "numeric":
            ctx.flag("int-division", node, detail=(
                f"{src(op)} is numeric in Postgres but SQLite stores its whole values as "
                f"integers, so {src(node)} truncates in SQLite when both operands are integers "
                "(7/2 = 3) and is exact in Postgres (3.5)." + zero))
            return None
    if any(isinstance(op, exp.Literal) and "." in op.this for op in (left, right)):
        return None
    if None in types:
        ctx.flag("int-division", node, severity="review", detail=(
            f"{src(node)}: `/` truncates when both operands are integers, in SQLite and "
            "Postgres alike (7/2 = 3); but whole values that SQLite stores as integers in a "
            "NUMERIC/DECIMAL column are numeric in Postgres and divide exactly there." + zero))
    return None


def _sum_avg(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    arg = node.this
    if is_predicate(arg) or ctx.pg_type(arg) == "boolean":
        ctx.flag("bool-arith", node, fixed=True)
        node.set("this", cast(arg, "int"))
        arg = node.this
    _numeric_float(node, [arg], ctx)
    if isinstance(node, exp.Avg) and not isinstance(node.parent, exp.Cast) \
            and ctx.pg_type(arg) == "bigint":
        ctx.flag("avg-type", node, fixed=True)
        return cast(node.copy(), "double precision")
    return None


def _dpipe(node: exp.DPipe, ctx: Ctx) -> exp.Expression | None:
    types = [ctx.pg_type(node.this), ctx.pg_type(node.expression)]
    if all(t in NUMBER_TYPES for t in types):
        ctx.flag("concat-nontext", node, fixed=True, types=" || ".join(str(t) for t in types))
        node.set("this", cast(node.this, "text"))
    if isinstance(node.parent, exp.DPipe):
        return None  # one finding per chain, on the outermost ||
    for op in node.find_all(exp.Column):
        info = ctx.column(op)
        if info is None or not info.notnull:
            ctx.flag("concat-null", node)
            break
    return None


def _group_concat(node: exp.GroupConcat, ctx: Ctx) -> exp.Expression | None:
    arg = node.this
    target = arg.expressions[0] if isinstance(arg, exp.Distinct) and arg.expressions else arg
    if ctx.pg_type(target) != "text":
        target.replace(cast(target.copy(), "text"))
    sep = node.args.get("separator") or exp.Literal.string(",")
    value = src(target)
    ctx.flag("group-concat", node,
             suggestion=f"string_agg({value}, {sep.sql(dialect='postgres')} ORDER BY {value})")
    return None


def _cast(node: exp.Cast, ctx: Ctx) -> exp.Expression | None:
    if node.to.this != exp.DataType.Type.INT:
        return None
    node.set("to", exp.DataType.build("bigint"))
    if not ctx.ddl:
        ctx.flag("cast-int-width", node, fixed=True)
    arg = node.this
    text = string_value(arg)
    arg_type = ctx.pg_type(arg)
    if (text is not None and not re.fullmatch(r"\s*[-+]?\d+\s*", text)) or (
            text is None and arg_type not in NUMBER_TYPES):
        value = src(arg)
        ctx.flag("cast-int-text", node, what=value, suggestion=(
            f"CASE WHEN {value} IS NULL THEN NULL ELSE COALESCE(CAST(SUBSTRING({value} FROM "
            f"'^\\s*([-+]?[0-9]+)') AS BIGINT), 0) END"))
    return None


def _mod(node: exp.Mod, ctx: Ctx) -> exp.Expression | None:
    inner = node.this
    n = node.expression
    if isinstance(inner, exp.Abs) and isinstance(inner.this, exp.Rand) and number_value(n):
        ctx.flag("random", node, fixed=True, action="abs(random()) % n is translated to "
                 "CAST(FLOOR(RANDOM() * n) AS BIGINT).")
        return template("CAST(FLOOR(RANDOM() * _1) AS BIGINT)", n)
    return _arith(node, ctx)


def _if(node: exp.If, ctx: Ctx) -> exp.Expression | None:
    if not isinstance(node.parent, exp.Case):
        ctx.flag("iif", "iif()", fixed=True)
    return None


def _limit(node: exp.Limit, ctx: Ctx) -> exp.Expression | None:
    value = number_value(node.expression)
    if value is not None and value < 0 and node.parent is not None:
        ctx.flag("limit-negative", node, fixed=True, value=str(int(value)))
        node.parent.set("limit", None)
    return None


RULES = {
    exp.Column: _column,
    exp.Literal: _literal,
    exp.EQ: _comparison,
    exp.NEQ: _comparison,
    exp.Like: _like,
    exp.Glob: _glob,
    exp.Collate: _collate,
    exp.Add: _arith,
    exp.Sub: _arith,
    exp.Mul: _arith,
    exp.Div: _div,
    exp.Mod: _mod,
    exp.Sum: _sum_avg,
    exp.Avg: _sum_avg,
    exp.DPipe: _dpipe,
    exp.GroupConcat: _group_concat,
    exp.Least: least_greatest,
    exp.Greatest: least_greatest,
    exp.Cast: _cast,
    exp.Anonymous: anonymous,
    exp.Date: date,
    exp.TimeToStr: time_to_str,
    exp.CurrentTimestamp: current,
    exp.CurrentDate: current,
    exp.CurrentTime: current,
    exp.Typeof: typeof,
    exp.Substring: substring,
    exp.Rand: rand,
    exp.If: _if,
    exp.Limit: _limit,
    exp.JSONExtract: json_func,
    exp.JSONExtractScalar: json_func,
    exp.CurrentVersion: no_function("sqlite_version"),
    exp.Hex: no_function("hex"),
}
