"""String literals in JavaScript/TypeScript, Go, Ruby and PHP source, with their line numbers.

A small hand-written tokenizer per language family: it knows each language's quotes, escapes,
comments, template literals / interpolation and (where easy) heredocs, so that SQL inside
comments is ignored and a quote inside a string does not derail the scan. Interpolated parts
become ``__exprN__`` markers (so the SQL still parses and the report can say it was built by
interpolation); in a tagged template (``sql`...${id}...```) they are bind parameters and
become ``?``.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Any

from .sqltext import line_of


@dataclass(frozen=True)
class Literal:
    text: str
    line: int  # where the literal starts
    interpolated: bool = False
    tagged: bool = False


_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "b": "\b", "f": "\f", "v": "\v",
                   "a": "\a", "e": "\x1b", "s": " "}
_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F]+\}|u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|\n|.)", re.S)


def unescape(body: str) -> str:
    """Backslash escapes common to C-family string literals."""
    def one(m: re.Match) -> str:
        e = m.group(1)
        if e == "\n":
            return ""
        if e[0] in "ux" and len(e) > 1:
            return chr(int(e[1:].strip("{}"), 16))
        return _SIMPLE_ESCAPES.get(e, e)
    return _ESCAPE.sub(one, body)


def _quoted_end(src: str, i: int, q: str) -> int:
    """Index just past the closing quote of the literal opened at ``i`` (backslash escapes)."""
    j = i + 1
    while j < len(src):
        c = src[j]
        if c == "\\":
            j += 2
            continue
        if c == q:
            return j + 1
        j += 1
    return len(src)


_REGEX_PREV = set("(,=:[!&|?{};+-*%<>~^") | {"", "return", "typeof", "case", "do", "else", "in"}


class _Scanner:
    """Shared machinery: position, output, previous significant token (regex heuristics)."""

    def __init__(self, src: str):
        self.src, self.i, self.prev = src, 0, ""
        self.out: list[Any] = []
        self.markers = 0

    def add(self, start: int, text: str, interpolated: bool = False, tagged: bool = False):
        self.out.append(Literal(text, line_of(self.src, start), interpolated, tagged))
        self.prev = "lit"

    def marker(self) -> str:
        self.markers += 1
        return f"__expr{self.markers}__"

    def skip_line_comment(self) -> None:
        j = self.src.find("\n", self.i)
        self.i = len(self.src) if j < 0 else j

    def skip_block_comment(self, close: str = "*/") -> None:
        j = self.src.find(close, self.i + 2)
        self.i = len(self.src) if j < 0 else j + len(close)

    def word_or_punct(self) -> None:
        m = re.compile(r"[A-Za-z_$][\w$]*|\d[\w.]*").match(self.src, self.i)
        if m:
            self.prev = m.group(0)
            self.i = m.end()
        else:
            self.prev = self.src[self.i]
            self.i += 1

    def skip_regex(self) -> None:
        j, in_class = self.i + 1, False
        while j < len(self.src) and self.src[j] != "\n":
            c = self.src[j]
            if c == "\\":
                j += 2
                continue
            if c == "[":
                in_class = True
            elif c == "]":
                in_class = False
            elif c == "/" and not in_class:
                break
            j += 1
        self.i = j + 1
        self.prev = "lit"


def scan_js(src: str) -> list[Literal]:
    """JavaScript / TypeScript: quotes, template literals (nested ${}), comments, regexes."""
    s = _Scanner(src)
    while s.i < len(src):
        c = src[s.i]
        if c.isspace():
            s.i += 1
        elif src.startswith("//", s.i):
            s.skip_line_comment()
        elif src.startswith("/*", s.i):
            s.skip_block_comment()
        elif c in "'\"":
            end = _quoted_end(src, s.i, c)
            s.add(s.i, unescape(src[s.i + 1:end - 1]))
            s.i = end
        elif c == "`":
            tagged = s.i > 0 and (src[s.i - 1].isalnum() or src[s.i - 1] in "_$")
            start = s.i
            s.i, text, parts = _template(src, s.i, s, tagged)
            s.add(start, text, interpolated=bool(parts) and not tagged, tagged=tagged)
        elif c == "/" and s.prev in _REGEX_PREV:
            s.skip_regex()
        else:
            s.word_or_punct()
    return s.out


def _template(src: str, i: int, s: _Scanner, tagged: bool) -> tuple[int, str, int]:
    """Parse a template literal at ``i``: (end, text with markers, number of ${} parts)."""
    j, pieces, parts, raw_start = i + 1, [], 0, i + 1
    while j < len(src):
        c = src[j]
        if c == "\\":
            j += 2
            continue
        if c == "`":
            pieces.append(unescape(src[raw_start:j]))
            return j + 1, "".join(pieces), parts
        if src.startswith("${", j):
            pieces.append(unescape(src[raw_start:j]))
            j = _js_expr_end(src, j + 2)
            pieces.append("?" if tagged else s.marker())
            parts += 1
            raw_start = j
            continue
        j += 1
    pieces.append(unescape(src[raw_start:]))
    return len(src), "".join(pieces), parts


def _js_expr_end(src: str, j: int) -> int:
    """Index just past the ``}`` closing a ``${`` expression (strings and nesting skipped)."""
    depth = 1
    while j < len(src) and depth:
        c = src[j]
        if c in "'\"":
            j = _quoted_end(src, j, c)
            continue
        if c == "`":
            j = _template(src, j, _Scanner(src), False)[0]
            continue
        depth += {"{": 1, "}": -1}.get(c, 0)
        j += 1
    return j


def scan_go(src: str) -> list[Literal]:
    """Go: interpreted "..." strings, raw `...` strings, runes, comments."""
    s = _Scanner(src)
    while s.i < len(src):
        c = src[s.i]
        if src.startswith("//", s.i):
            s.skip_line_comment()
        elif src.startswith("/*", s.i):
            s.skip_block_comment()
        elif c == '"':
            end = _quoted_end(src, s.i, c)
            s.add(s.i, unescape(src[s.i + 1:end - 1]))
            s.i = end
        elif c == "`":
            end = src.find("`", s.i + 1)
            end = len(src) if end < 0 else end
            s.add(s.i, src[s.i + 1:end].replace("\r", ""))
            s.i = end + 1
        elif c == "'":
            s.i = _quoted_end(src, s.i, c)
        else:
            s.i += 1
    return s.out


_RUBY_HEREDOC = re.compile(r"<<([~-]?)(['\"]?)([A-Z_][A-Z0-9_]*)\2")
_RUBY_PCT = re.compile(r"%([qQ]?)([^\w\s])")
_PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}


def _interpolate(body: str, pattern: re.Pattern, s: _Scanner) -> tuple[str, bool]:
    out, n = pattern.subn(lambda _m: s.marker(), body)
    return out, n > 0


_RUBY_INTERP = re.compile(r"#\{[^}]*\}")


def scan_ruby(src: str) -> list[Literal]:
    """Ruby: quotes, %q/%Q, heredocs (<<~, <<-, <<), #{} interpolation, # and =begin comments."""
    s = _Scanner(src)
    pending: list[tuple[int, str, bool, bool]] = []  # heredocs opened on the current line
    while s.i < len(src):
        c = src[s.i]
        if c == "\n" and pending:
            s.i = _ruby_heredocs(src, s.i + 1, pending, s)
            pending.clear()
        elif c == "#":
            s.skip_line_comment()
        elif src.startswith("=begin", s.i) and (s.i == 0 or src[s.i - 1] == "\n"):
            s.skip_block_comment("\n=end")
        elif c in "'\"":
            _single_or_double(src, c, _RUBY_INTERP, s)
        elif (m := _RUBY_HEREDOC.match(src, s.i)) and (m.group(1) or not s.prev[-1:].isalnum()):
            pending.append((s.i, m.group(3), m.group(1) == "~", m.group(2) != "'"))
            s.i = m.end()
        elif (m := _RUBY_PCT.match(src, s.i)) and s.prev in _REGEX_PREV:
            s.i = _ruby_percent(src, s.i, m, s)
        elif c == "/" and s.prev in _REGEX_PREV:
            s.skip_regex()
        else:
            s.word_or_punct()
    return s.out


def _ruby_percent(src: str, i: int, m: re.Match, s: _Scanner) -> int:
    open_, kind = m.group(2), m.group(1)
    close = _PAIRS.get(open_, open_)
    j, depth = m.end(), 1
    while j < len(src):
        if src[j] == "\\":
            j += 2
            continue
        if src[j] == open_ and close != open_:
            depth += 1
        elif src[j] == close:
            depth -= 1
            if not depth:
                break
        j += 1
    body = src[m.end():j]
    if kind == "q":
        s.add(i, body)
    else:
        text, interp = _interpolate(unescape(body), _RUBY_INTERP, s)
        s.add(i, text, interp)
    return j + 1


def _single_or_double(src: str, quote: str, interp: re.Pattern[str], s: _Scanner) -> None:
    """A Ruby/PHP string at ``s.i``: single quotes take only \\' and \\\\; double quotes
    take escapes and interpolation (``interp``)."""
    end = _quoted_end(src, s.i, quote)
    body = src[s.i + 1:end - 1]
    if quote == "'":
        s.add(s.i, body.replace("\\'", "'").replace("\\\\", "\\"))
    else:
        text, parts = _interpolate(unescape(body), interp, s)
        s.add(s.i, text, parts)
    s.i = end


def _ruby_heredocs(src: str, j: int, pending: list, s: _Scanner) -> int:
    """Read the bodies of the heredocs opened on the previous line; returns where code resumes."""
    for _start, ident, squiggly, interp in pending:
        end_m = re.compile(rf"^[ \t]*{ident}[ \t]*$", re.M).search(src, j)
        body_end = end_m.start() if end_m else len(src)
        body = src[j:body_end]
        if squiggly:
            body = textwrap.dedent(body)
        if interp:
            body, has = _interpolate(unescape(body), _RUBY_INTERP, s)
        else:
            has = False
        s.out.append(Literal(body, line_of(src, j), has))  # the line where the body starts
        j = src.find("\n", end_m.end()) + 1 if end_m else len(src)
        if j == 0:
            j = len(src)
    return j


_PHP_INTERP = re.compile(r"\{\$[^}]*\}|\$[A-Za-z_]\w*(?:->\w+|\[[^\]]*\])*")
_PHP_HEREDOC = re.compile(r"<<<[ \t]*(['\"]?)([A-Za-z_]\w*)\1\r?\n")


def scan_php(src: str) -> list[Literal]:
    """PHP: quotes, heredoc/nowdoc, $var interpolation, //, # and /* */ comments."""
    s = _Scanner(src)
    while s.i < len(src):
        c = src[s.i]
        if src.startswith("//", s.i) or (c == "#" and not src.startswith("#[", s.i)):
            s.skip_line_comment()
        elif src.startswith("/*", s.i):
            s.skip_block_comment()
        elif c in "'\"":
            _single_or_double(src, c, _PHP_INTERP, s)
        elif m := _PHP_HEREDOC.match(src, s.i):
            s.i = _php_heredoc(src, s.i, m, s)
        else:
            s.word_or_punct()
    return s.out


def _php_heredoc(src: str, i: int, m: re.Match, s: _Scanner) -> int:
    ident, nowdoc = m.group(2), m.group(1) == "'"
    end_m = re.compile(rf"^([ \t]*){ident}\b", re.M).search(src, m.end())
    body_end = end_m.start() if end_m else len(src)
    body = src[m.end():body_end].rstrip("\n")
    indent = end_m.group(1) if end_m else ""
    if indent:
        body = "\n".join(ln[len(indent):] if ln.startswith(indent) else ln
                         for ln in body.split("\n"))
    if nowdoc:
        s.add(m.end(), body)  # reported at the line where the body starts
    else:
        text, interp = _interpolate(unescape(body), _PHP_INTERP, s)
        s.add(m.end(), text, interp)
    return end_m.end() if end_m else len(src)
