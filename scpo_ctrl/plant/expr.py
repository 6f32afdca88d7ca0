"""A small, safe expression language for plant files, parsed without ``eval``.

Grammar (precedence from low to high; ``**`` is right-associative and binds
tighter than unary minus, as in Python: ``-x**2 == -(x**2)``)::

    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/') unary)*
    unary  := ('-' | '+') unary | power
    power  := atom ('**' unary)?
    atom   := NUMBER | NAME | NAME '(' expr (',' expr)* ')' | '(' expr ')'

Names are the plant's states, inputs and params; functions come from a fixed
list. Everything else (strings, attributes, subscripts, keywords, unknown
names or functions) is rejected with the column of the problem. Constant
sub-expressions are folded in float64 and must stay finite; a constant
exponent is bounded by ``MAX_EXPONENT``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Union

import casadi as ca

MAX_LENGTH = 4000
MAX_DEPTH = 64
MAX_EXPONENT = 64.0

# name -> (arity, casadi function, float function)
FUNCTIONS: dict[str, tuple[int, Callable, Callable]] = {
    "sin": (1, ca.sin, math.sin),
    "cos": (1, ca.cos, math.cos),
    "tan": (1, ca.tan, math.tan),
    "asin": (1, ca.asin, math.asin),
    "acos": (1, ca.acos, math.acos),
    "atan": (1, ca.atan, math.atan),
    "atan2": (2, ca.atan2, math.atan2),
    "exp": (1, ca.exp, math.exp),
    "log": (1, ca.log, math.log),
    "sqrt": (1, ca.sqrt, math.sqrt),
    "tanh": (1, ca.tanh, math.tanh),
    "abs": (1, ca.fabs, abs),
    "min": (2, ca.fmin, min),
    "max": (2, ca.fmax, max),
}

_PYTHON_KEYWORDS = {
    "lambda", "for", "in", "if", "else", "import", "from", "def", "class", "return", "and", "or",
    "not", "is", "while", "with", "yield", "global", "del", "exec", "eval", "print", "None", "True", "False",
}

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
    |(?P<name>[A-Za-z_][A-Za-z_0-9]*)
    |(?P<op>\*\*|[-+*/(),])""",
    re.X,
)

_CHAR_HINTS = {
    ".": "attribute access is not allowed",
    "[": "subscripts and lists are not allowed",
    "]": "subscripts and lists are not allowed",
    "{": "braces are not allowed",
    "'": "strings are not allowed",
    '"': "strings are not allowed",
    "^": "'^' is not a power operator here; use '**'",
    ":": "':' is not allowed (no lambdas, slices or dicts)",
    "=": "assignment and comparison are not allowed",
    "<": "comparisons are not allowed; a constraint means expr <= 0",
    ">": "comparisons are not allowed; a constraint means expr <= 0",
    "%": "'%' is not allowed",
    "@": "'@' is not allowed",
    ";": "';' is not allowed",
}


class ExpressionError(ValueError):
    """A malformed expression; ``column`` is 1-based."""

    def __init__(self, message: str, column: int):
        self.column = column
        super().__init__(f"{message} (column {column})")


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Neg:
    operand: "Node"


@dataclass(frozen=True)
class BinOp:
    op: str
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple


Node = Union[Num, Var, Neg, BinOp, Call]


@dataclass(frozen=True)
class Expression:
    """A parsed expression.

    Attributes
    ----------
    text : str
        The source text.
    tree : Node
        The syntax tree, constants folded.
    names : frozenset of str
        The variable names it uses.
    """

    text: str
    tree: Node
    names: frozenset

    def to_casadi(self, symbols: Mapping[str, object]):
        """Build the CasADi expression; ``symbols`` maps every used name to an SX/MX/float."""
        return _to_casadi(self.tree, symbols)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    column: int


