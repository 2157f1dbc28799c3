"""Small helpers to build Postgres expression trees for the rewrites."""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp

_SLOT = re.compile(r"_(\d+)")


def template(sql: str, *args: exp.Expression) -> exp.Expression:
    """Parse a Postgres expression whose columns ``_1``, ``_2``... stand for ``args`` (copied)."""
    tree = parse(sql)
    for col in list(tree.find_all(exp.Column)):
        m = _SLOT.fullmatch(col.name)
        if m and not col.table:
            col.replace(atom(args[int(m.group(1)) - 1].copy()))
    return tree


_ATOMS = (exp.Column, exp.Literal, exp.Func, exp.Paren, exp.Cast, exp.Placeholder, exp.Var,
          exp.Case, exp.Boolean, exp.Null, exp.Subquery)


def atom(node: exp.Expression) -> exp.Expression:
    """``node`` in parentheses unless it is atomic (sqlglot does not add them for us when a
    tree is spliced into another, and AT TIME ZONE binds tighter than +)."""
    return node if isinstance(node, _ATOMS) else exp.Paren(this=node)


def func(name: str, *args: exp.Expression) -> exp.Expression:
    """A function call rendered verbatim (sqlglot leaves Anonymous calls alone)."""
    return exp.Anonymous(this=name, expressions=list(args))


def cast(node: exp.Expression, to: str) -> exp.Cast:
    return exp.Cast(this=node, to=exp.DataType.build(to, dialect="postgres"))


def string_value(node: exp.Expression | None) -> str | None:
    """The value of a string literal, else None."""
    if isinstance(node, exp.Literal) and node.is_string:
        return node.this
    return None


def number_value(node: exp.Expression | None) -> float | None:
    """The value of a numeric literal (a negation included), else None."""
    if isinstance(node, exp.Neg):
        inner = number_value(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Paren):
        return number_value(node.this)
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this)
        except ValueError:
            return None
    return None


def is_predicate(node: exp.Expression) -> bool:
    """An expression whose value is a truth value (a comparison, LIKE, IN, AND, ...)."""
    if isinstance(node, exp.Paren):
        return is_predicate(node.this)
    return isinstance(node, (exp.Predicate, exp.Connector, exp.Not, exp.Boolean, exp.Exists,
                             exp.Like, exp.ILike, exp.Glob, exp.In, exp.Between, exp.Is))


def parse(sql: str, read: str = "postgres") -> exp.Expression:
    """``sqlglot.parse_one``, typed as the expression node it always is."""
    node = sqlglot.parse_one(sql, read=read)
    assert isinstance(node, exp.Expression)
    return node
