"""Candidate SQL in a source tree: string literals per language, and statements of .sql files.

Python goes through ``ast`` (implicit concatenation, triple quotes and escapes are resolved by
Python itself; f-strings keep their constant parts with ``__exprN__`` for each replacement
field). Other languages use the tokenizers in ``literals``. Whether a literal is SQL is decided
later (``translate.looks_like_sql``); here we only find literals and where they are.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

from . import literals
from .literals import Literal
from .sqltext import split_statements

LANGUAGES = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".go": "go", ".rb": "ruby", ".php": "php", ".sql": "sql",
}
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", ".venv", "venv", "__pycache__", "vendor",
             "dist", "build", ".tox", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
MAX_FILE_BYTES = 2_000_000


def iter_files(paths: list[Path]) -> Iterator[Path]:
    """Source files under ``paths`` (files given directly are taken whatever their suffix)."""
    for path in paths:
        if path.is_file():
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            for name in sorted(files):
                p = Path(root) / name
                if p.suffix.lower() in LANGUAGES:
                    yield p


def language(path: Path) -> str | None:
    return LANGUAGES.get(path.suffix.lower())


def literals_of(path: Path) -> tuple[str | None, list[Literal]]:
    """(language, literals) of one file; unreadable or huge files give no literals."""
    lang = language(path)
    try:
        if lang is None or path.stat().st_size > MAX_FILE_BYTES:
            return lang, []
        src = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return lang, []
    if lang == "python":
        return lang, python_literals(src)
    if lang == "sql":
        return lang, [Literal(src, 1)]
    scanner = {"javascript": literals.scan_js, "typescript": literals.scan_js,
               "go": literals.scan_go, "ruby": literals.scan_ruby, "php": literals.scan_php}[lang]
    return lang, scanner(src)


def python_literals(src: str) -> list[Literal]:
    """String constants and f-strings of a Python module, docstrings excluded."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return []
    docstrings = _docstring_ids(tree)
    inner = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings and id(node) not in inner:
                out.append(Literal(node.value, node.lineno))
        elif isinstance(node, ast.JoinedStr):
            out.append(_fstring(node))
    return sorted(out, key=lambda lit: lit.line)


def _fstring(node: ast.JoinedStr) -> Literal:
    parts, n = [], 0
    for value in node.values:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            parts.append(value.value)
        else:
            n += 1
            parts.append(f"__expr{n}__")
    return Literal("".join(parts), node.lineno, interpolated=n > 0)


def _docstring_ids(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def statements_of(lit: Literal) -> Iterator[tuple[int, str]]:
    """(line, statement text) for each statement in a literal."""
    for st in split_statements(lit.text):
        yield lit.line + lit.text.count("\n", 0, st.code), st.text