def parse_expression(text: object, names: Mapping[str, object]) -> Expression:
    """Parse ``text`` into an :class:`Expression`.

    Parameters
    ----------
    text : str or number
        The expression. A YAML number is accepted as a constant.
    names : mapping
        Declared names. A value that is a float is a constant (a param) and is
        folded; anything else is a symbol.

    Raises
    ------
    ExpressionError
        With the column of the first problem.
    """
    if isinstance(text, bool) or text is None:
        raise ExpressionError(f"expected an expression, got {text!r}", 1)
    if isinstance(text, (int, float)):
        text = repr(float(text)) if isinstance(text, float) else str(text)
    if not isinstance(text, str):
        raise ExpressionError(f"expected an expression as text, got {type(text).__name__}", 1)
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(text)} characters; at most {MAX_LENGTH}", 1)
    tokens = _tokenize(text)
    parser = _Parser(tokens, names, len(text))
    tree = parser.parse()
    return Expression(text=text, tree=tree, names=frozenset(parser.used))


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            char = text[position]
            hint = _CHAR_HINTS.get(char, "unexpected character")
            # Reported when the parser reaches it, so that earlier problems win.
            tokens.append(_Token("error", f"{hint}: {char!r}", position + 1))
            break
        kind = match.lastgroup
        if kind != "space":
            tokens.append(_Token(kind, match.group(), position + 1))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token], names: Mapping[str, object], length: int):
        self.tokens = tokens
        self.names = names
        self.index = 0
        self.depth = 0
        self.used: set[str] = set()
        self.end_column = length + 1

    def parse(self) -> Node:
        if not self.tokens:
            raise ExpressionError("empty expression", 1)
        tree = self._expr()
        token = self._peek()
        if token is not None:
            raise ExpressionError(f"unexpected {token.text!r}; expected an operator or the end", token.column)
        return tree

    # -- helpers -----------------------------------------------------------
    def _peek(self) -> _Token | None:
        if self.index >= len(self.tokens):
            return None
        token = self.tokens[self.index]
        if token.kind == "error":
            raise ExpressionError(token.text, token.column)
        return token

    def _take(self) -> _Token:
        token = self._peek()
        if token is None:
            raise ExpressionError("the expression ends too early", self.end_column)
        self.index += 1
        return token

    def _expect(self, text: str) -> None:
        token = self._take()
        if token.text != text:
            raise ExpressionError(f"expected {text!r}, found {token.text!r}", token.column)

    def _enter(self, column: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nested more than {MAX_DEPTH} levels deep", column)

    # -- grammar -----------------------------------------------------------
    def _expr(self) -> Node:
        node = self._term()
        while (token := self._peek()) is not None and token.text in ("+", "-"):
            self.index += 1
            node = _fold(BinOp(token.text, node, self._term()), token.column)
        return node

    def _term(self) -> Node:
        node = self._unary()
        while (token := self._peek()) is not None and token.text in ("*", "/"):
            self.index += 1
            node = _fold(BinOp(token.text, node, self._unary()), token.column)
        return node

    def _unary(self) -> Node:
        token = self._peek()
        if token is not None and token.text in ("-", "+"):
            self.index += 1
            self._enter(token.column)
            operand = self._unary()
            self.depth -= 1
            return _fold(Neg(operand), token.column) if token.text == "-" else operand
        return self._power()

    def _power(self) -> Node:
        base = self._atom()
        token = self._peek()
        if token is not None and token.text == "**":
            self.index += 1
            self._enter(token.column)
            exponent = self._unary()
            self.depth -= 1
            if isinstance(exponent, Num) and abs(exponent.value) > MAX_EXPONENT:
                raise ExpressionError(
                    f"exponent {exponent.value:g} is too large (at most {MAX_EXPONENT:g} in magnitude)", token.column
                )
            return _fold(BinOp("**", base, exponent), token.column)
        return base

    def _atom(self) -> Node:
        token = self._take()
        if token.kind == "number":
            value = float(token.text)
            if not math.isfinite(value):
                raise ExpressionError(f"number {token.text} is not finite", token.column)
            return Num(value)
        if token.kind == "name":
            if token.text in _PYTHON_KEYWORDS:
                raise ExpressionError(f"{token.text!r} is not allowed in an expression", token.column)
            following = self._peek()
            if following is not None and following.text == "(":
                return self._call(token)
            if token.text in FUNCTIONS:
                raise ExpressionError(f"function {token.text!r} must be called with arguments", token.column)
            if token.text not in self.names:
                declared = ", ".join(sorted(self.names)) or "none"
                raise ExpressionError(f"unknown name {token.text!r} (declared: {declared})", token.column)
            value = self.names[token.text]
            if isinstance(value, float):
                return Num(value)
            self.used.add(token.text)
            return Var(token.text)
        if token.text == "(":
            self._enter(token.column)
            node = self._expr()
            self._expect(")")
            self.depth -= 1
            return node
        raise ExpressionError(f"unexpected {token.text!r}", token.column)

    def _call(self, name: _Token) -> Node:
        if name.text not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise ExpressionError(f"unknown function {name.text!r} (allowed: {allowed})", name.column)
        arity = FUNCTIONS[name.text][0]
        self._expect("(")
        self._enter(name.column)
        args = [self._expr()]
        while (token := self._peek()) is not None and token.text == ",":
            self.index += 1
            args.append(self._expr())
        self._expect(")")
        self.depth -= 1
        if len(args) != arity:
            raise ExpressionError(f"{name.text}() takes {arity} argument(s), got {len(args)}", name.column)
        return _fold(Call(name.text, tuple(args)), name.column)


def _fold(node: Node, column: int) -> Node:
    """Replace a node whose operands are all numbers by its float64 value."""
    operands = _children(node)
    if not all(isinstance(child, Num) for child in operands):
        return node
    try:
        value = _evaluate_float(node)
    except (OverflowError, ValueError, ZeroDivisionError) as exc:
        raise ExpressionError(f"constant sub-expression cannot be evaluated ({exc})", column) from None
    if not math.isfinite(value):
        raise ExpressionError("constant sub-expression is not finite", column)
    return Num(value)


def _children(node: Node) -> tuple:
    if isinstance(node, Neg):
        return (node.operand,)
    if isinstance(node, BinOp):
        return (node.left, node.right)
    if isinstance(node, Call):
        return node.args
    return ()


def _evaluate_float(node: Node) -> float:
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Neg):
        return -_evaluate_float(node.operand)
    if isinstance(node, BinOp):
        a, b = _evaluate_float(node.left), _evaluate_float(node.right)
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        if node.op == "/":
            return a / b
        result = a**b
        if isinstance(result, complex):
            raise ValueError("negative base with a fractional exponent")
        return float(result)
    if isinstance(node, Call):
        return float(FUNCTIONS[node.function][2](*(_evaluate_float(arg) for arg in node.args)))
    raise TypeError(f"not a constant node: {node!r}")


def _to_casadi(node: Node, symbols: Mapping[str, object]):
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Var):
        return symbols[node.name]
    if isinstance(node, Neg):
        return -_to_casadi(node.operand, symbols)
    if isinstance(node, BinOp):
        a, b = _to_casadi(node.left, symbols), _to_casadi(node.right, symbols)
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        if node.op == "/":
            return a / b
        return a**b
    if isinstance(node, Call):
        return FUNCTIONS[node.function][1](*(_to_casadi(arg, symbols) for arg in node.args))
    raise TypeError(f"unknown node {node!r}")
