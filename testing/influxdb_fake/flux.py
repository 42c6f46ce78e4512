"""A restricted Flux evaluator and an annotated-CSV encoder.

Supports the subset of Flux listed in README.md, with the semantics documented by InfluxData
(docs.influxdata.com/flux/v0/stdlib/universe/...). Anything outside it raises `Unsupported`,
whose message starts with "fake influxdb does not support:".
"""

from __future__ import annotations

import calendar
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from .line_protocol import UInt

# ----------------------------------------------------------------------------- errors and values


class FluxError(Exception):
    """A query error; the server answers `status` with an Error body of `code`."""

    status = 400
    code = "invalid"


class Unsupported(FluxError):
    def __init__(self, what: str) -> None:
        super().__init__(f"fake influxdb does not support: {what}")


class BucketNotFound(FluxError):
    status = 404
    code = "not found"


@dataclass(frozen=True, order=True)
class Time:
    ns: int


@dataclass(frozen=True, order=True)
class Duration:
    ns: int


class Record(dict[str, Any]):
    """A Flux record. `strict` records (params) raise on a missing label; rows yield null."""

    def __init__(self, values: Mapping[str, Any], *, strict: bool = False, name: str = "record") -> None:
        super().__init__(values)
        self.strict = strict
        self.name = name

    def get_label(self, label: str) -> Any:
        if label in self:
            return self[label]
        if self.strict:
            raise FluxError(f"type error: {self.name} is missing label {label!r}")
        return None


class StoredPoint(Protocol):
    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, Any]
    time_ns: int


# Column types: string, int, uint, float, bool, time.
CSV_DATATYPES = {
    "string": "string",
    "int": "long",
    "uint": "unsignedLong",
    "float": "double",
    "bool": "boolean",
    "time": "dateTime:RFC3339",
}


@dataclass
class Table:
    columns: list[tuple[str, str]]
    key: list[str]
    key_values: dict[str, Any]
    rows: list[dict[str, Any]]

    def col_type(self, label: str) -> str | None:
        for name, typ in self.columns:
            if name == label:
                return typ
        return None

    def has(self, label: str) -> bool:
        return self.col_type(label) is not None

    def group_id(self) -> tuple[Any, ...]:
        return tuple((label, self.key_values.get(label)) for label in sorted(self.key))


@dataclass
class Stream:
    tables: list[Table]
    bucket: str
    bounded: bool


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, UInt):
        return "uint"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Time):
        return "time"
    if isinstance(value, Duration):
        return "duration"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Record):
        return "record"
    if isinstance(value, Stream):
        return "stream"
    if isinstance(value, FunctionValue | Builtin):
        return "function"
    return type(value).__name__


def field_kind(value: Any) -> str:
    k = kind(value)
    if k not in {"string", "int", "uint", "float", "bool"}:
        raise FluxError(f"unsupported stored value {value!r}")
    return k


# ----------------------------------------------------------------------------- times

_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2}))?"
)


def parse_rfc3339(text: str) -> int:
    m = _RFC3339_RE.fullmatch(text)
    if not m:
        raise FluxError(f"invalid RFC3339 time {text!r}")
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    hour = int(m[4] or 0)
    minute = int(m[5] or 0)
    second = int(m[6] or 0)
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        raise FluxError(f"invalid RFC3339 time {text!r}")
    if hour > 23 or minute > 59 or second > 59:
        raise FluxError(f"invalid RFC3339 time {text!r}")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    zone = m[8]
    if zone and zone not in "Zz":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    frac = (m[7] or "").ljust(9, "0")
    return seconds * 1_000_000_000 + int(frac or 0)


