"""The Flux tokenizer: literals (strings, numbers, durations, RFC3339 times), identifiers, keywords, operators."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import FluxError, Unsupported
from .values import DURATION_UNITS_NS, Duration, Time, parse_rfc3339

_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))?")
_DURATION_RE = re.compile(r"(?:\d+(?:mo|ms|us|µs|ns|y|w|d|h|m|s))+")
_DURATION_PART_RE = re.compile(r"(\d+)(mo|ms|us|µs|ns|y|w|d|h|m|s)")
_FLOAT_RE = re.compile(r"\d+\.\d*|\.\d+")
_INT_RE = re.compile(r"\d+")
_IDENT_RE = re.compile(r"[^\W\d]\w*")
_OPERATORS = (
    "|>", "=>", "==", "!=", "<=", ">=", "=~", "!~", "<-",
    "=", "<", ">", "+", "-", "*", "/", "%", "^", "(", ")", "[", "]", "{", "}", ",", ":", ".", "?",
)  # fmt: skip
KEYWORDS = frozenset(
    {"and", "or", "not", "exists", "import", "package", "option", "return", "if", "then", "else",
     "builtin", "testcase"}
)  # fmt: skip


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    value: Any
    line: int
    col: int

    @property
    def where(self) -> str:
        return f"@{self.line}:{self.col}"


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    line, line_start = 1, 0
    n = len(source)

    def tok(kind_: str, text: str, value: Any, start: int) -> None:
        tokens.append(Token(kind_, text, value, line, start - line_start + 1))

    while i < n:
        c = source[i]
        if c == "\n":
            i += 1
            line, line_start = line + 1, i
            continue
        if c in " \t\r":
            i += 1
            continue
        if source.startswith("//", i):
            while i < n and source[i] != "\n":
                i += 1
            continue
        if c == '"':
            start = i
            value, i, lines = _lex_string(source, i, line, i - line_start + 1)
            tok("STRING", source[start:i], value, start)
            if lines:
                line += lines
                line_start = source.rfind("\n", 0, i) + 1
            continue
        if c.isdigit() or (c == "." and i + 1 < n and source[i + 1].isdigit()):
            start = i
            m = _DATETIME_RE.match(source, i)
            if m:
                tok("TIME", m[0], Time(parse_rfc3339(m[0])), start)
                i = m.end()
                continue
            m = _DURATION_RE.match(source, i)
            if m and not (m.end() < n and (source[m.end()].isalnum() or source[m.end()] == "_")):
                tok("DURATION", m[0], _duration_value(m[0], line, start - line_start + 1), start)
                i = m.end()
                continue
            m = _FLOAT_RE.match(source, i)
            if m:
                tok("FLOAT", m[0], float(m[0]), start)
                i = m.end()
                continue
            m = _INT_RE.match(source, i)
            assert m is not None
            if m.end() < n and (source[m.end()].isalpha() or source[m.end()] == "_"):
                raise FluxError(f"error @{line}:{start - line_start + 1}: invalid number {source[i : m.end() + 1]!r}")
            tok("INT", m[0], int(m[0]), start)
            i = m.end()
            continue
        m = _IDENT_RE.match(source, i)
        if m:
            kind_ = "KEYWORD" if m[0] in KEYWORDS else "IDENT"
            tok(kind_, m[0], m[0], i)
            i = m.end()
            continue
        for op in _OPERATORS:
            if source.startswith(op, i):
                tok("OP", op, op, i)
                i += len(op)
                break
        else:
            raise FluxError(f"error @{line}:{i - line_start + 1}: invalid character {c!r}")
    tokens.append(Token("EOF", "", None, line, i - line_start + 1))
    return tokens


def _duration_value(text: str, line: int, col: int) -> Duration:
    total = 0
    for magnitude, unit in _DURATION_PART_RE.findall(text):
        if unit in {"mo", "y"}:
            raise Unsupported(f"calendar duration unit {unit!r} in {text} (@{line}:{col})")
        total += int(magnitude) * DURATION_UNITS_NS[unit]
    return Duration(total)


_STRING_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$"}


def _lex_string(source: str, i: int, line: int, col: int) -> tuple[str, int, int]:
    out: list[str] = []
    lines = 0
    i += 1
    while i < len(source):
        c = source[i]
        if c == '"':
            return "".join(out), i + 1, lines
        if c == "\\":
            nxt = source[i + 1 : i + 2]
            if nxt in _STRING_ESCAPES:
                out.append(_STRING_ESCAPES[nxt])
                i += 2
                continue
            raise FluxError(f"error @{line}:{col}: invalid escape sequence \\{nxt} in string")
        if c == "$" and source.startswith("${", i):
            raise Unsupported(f"string interpolation (@{line}:{col})")
        if c == "\n":
            lines += 1
        out.append(c)
        i += 1
    raise FluxError(f"error @{line}:{col}: unterminated string literal")
