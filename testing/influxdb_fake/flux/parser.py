"""The Flux AST and a recursive-descent parser for the supported subset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import FluxError, Unsupported
from .lexer import Token, tokenize


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