def format_rfc3339nano(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: fraction without trailing zeros, omitted when zero."""
    seconds, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac:
        return f"{base}.{f'{frac:09d}'.rstrip('0')}Z"
    return f"{base}Z"


def format_float(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): shortest round-trip digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# ----------------------------------------------------------------------------- lexer

DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}

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


# ----------------------------------------------------------------------------- AST


@dataclass
class Node:
    where: str = field(default="", kw_only=True)


@dataclass
class Literal(Node):
    value: Any


@dataclass
class Ident(Node):
    name: str


@dataclass
class ArrayExpr(Node):
    elements: list[Node]


@dataclass
class Member(Node):
    obj: Node
    prop: str


@dataclass
class Index(Node):
    obj: Node
    index: Node


@dataclass
class Call(Node):
    callee: Node
    args: list[tuple[str, Node]]


@dataclass
class Pipe(Node):
    arg: Node
    call: Call


@dataclass
class Unary(Node):
    op: str
    arg: Node


@dataclass
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass
class Param:
    name: str
    default: Node | None
    pipe: bool


@dataclass
class FuncExpr(Node):
    params: list[Param]
    body: Node | Block


@dataclass
class Assign(Node):
    name: str
    value: Node


@dataclass
class ExprStmt(Node):
    expr: Node


@dataclass
class Block:
    statements: list[Assign]
    result: Node


COMPARISON_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})


class Parser:
    def __init__(self, source: str) -> None:
        self.tokens = tokenize(source)
        self.pos = 0

    # helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.pos + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        t = self.tokens[self.pos]
        self.pos += 1
        return t

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind == "OP" and self.tok.text in ops

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "KEYWORD" and self.tok.text in words

    def expect_op(self, op: str) -> Token:
        if not self.is_op(op):
            raise self.error(f"expected {op!r}")
        return self.advance()

    def error(self, message: str) -> FluxError:
        found = self.tok.text or "end of query"
        return FluxError(f"error {self.tok.where}: {message}, found {found!r}")

    # program
    def parse_program(self) -> list[Assign | ExprStmt]:
        statements: list[Assign | ExprStmt] = []
        while self.tok.kind != "EOF":
            statements.append(self.parse_statement())
        return statements

    def parse_statement(self) -> Assign | ExprStmt:
        t = self.tok
        if t.kind == "KEYWORD" and t.text in {"import", "package", "option", "builtin", "testcase"}:
            detail = f' "{self.peek().value}"' if t.text == "import" and self.peek().kind == "STRING" else ""
            raise Unsupported(f"{t.text} statements ({t.text}{detail} {t.where})")
        if t.kind == "KEYWORD" and t.text == "return":
            raise self.error("return outside of a function body")
        if t.kind == "IDENT" and self.peek().kind == "OP" and self.peek().text == "=":
            self.advance()
            self.advance()
            return Assign(t.text, self.parse_expression(), where=t.where)
        return ExprStmt(self.parse_expression(), where=t.where)

    # expressions, lowest precedence first
    def parse_expression(self) -> Node:
        if self.is_op("(") and self._looks_like_function():
            return self.parse_function()
        if self.is_kw("if"):
            raise Unsupported(f"conditional expressions (if/then/else {self.tok.where})")
        return self.parse_or()

    def parse_or(self) -> Node:
        node = self.parse_and()
        while self.is_kw("or"):
            t = self.advance()
            node = Binary("or", node, self.parse_and(), where=t.where)
        return node

    def parse_and(self) -> Node:
        node = self.parse_unary_logical()
        while self.is_kw("and"):
            t = self.advance()
            node = Binary("and", node, self.parse_unary_logical(), where=t.where)
        return node

    def parse_unary_logical(self) -> Node:
        if self.is_kw("not", "exists"):
            t = self.advance()
            return Unary(t.text, self.parse_unary_logical(), where=t.where)
        return self.parse_comparison()

    def parse_comparison(self) -> Node:
        node = self.parse_additive()
        while self.tok.kind == "OP" and (self.tok.text in COMPARISON_OPS or self.tok.text in {"=~", "!~"}):
            t = self.advance()
            if t.text in {"=~", "!~"}:
                raise Unsupported(f"regular expression operator {t.text} ({t.where})")
            node = Binary(t.text, node, self.parse_additive(), where=t.where)
        return node

    def parse_additive(self) -> Node:
        node = self.parse_multiplicative()
        while self.is_op("+", "-"):
            t = self.advance()
            node = Binary(t.text, node, self.parse_multiplicative(), where=t.where)
        return node

    def parse_multiplicative(self) -> Node:
        node = self.parse_pipe()
        while self.is_op("*", "/", "%", "^"):
            t = self.advance()
            node = Binary(t.text, node, self.parse_pipe(), where=t.where)
        return node

    def parse_pipe(self) -> Node:
        node = self.parse_unary()
        while self.is_op("|>"):
            t = self.advance()
            call = self.parse_postfix()
            if not isinstance(call, Call):
                raise FluxError(f"error {t.where}: pipe destination must be a function call")
            node = Pipe(node, call, where=t.where)
        return node

    def parse_unary(self) -> Node:
        if self.is_op("-", "+"):
            t = self.advance()
            return Unary(t.text, self.parse_unary(), where=t.where)
        return self.parse_postfix()

    def parse_postfix(self) -> Node:
        node = self.parse_primary()
        while True:
            if self.is_op("."):
                self.advance()
                name = self.tok
                if name.kind not in {"IDENT", "KEYWORD"}:
                    raise self.error("expected a property name after '.'")
                self.advance()
                node = Member(node, name.text, where=name.where)
            elif self.is_op("["):
                t = self.advance()
                index = self.parse_expression()
                self.expect_op("]")
                if isinstance(index, Literal) and isinstance(index.value, str):
                    node = Member(node, index.value, where=t.where)
                else:
                    node = Index(node, index, where=t.where)
            elif self.is_op("("):
                t = self.advance()
                node = Call(node, self.parse_arguments(), where=t.where)
            else:
                return node

    def parse_arguments(self) -> list[tuple[str, Node]]:
        args: list[tuple[str, Node]] = []
        seen: set[str] = set()
        while not self.is_op(")"):
            name = self.tok
            if name.kind != "IDENT":
                raise self.error("expected a named argument (Flux arguments are name: value)")
            self.advance()
            if self.is_op(":"):
                self.advance()
                value = self.parse_expression()
            else:
                value = Ident(name.text, where=name.where)
            if name.text in seen:
                raise FluxError(f"error {name.where}: duplicate argument {name.text!r}")
            seen.add(name.text)
            args.append((name.text, value))
            if not self.is_op(","):
                break
            self.advance()
        self.expect_op(")")
        return args

    def parse_primary(self) -> Node:
        t = self.tok
        if t.kind in {"INT", "FLOAT", "STRING", "DURATION", "TIME"}:
            self.advance()
            return Literal(t.value, where=t.where)
        if t.kind == "IDENT":
            self.advance()
            return Ident(t.text, where=t.where)
        if self.is_op("["):
            self.advance()
            elements: list[Node] = []
            while not self.is_op("]"):
                elements.append(self.parse_expression())
                if not self.is_op(","):
                    break
                self.advance()
            self.expect_op("]")
            return ArrayExpr(elements, where=t.where)
        if self.is_op("("):
            self.advance()
            node = self.parse_expression()
            self.expect_op(")")
            return node
        if self.is_op("{"):
            raise Unsupported(f"record literals ({t.where})")
        if self.is_op("/"):
            raise Unsupported(f"regular expression literals ({t.where})")
        raise self.error("expected an expression")

    def _looks_like_function(self) -> bool:
        depth = 0
        for j in range(self.pos, len(self.tokens)):
            t = self.tokens[j]
            if t.kind == "OP" and t.text == "(":
                depth += 1
            elif t.kind == "OP" and t.text == ")":
                depth -= 1
                if depth == 0:
                    nxt = self.tokens[j + 1] if j + 1 < len(self.tokens) else None
                    return nxt is not None and nxt.kind == "OP" and nxt.text == "=>"
        return False

    def parse_function(self) -> FuncExpr:
        start = self.expect_op("(")
        params: list[Param] = []
        while not self.is_op(")"):
            name = self.tok
            if name.kind != "IDENT":
                raise self.error("expected a parameter name")
            self.advance()
            default: Node | None = None
            pipe = False
            if self.is_op("="):
                self.advance()
                if self.is_op("<-"):
                    self.advance()
                    pipe = True
                else:
                    default = self.parse_expression()
            elif self.is_op("<-"):
                self.advance()
                pipe = True
            params.append(Param(name.text, default, pipe))
            if not self.is_op(","):
                break
            self.advance()
        self.expect_op(")")
        self.expect_op("=>")
        if self.is_op("{"):
            return FuncExpr(params, self.parse_block(), where=start.where)
        return FuncExpr(params, self.parse_expression(), where=start.where)

    def parse_block(self) -> Block:
        self.expect_op("{")
        statements: list[Assign] = []
        while not self.is_kw("return"):
            stmt = self.parse_statement()
            if not isinstance(stmt, Assign):
                raise FluxError(f"error {stmt.where}: only assignments may precede return in a function block")
            statements.append(stmt)
        self.advance()
        result = self.parse_expression()
        self.expect_op("}")
        return Block(statements, result)


def parse(source: str) -> list[Assign | ExprStmt]:
    return Parser(source).parse_program()


# ----------------------------------------------------------------------------- evaluation


@dataclass
class FunctionValue:
    node: FuncExpr
    scope: dict[str, Any]


@dataclass
class Builtin:
    name: str
    params: dict[str, bool]
    impl: Callable[[Context, dict[str, Any]], Any]
    pipe: bool = False


@dataclass
class Context:
    now_ns: int
    load_bucket: Callable[[str], Iterable[StoredPoint] | None]
    results: list[tuple[str, Stream]] = field(default_factory=list)
    yielded: set[int] = field(default_factory=set)


# fmt: off
KNOWN_UNSUPPORTED_FUNCTIONS = frozenset({
    "map", "reduce", "window", "fill", "distinct", "unique", "duplicate", "rename", "set", "union", "join",
    "quantile", "median", "spread", "stddev", "derivative", "difference", "elapsed", "increase", "integral",
    "movingAverage", "timedMovingAverage", "exponentialMovingAverage", "cumulativeSum", "histogram",
    "histogramQuantile", "top", "bottom", "highestMax", "highestAverage", "highestCurrent", "lowestMin",
    "lowestAverage", "lowestCurrent", "sample", "shift", "timeShift", "truncateTimeColumn", "columns", "keys",
    "keyValues", "string", "int", "float", "bool", "time", "duration", "uint", "length", "display",
    "findRecord", "findColumn", "getRecord", "getColumn", "tableFind", "to", "sleep", "stateCount",
    "stateDuration", "hourSelection", "holtWinters", "pearsonr", "cov", "covariance", "mode", "die", "buckets",
})
# fmt: on


def evaluate(node: Node, scope: dict[str, Any], ctx: Context) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Ident):
        if node.name not in scope:
            if node.name in KNOWN_UNSUPPORTED_FUNCTIONS:
                raise Unsupported(f"{node.name}() ({node.where})")
            raise FluxError(f"error {node.where}: undefined identifier {node.name}")
        return scope[node.name]
    if isinstance(node, ArrayExpr):
        values = [evaluate(e, scope, ctx) for e in node.elements]
        kinds = {kind(v) for v in values}
        if len(kinds) > 1:
            raise FluxError(f"error {node.where}: array elements must all have the same type, got {sorted(kinds)}")
        return values
    if isinstance(node, Member):
        obj = evaluate(node.obj, scope, ctx)
        if not isinstance(obj, Record):
            raise FluxError(f"error {node.where}: cannot access property {node.prop!r} of a {kind(obj)}")
        return obj.get_label(node.prop)
    if isinstance(node, Index):
        obj = evaluate(node.obj, scope, ctx)
        index = evaluate(node.index, scope, ctx)
        if isinstance(obj, list) and kind(index) == "int":
            if not 0 <= index < len(obj):
                raise FluxError(f"error {node.where}: array index {index} out of bounds")
            return obj[index]
        raise FluxError(f"error {node.where}: cannot index a {kind(obj)} with a {kind(index)}")
    if isinstance(node, Pipe):
        piped = evaluate(node.arg, scope, ctx)
        return call(node.call, scope, ctx, piped)
    if isinstance(node, Call):
        return call(node, scope, ctx, None)
    if isinstance(node, Unary):
        return _unary(node, evaluate(node.arg, scope, ctx))
    if isinstance(node, Binary):
        if node.op in {"and", "or"}:
            return _logical(node, scope, ctx)
        if node.op in COMPARISON_OPS:
            return compare(node.op, evaluate(node.left, scope, ctx), evaluate(node.right, scope, ctx), node.where)
        raise Unsupported(f"arithmetic operator {node.op} ({node.where})")
    if isinstance(node, FuncExpr):
        return FunctionValue(node, scope)
    raise FluxError(f"cannot evaluate {type(node).__name__}")


def _unary(node: Unary, value: Any) -> Any:
    if node.op == "exists":
        return value is not None
    if node.op == "not":
        if value is None:
            return None
        if not isinstance(value, bool):
            raise FluxError(f"error {node.where}: type error: expected bool but found {kind(value)} for 'not'")
        return not value
    k = kind(value)
    if node.op == "+" and k in {"int", "float", "duration"}:
        return value
    if node.op == "-":
        if k in {"int", "float"}:
            return -value
        if k == "duration":
            return Duration(-value.ns)
    raise FluxError(f"error {node.where}: unary {node.op} is not defined for {k}")


def _logical(node: Binary, scope: dict[str, Any], ctx: Context) -> bool | None:
    left = evaluate(node.left, scope, ctx)
    _expect_bool(left, node)
    if node.op == "and" and left is False:
        return False
    if node.op == "or" and left is True:
        return True
    right = evaluate(node.right, scope, ctx)
    _expect_bool(right, node)
    if node.op == "and":
        if right is False:
            return False
        return None if left is None or right is None else True
    if right is True:
        return True
    return None if left is None or right is None else False


def _expect_bool(value: Any, node: Node) -> None:
    if value is not None and not isinstance(value, bool):
        raise FluxError(f"error {node.where}: type error: expected bool but found {kind(value)}")


_NUMERIC = frozenset({"int", "uint", "float"})


def compare(op: str, left: Any, right: Any, where: str = "") -> bool | None:
    if left is None or right is None:
        return None
    lk, rk = kind(left), kind(right)
    if (
        (lk in _NUMERIC and rk in _NUMERIC)
        or (lk == rk and lk in {"string", "time", "duration"})
        or (lk == rk == "bool" and op in {"==", "!="})
    ):
        a, b = left, right
    else:
        raise FluxError(f"error {where}: type error: unsupported comparison {lk} {op} {rk}")
    if op == "==":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def call(node: Call, scope: dict[str, Any], ctx: Context, piped: Any) -> Any:
    fn = evaluate(node.callee, scope, ctx)
    args = {name: evaluate(expr, scope, ctx) for name, expr in node.args}
    name = node.callee.name if isinstance(node.callee, Ident) else "function"
    return apply(fn, args, piped, ctx, f"{name} {node.where}")


def apply(fn: Any, args: dict[str, Any], piped: Any, ctx: Context, label: str) -> Any:
    if isinstance(fn, Builtin):
        for arg in args:
            if arg not in fn.params:
                raise FluxError(f"error calling {label}: unexpected argument {arg!r}")
        if piped is not None:
            if not fn.pipe:
                raise FluxError(f"error calling {label}: function does not take piped input")
            args = {**args, "tables": piped}
        elif fn.pipe and "tables" not in args:
            raise FluxError(f"error calling {label}: missing piped input (tables)")
        for param, required in fn.params.items():
            if required and param not in args:
                raise FluxError(f"error calling {label}: missing required argument {param!r}")
        return fn.impl(ctx, args)
    if isinstance(fn, FunctionValue):
        local = dict(fn.scope)
        names = {p.name for p in fn.node.params}
        for arg in args:
            if arg not in names:
                raise FluxError(f"error calling {label}: unexpected argument {arg!r}")
        for p in fn.node.params:
            if p.pipe:
                if piped is None and p.name not in args:
                    raise FluxError(f"error calling {label}: missing piped input ({p.name})")
                local[p.name] = piped if piped is not None else args[p.name]
            elif p.name in args:
                local[p.name] = args[p.name]
            elif p.default is not None:
                local[p.name] = evaluate(p.default, fn.scope, ctx)
            else:
                raise FluxError(f"error calling {label}: missing required argument {p.name!r}")
        body = fn.node.body
        if isinstance(body, Block):
            for stmt in body.statements:
                local[stmt.name] = evaluate(stmt.value, local, ctx)
            return evaluate(body.result, local, ctx)
        return evaluate(body, local, ctx)
    raise FluxError(f"error calling {label}: a {kind(fn)} is not a function")


# ----------------------------------------------------------------------------- table helpers


def typed(value: Any, typ: str) -> Any:
    if value is None:
        return None
    if typ == "time":
        return Time(value)
    if typ == "uint":
        return UInt(value)
    return value


def row_record(table: Table, row: dict[str, Any]) -> Record:
    return Record({label: typed(row.get(label), typ) for label, typ in table.columns})


def merge_tables(tables: Iterable[Table], sort_keys: bool) -> list[Table]:
    """Merge tables whose group keys are equal (appending rows in order), checking column types."""
    merged: dict[tuple[Any, ...], Table] = {}
    for table in tables:
        gid = table.group_id()
        target = merged.get(gid)
        if target is None:
            merged[gid] = Table(list(table.columns), list(table.key), dict(table.key_values), list(table.rows))
            continue
        for label, typ in table.columns:
            existing = target.col_type(label)
            if existing is None:
                target.columns.append((label, typ))
            elif existing != typ:
                raise FluxError(f"schema collision detected: column {label!r} is both of type {existing} and {typ}")
        target.rows.extend(table.rows)
    out = list(merged.values())
    if sort_keys:
        out.sort(key=lambda t: tuple(_sort_value(v) for _, v in t.group_id()))
    return out


def _sort_value(value: Any) -> tuple[int, Any]:
    return (0, 0) if value is None else (1, value)


def _stream(args: dict[str, Any], fn: str) -> Stream:
    tables = args["tables"]
    if not isinstance(tables, Stream):
        raise FluxError(f"{fn}: expected a stream of tables as piped input, got {kind(tables)}")
    return tables


def _with(stream: Stream, tables: list[Table], *, bounded: bool | None = None) -> Stream:
    return Stream(tables, stream.bucket, stream.bounded if bounded is None else bounded)


def _columns_arg(value: Any, fn: str, name: str = "columns") -> list[str]:
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise FluxError(f"{fn}: {name} must be an array of strings")
    return value


def _int_arg(value: Any, fn: str, name: str) -> int:
    if kind(value) != "int":
        raise FluxError(f"{fn}: {name} must be an int, got {kind(value)}")
    return value


def _bool_arg(value: Any, fn: str, name: str) -> bool:
    if not isinstance(value, bool):
        raise FluxError(f"{fn}: {name} must be a bool, got {kind(value)}")
    return value


def _str_arg(value: Any, fn: str, name: str) -> str:
    if not isinstance(value, str):
        raise FluxError(f"{fn}: {name} must be a string, got {kind(value)}")
    return value


# ----------------------------------------------------------------------------- builtins


def _from(ctx: Context, args: dict[str, Any]) -> Stream:
    if "bucketID" in args or "host" in args or "org" in args or "orgID" in args or "token" in args:
        raise Unsupported("from() arguments other than bucket")
    if "bucket" not in args:
        raise FluxError("from: missing required argument 'bucket'")
    bucket = _str_arg(args["bucket"], "from", "bucket")
    points = ctx.load_bucket(bucket)
    if points is None:
        raise BucketNotFound(f'failed to initialize execute state: could not find bucket "{bucket}"')
    series: dict[tuple[Any, ...], Table] = {}
    for point in points:
        tags = tuple(sorted(point.tags.items()))
        for field_key, value in point.fields.items():
            sid = (point.measurement, tags, field_key)
            table = series.get(sid)
            if table is None:
                columns = [("_time", "time"), ("_value", field_kind(value)), ("_field", "string"),
                           ("_measurement", "string")] + [(k, "string") for k, _ in tags]  # fmt: skip
                key_values = {"_field": field_key, "_measurement": point.measurement, **dict(tags)}
                table = Table(columns, ["_field", "_measurement", *[k for k, _ in tags]], key_values, [])
                series[sid] = table
            table.rows.append({**table.key_values, "_time": point.time_ns, "_value": value})
    tables = [series[sid] for sid in sorted(series)]
    for table in tables:
        table.rows.sort(key=lambda r: r["_time"])
    return Stream(tables, bucket, bounded=False)


def _time_bound(value: Any, ctx: Context, name: str) -> int:
    k = kind(value)
    if k == "time":
        return value.ns
    if k == "duration":
        return ctx.now_ns + value.ns
    if k == "int":
        return value * 1_000_000_000
    raise FluxError(f"range: {name} must be a time, a duration or an int (unix seconds), got {k}")


def _range(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = _stream(args, "range")
    start = _time_bound(args["start"], ctx, "start")
    stop = _time_bound(args["stop"], ctx, "stop") if "stop" in args else ctx.now_ns
    out: list[Table] = []
    for table in stream.tables:
        if table.col_type("_time") != "time":
            raise FluxError("range: input table has no _time column of type time")
        rows = [
            {**row, "_start": start, "_stop": stop}
            for row in table.rows
            if row.get("_time") is not None and start <= row["_time"] < stop
        ]
        if not rows:
            continue
        columns = [("_start", "time"), ("_stop", "time")] + [
            c for c in table.columns if c[0] not in {"_start", "_stop"}
        ]
        key = ["_start", "_stop"] + [k for k in table.key if k not in {"_start", "_stop"}]
        out.append(Table(columns, key, {**table.key_values, "_start": start, "_stop": stop}, rows))
    return _with(stream, out, bounded=True)


def _filter(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = _stream(args, "filter")
    fn = args["fn"]
    on_empty = _str_arg(args.get("onEmpty", "drop"), "filter", "onEmpty")
    if on_empty not in {"drop", "keep"}:
        raise FluxError('filter: onEmpty must be "drop" or "keep"')
    if not isinstance(fn, FunctionValue) or len(fn.node.params) != 1:
        raise FluxError("filter: fn must be a function of one parameter, e.g. (r) => ...")
    out: list[Table] = []
    for table in stream.tables:
        rows = []
        for row in table.rows:
            verdict = apply(fn, {fn.node.params[0].name: row_record(table, row)}, None, ctx, "filter fn")
            if verdict is not None and not isinstance(verdict, bool):
                raise FluxError(f"filter: fn must return a bool, got {kind(verdict)}")
            if verdict is True:
                rows.append(row)
        if rows or on_empty == "keep":
            out.append(Table(table.columns, table.key, table.key_values, rows))
    return _with(stream, out)


def _project(stream: Stream, keep: Callable[[str], bool]) -> Stream:
    tables = []
    for table in stream.tables:
        columns = [c for c in table.columns if keep(c[0])]
        labels = {c[0] for c in columns}
        key = [k for k in table.key if k in labels]
        rows = [{k: v for k, v in row.items() if k in labels} for row in table.rows]
        tables.append(Table(columns, key, {k: table.key_values[k] for k in key}, rows))
    return _with(stream, merge_tables(tables, sort_keys=False))


def _keep(ctx: Context, args: dict[str, Any]) -> Stream:
    if "fn" in args:
        raise Unsupported("keep(fn: ...)")
    columns = set(_columns_arg(args.get("columns", []), "keep"))
    return _project(_stream(args, "keep"), lambda c: c in columns)


def _drop(ctx: Context, args: dict[str, Any]) -> Stream:
    if "fn" in args:
        raise Unsupported("drop(fn: ...)")
    columns = set(_columns_arg(args.get("columns", []), "drop"))
    return _project(_stream(args, "drop"), lambda c: c not in columns)


def _group(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = _stream(args, "group")
    columns = _columns_arg(args.get("columns", []), "group")
    mode = _str_arg(args.get("mode", "by"), "group", "mode")
    if mode not in {"by", "except"}:
        raise FluxError('group: mode must be "by" or "except"')
    pieces: list[Table] = []
    for table in stream.tables:
        if mode == "by":
            key = [c for c, _ in table.columns if c in columns]
        else:
            key = [c for c, _ in table.columns if c not in columns]
        by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for row in table.rows:
            by_key.setdefault(tuple(row.get(k) for k in key), []).append(row)
        for values, rows in by_key.items():
            pieces.append(Table(list(table.columns), key, dict(zip(key, values, strict=True)), rows))
    return _with(stream, merge_tables(pieces, sort_keys=True))


def _sort(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = _stream(args, "sort")
    columns = _columns_arg(args.get("columns", ["_value"]), "sort")
    desc = _bool_arg(args.get("desc", False), "sort", "desc")
    out = []
    for table in stream.tables:
        present = [c for c in columns if table.has(c)]
        rows = sorted(table.rows, key=lambda r: tuple(_sort_value(r.get(c)) for c in present), reverse=desc)
        out.append(Table(table.columns, table.key, table.key_values, rows))
    return _with(stream, out)


def _selector(pick_last: bool) -> Callable[[Context, dict[str, Any]], Stream]:
    name = "last" if pick_last else "first"

    def impl(ctx: Context, args: dict[str, Any]) -> Stream:
        stream = _stream(args, name)
        column = _str_arg(args.get("column", "_value"), name, "column")
        out = []
        for table in stream.tables:
            if not table.has(column):
                raise FluxError(f'{name}: column "{column}" does not exist')
            candidates = [r for r in table.rows if r.get(column) is not None]
            chosen = [candidates[-1 if pick_last else 0]] if candidates else []
            out.append(Table(table.columns, table.key, table.key_values, chosen))
        return _with(stream, out)

    return impl


def _limit(from_end: bool) -> Callable[[Context, dict[str, Any]], Stream]:
    name = "tail" if from_end else "limit"

    def impl(ctx: Context, args: dict[str, Any]) -> Stream:
        stream = _stream(args, name)
        n = _int_arg(args["n"], name, "n")
        offset = _int_arg(args.get("offset", 0), name, "offset")
        if n < 0 or offset < 0:
            raise FluxError(f"{name}: n and offset must not be negative")
        out = []
        for table in stream.tables:
            rows = table.rows
            if from_end:
                end = len(rows) - offset
                chosen = rows[max(0, end - n) : max(0, end)]
            else:
                chosen = rows[offset : offset + n]
            out.append(Table(table.columns, table.key, table.key_values, chosen))
        return _with(stream, out)

    return impl


def _pivot(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = _stream(args, "pivot")
    row_key = _columns_arg(args["rowKey"], "pivot", "rowKey")
    column_key = _columns_arg(args["columnKey"], "pivot", "columnKey")
    value_column = _str_arg(args["valueColumn"], "pivot", "valueColumn")
    if not column_key:
        raise FluxError("pivot: columnKey must not be empty")
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for table in stream.tables:
        for c in [*row_key, *column_key, value_column]:
            if not table.has(c):
                raise FluxError(f'pivot: column "{c}" does not exist')
        removed = set(column_key) | {value_column}
        key = [k for k in table.key if k not in removed]
        key_values = {k: table.key_values[k] for k in key}
        gid = tuple((k, key_values[k]) for k in sorted(key))
        group = groups.setdefault(gid, {"key": key, "key_values": key_values, "base": [], "new": {}, "rows": {}})
        for label, typ in table.columns:
            if (label in key or label in row_key) and label not in [b[0] for b in group["base"]]:
                group["base"].append((label, typ))
        value_type = table.col_type(value_column)
        for row in table.rows:
            parts = [row.get(c) for c in column_key]
            if any(p is None for p in parts):
                raise FluxError("pivot: null value in a columnKey column")
            new_label = "_".join(
                str(typed(p, table.col_type(c) or "string")) for p, c in zip(parts, column_key, strict=True)
            )
            existing = group["new"].get(new_label)
            if existing is not None and existing != value_type:
                raise FluxError(
                    f"schema collision detected: column {new_label!r} is both of type {existing} and {value_type}"
                )
            group["new"][new_label] = value_type
            rk = tuple(row.get(c) for c in row_key)
            out_row = group["rows"].setdefault(rk, {**key_values, **{c: row.get(c) for c in row_key}})
            out_row[new_label] = row.get(value_column)
    out: list[Table] = []
    for group in groups.values():
        base_labels = {b[0] for b in group["base"]}
        new_columns = [(label, typ) for label, typ in group["new"].items() if label not in base_labels]
        rows = [group["rows"][rk] for rk in sorted(group["rows"], key=lambda t: tuple(_sort_value(v) for v in t))]
        out.append(Table(group["base"] + new_columns, group["key"], group["key_values"], rows))
    return _with(stream, out)


MAX_EMPTY_WINDOWS = 100_000
_AGGREGATES = {"mean", "sum", "count", "max", "min", "first", "last"}


def _aggregate(fn: str, table: Table, column: str, rows: list[dict[str, Any]]) -> tuple[Any, str, dict | None]:
    """Return (value, value type, selected row or None)."""
    vtype = table.col_type(column)
    if vtype is None:
        raise FluxError(f'{fn}: column "{column}" does not exist')
    present = [r for r in rows if r.get(column) is not None]
    if fn == "count":
        return len(present), "int", None
    if fn in {"first", "last"}:
        chosen = (present[0] if fn == "first" else present[-1]) if present else None
        return (chosen[column] if chosen else None), vtype, chosen
    if vtype not in _NUMERIC:
        raise FluxError(f"{fn}: unsupported aggregate column type {vtype}")
    values = [r[column] for r in present]
    if fn == "mean":
        return (math.fsum(values) / len(values) if values else None), "float", None
    if fn == "sum":
        if not values:
            return None, vtype, None
        return (math.fsum(values) if vtype == "float" else sum(values)), vtype, None
    if not present:
        return None, vtype, None
    chosen = (max if fn == "max" else min)(present, key=lambda r: r[column])
    return chosen[column], vtype, chosen


def _aggregate_window(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = _stream(args, "aggregateWindow")
    every = args["every"]
    if kind(every) != "duration" or every.ns <= 0:
        raise FluxError(f"aggregateWindow: every must be a positive duration, got {kind(every)}")
    period = args.get("period", every)
    if kind(period) != "duration" or period.ns != every.ns:
        raise Unsupported("aggregateWindow(period:) different from every")
    if "location" in args:
        raise Unsupported("aggregateWindow(location:)")
    offset = args.get("offset", Duration(0))
    if kind(offset) != "duration":
        raise FluxError("aggregateWindow: offset must be a duration")
    fn = args["fn"]
    if not isinstance(fn, Builtin) or fn.name not in _AGGREGATES:
        raise Unsupported(
            "aggregateWindow fn other than " + ", ".join(sorted(_AGGREGATES)) + " (custom functions are not supported)"
        )
    column = _str_arg(args.get("column", "_value"), "aggregateWindow", "column")
    time_src = _str_arg(args.get("timeSrc", "_stop"), "aggregateWindow", "timeSrc")
    time_dst = _str_arg(args.get("timeDst", "_time"), "aggregateWindow", "timeDst")
    if time_src not in {"_start", "_stop"}:
        raise FluxError('aggregateWindow: timeSrc must be "_start" or "_stop"')
    create_empty = _bool_arg(args.get("createEmpty", True), "aggregateWindow", "createEmpty")
    selector = fn.name in {"first", "last", "max", "min"}
    step, shift = every.ns, offset.ns % every.ns
    out: list[Table] = []
    for table in stream.tables:
        for needed in ("_start", "_stop", "_time"):
            if table.col_type(needed) != "time":
                raise FluxError(f"aggregateWindow: input table is missing time column {needed} (call range() first)")
        if table.rows:
            bounds_start = table.key_values.get("_start", table.rows[0]["_start"])
            bounds_stop = table.key_values.get("_stop", table.rows[0]["_stop"])
        elif "_start" in table.key_values and "_stop" in table.key_values:
            bounds_start, bounds_stop = table.key_values["_start"], table.key_values["_stop"]
        else:
            continue
        by_window: dict[int, list[dict[str, Any]]] = {}
        for row in table.rows:
            if row.get("_time") is not None:
                by_window.setdefault((row["_time"] - shift) // step, []).append(row)
        rows_out: list[dict[str, Any]] = []
        value_type: str | None = None
        first, last = (bounds_start - shift) // step, (bounds_stop - 1 - shift) // step
        if create_empty and last - first >= MAX_EMPTY_WINDOWS:
            raise Unsupported(f"aggregateWindow creating more than {MAX_EMPTY_WINDOWS} windows per table")
        indexes = range(first, last + 1) if create_empty else sorted(i for i in by_window if first <= i <= last)
        for index in indexes:
            w_start = max(index * step + shift, bounds_start)
            w_stop = min((index + 1) * step + shift, bounds_stop)
            members = by_window.get(index, [])
            value, value_type, chosen = _aggregate(fn.name, table, column, members)
            if selector and chosen is not None:
                row = dict(chosen)
            elif selector:
                row = {label: table.key_values.get(label) for label, _ in table.columns}
            else:
                row = dict(table.key_values)
            row[column] = value
            row[time_dst] = w_stop if time_src == "_stop" else w_start
            rows_out.append(row)
        if value_type is None:
            value_type = _aggregate(fn.name, table, column, [])[1]
        if selector:
            columns = list(table.columns)
        else:
            columns = [
                (label, typ) for label, typ in table.columns if label in table.key or label in {column, time_dst}
            ]
            columns = [(label, value_type if label == column else typ) for label, typ in columns]
        if not any(label == time_dst for label, _ in columns):
            columns.append((time_dst, "time"))
        if not any(label == column for label, _ in columns):
            columns.append((column, value_type))
        if rows_out or create_empty:
            out.append(Table(columns, list(table.key), dict(table.key_values), rows_out))
    return _with(stream, out)


def _bare_aggregate(name: str) -> Callable[[Context, dict[str, Any]], Stream]:
    def impl(ctx: Context, args: dict[str, Any]) -> Stream:
        if name in {"first", "last"}:
            return _selector(name == "last")(ctx, args)
        stream = _stream(args, name)
        column = _str_arg(args.get("column", "_value"), name, "column")
        out = []
        for table in stream.tables:
            value, vtype, chosen = _aggregate(name, table, column, table.rows)
            if name in {"max", "min"}:
                out.append(Table(table.columns, table.key, table.key_values, [chosen] if chosen else []))
                continue
            columns = [(label, typ) for label, typ in table.columns if label in table.key]
            columns.append((column, vtype))
            out.append(Table(columns, table.key, table.key_values, [{**table.key_values, column: value}]))
        return _with(stream, out)

    return impl


def _yield(ctx: Context, args: dict[str, Any]) -> Stream:
    stream = _stream(args, "yield")
    name = _str_arg(args.get("name", "_result"), "yield", "name")
    ctx.results.append((name, stream))
    ctx.yielded.add(id(stream))
    return stream


def _contains(ctx: Context, args: dict[str, Any]) -> bool:
    values = args["set"]
    if not isinstance(values, list):
        raise FluxError(f"contains: set must be an array, got {kind(values)}")
    value = args["value"]
    if value is None:
        return False
    return any(compare("==", value, item, "contains") for item in values)


def _now(ctx: Context, args: dict[str, Any]) -> Time:
    return Time(ctx.now_ns)


def builtins() -> dict[str, Any]:
    table_fns: dict[str, Builtin] = {
        "from": Builtin(
            "from",
            {"bucket": False, "bucketID": False, "host": False, "org": False, "orgID": False, "token": False},
            _from,
        ),
        "range": Builtin("range", {"tables": True, "start": True, "stop": False}, _range, pipe=True),
        "filter": Builtin("filter", {"tables": True, "fn": True, "onEmpty": False}, _filter, pipe=True),
        "keep": Builtin("keep", {"tables": True, "columns": False, "fn": False}, _keep, pipe=True),
        "drop": Builtin("drop", {"tables": True, "columns": False, "fn": False}, _drop, pipe=True),
        "group": Builtin("group", {"tables": True, "columns": False, "mode": False}, _group, pipe=True),
        "sort": Builtin("sort", {"tables": True, "columns": False, "desc": False}, _sort, pipe=True),
        "limit": Builtin("limit", {"tables": True, "n": True, "offset": False}, _limit(False), pipe=True),
        "tail": Builtin("tail", {"tables": True, "n": True, "offset": False}, _limit(True), pipe=True),
        "pivot": Builtin(
            "pivot", {"tables": True, "rowKey": True, "columnKey": True, "valueColumn": True}, _pivot, pipe=True
        ),
        "aggregateWindow": Builtin(
            "aggregateWindow",
            {
                "tables": True,
                "every": True,
                "fn": True,
                "period": False,
                "offset": False,
                "location": False,
                "column": False,
                "timeSrc": False,
                "timeDst": False,
                "createEmpty": False,
            },
            _aggregate_window,
            pipe=True,
        ),
        "yield": Builtin("yield", {"tables": True, "name": False}, _yield, pipe=True),
        "contains": Builtin("contains", {"value": True, "set": True}, _contains),
        "now": Builtin("now", {}, _now),
    }
    for name in sorted(_AGGREGATES):
        table_fns[name] = Builtin(name, {"tables": True, "column": False}, _bare_aggregate(name), pipe=True)
    return {**table_fns, "true": True, "false": False}


# ----------------------------------------------------------------------------- extern / params


def extern_bindings(extern: Any) -> dict[str, Any]:
    """Bindings from the request's `extern` File AST, as influxdb-client's `params=` sends them."""
    if extern is None:
        return {}
    if not isinstance(extern, dict):
        raise FluxError("extern must be a File object")
    if extern.get("imports"):
        raise Unsupported("imports in extern (e.g. profiler)")
    bindings: dict[str, Any] = {}
    for stmt in extern.get("body") or []:
        stype = stmt.get("type") if isinstance(stmt, dict) else None
        assignment = stmt.get("assignment") if stype == "OptionStatement" else stmt
        if stype not in {"OptionStatement", "VariableAssignment"} or not isinstance(assignment, dict):
            raise Unsupported(f"extern statement of type {stype!r}")
        if assignment.get("type") not in {None, "VariableAssignment"}:
            raise Unsupported(f"extern {assignment.get('type')} (only variable assignments)")
        ident = assignment.get("id") or {}
        name = ident.get("name") if isinstance(ident, dict) else None
        if not isinstance(name, str) or not name:
            raise FluxError("extern variable assignment without an identifier name")
        bindings[name] = ast_value(assignment.get("init"))
    return bindings


def ast_value(node: Any) -> Any:
    if not isinstance(node, dict):
        raise FluxError(f"extern expression must be an object, got {node!r}")
    ntype = node.get("type")
    value = node.get("value")
    try:
        if ntype == "StringLiteral" and isinstance(value, str):
            return value
        if ntype == "IntegerLiteral":
            return int(value)
        if ntype == "UnsignedIntegerLiteral":
            return UInt(int(value))
        if ntype == "FloatLiteral" and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if ntype == "BooleanLiteral" and isinstance(value, bool):
            return value
        if ntype == "DateTimeLiteral" and isinstance(value, str):
            return Time(parse_rfc3339(value))
        if ntype == "DurationLiteral":
            total = 0
            for part in node.get("values") or []:
                unit = part.get("unit")
                if unit in {"mo", "y"}:
                    raise Unsupported(f"calendar duration unit {unit!r} in extern")
                if unit not in DURATION_UNITS_NS:
                    raise FluxError(f"invalid duration unit {unit!r} in extern")
                total += int(part.get("magnitude")) * DURATION_UNITS_NS[unit]
            return Duration(total)
        if ntype == "UnaryExpression" and node.get("operator") in {"-", "+"}:
            inner = ast_value(node.get("argument"))
            if node["operator"] == "+":
                return inner
            if isinstance(inner, Duration):
                return Duration(-inner.ns)
            if kind(inner) in {"int", "float"}:
                return -inner
            raise FluxError(f"cannot negate a {kind(inner)} in extern")
        if ntype == "ArrayExpression":
            return [ast_value(e) for e in node.get("elements") or []]
    except (TypeError, ValueError) as exc:
        raise FluxError(f"invalid {ntype} in extern: {exc}") from exc
    if ntype in {"StringLiteral", "FloatLiteral", "BooleanLiteral", "DateTimeLiteral"}:
        raise FluxError(f"invalid value {value!r} for {ntype} in extern")
    raise Unsupported(f"extern expression of type {ntype!r}")


def params_record(params: Mapping[str, Any]) -> Record:
    def convert(value: Any) -> Any:
        if isinstance(value, bool | str | int | float):
            return value
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return Record({k: convert(v) for k, v in value.items()}, strict=True)
        raise FluxError(f"unsupported params value {value!r}")

    return Record({k: convert(v) for k, v in params.items()}, strict=True, name="params")


# ----------------------------------------------------------------------------- program


def run(
    query: str,
    *,
    now_ns: int,
    load_bucket: Callable[[str], Iterable[StoredPoint] | None],
    extern: Any = None,
    params: Mapping[str, Any] | None = None,
) -> list[tuple[str, list[Table]]]:
    """Evaluate a query; returns the results as (name, tables) in the order they were yielded."""
    statements = parse(query)
    ctx = Context(now_ns=now_ns, load_bucket=load_bucket)
    scope: dict[str, Any] = builtins()
    scope.update(extern_bindings(extern))
    if params is not None:
        scope["params"] = params_record(params)
    implicit: list[Stream] = []
    for stmt in statements:
        if isinstance(stmt, Assign):
            scope[stmt.name] = evaluate(stmt.value, scope, ctx)
            continue
        value = evaluate(stmt.expr, scope, ctx)
        if isinstance(value, Stream) and id(value) not in ctx.yielded:
            implicit.append(value)
    results = list(ctx.results)
    if implicit:
        if len(implicit) > 1 or any(name == "_result" for name, _ in results):
            raise FluxError('multiple results named "_result": use yield(name: ...) with distinct names')
        results.append(("_result", implicit[0]))
    if not results:
        raise FluxError("query produced no results: it has no expression that returns a stream of tables")
    names = [name for name, _ in results]
    for name in names:
        if names.count(name) > 1:
            raise FluxError(f"duplicate yield name {name!r}")
    for _, stream in results:
        if not stream.bounded:
            raise FluxError(
                f"cannot submit unbounded read to \"{stream.bucket}\"; try bounding 'from' with a call to 'range'"
            )
    return [(name, stream.tables) for name, stream in results]


# ----------------------------------------------------------------------------- annotated CSV


@dataclass(frozen=True)
class Dialect:
    header: bool = True
    delimiter: str = ","
    annotations: tuple[str, ...] = ()


def _csv_field(value: str, delimiter: str) -> str:
    if value == "":
        return value
    needs_quotes = value == "\\." or delimiter in value or any(c in value for c in '"\r\n') or value[0].isspace()
    if not needs_quotes:
        return value
    body = value.replace('"', '""').replace("\r", "").replace("\n", "\r\n")
    return f'"{body}"'


def _encode_value(value: Any, typ: str) -> str:
    if value is None:
        return ""
    if typ == "time":
        return format_rfc3339nano(value)
    if typ == "float":
        return format_float(float(value))
    if typ == "bool":
        return "true" if value else "false"
    return str(value)


def encode_csv(results: list[tuple[str, list[Table]]], dialect: Dialect) -> bytes:
    """Annotated CSV in the shape Flux's csv.ResultEncoder writes (CRLF, one blank line per schema change)."""
    out: list[str] = []
    delim = dialect.delimiter

    def write(cells: list[str] | None) -> None:
        out.append("" if cells is None else delim.join(_csv_field(c, delim) for c in cells))
        out.append("\r\n")

    with_default = "default" in dialect.annotations
    for result_name, tables in results:
        last_cols: list[tuple[str, str]] | None = None
        last_empty = False
        for table_id, table in enumerate(tables):
            cols = [("result", "string"), ("table", "int"), *table.columns]
            empty = not table.rows
            if last_empty or cols != last_cols or empty:
                if last_cols:
                    write(None)
                for annotation in dialect.annotations:
                    if annotation == "datatype":
                        write(["#datatype", *[CSV_DATATYPES[t] for _, t in cols]])
                    elif annotation == "group":
                        write(
                            [
                                "#group",
                                "false",
                                "false",
                                *["true" if c in table.key else "false" for c, _ in table.columns],
                            ]
                        )
                    elif annotation == "default":
                        defaults = [result_name, str(table_id) if empty else ""]
                        for label, typ in table.columns:
                            value = table.key_values.get(label) if empty and label in table.key else None
                            defaults.append(_encode_value(value, typ))
                        write(["#default", *defaults])
                if dialect.header:
                    write(["", *[label for label, _ in cols]])
            for row in table.rows:
                cells = ["", "" if with_default else result_name, str(table_id)]
                cells.extend(_encode_value(row.get(label), typ) for label, typ in table.columns)
                write(cells)
            last_cols, last_empty = cols, empty
        out.append("\r\n")
    return "".join(out).encode()
