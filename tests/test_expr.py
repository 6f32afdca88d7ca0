"""The expression parser: Python-like arithmetic, nothing else, never eval."""

from __future__ import annotations

import math

import casadi as ca
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scpo_ctrl.plant.expr import ExpressionError, parse_expression

NAMES = {"p": "p", "v": "v", "m": 2.0}


def value(text: str, p: float = 0.7, v: float = -1.3) -> float:
    expression = parse_expression(text, NAMES)
    P, V = ca.SX.sym("p"), ca.SX.sym("v")
    fn = ca.Function("e", [P, V], [expression.to_casadi({"p": P, "v": V})])
    return float(fn(p, v))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("p + v*abs(v)/2 - 4.5", 0.7 + (-1.3) * 1.3 / 2 - 4.5),
        ("-p**2", -(0.7**2)),
        ("2**-1*p", 0.35),
        ("2**3**2", 2.0**9),
        ("(p + v) * m", (0.7 - 1.3) * 2.0),
        ("atan2(v, p) + min(p, v) - max(p, 1)", math.atan2(-1.3, 0.7) - 1.3 - 1.0),
        ("sqrt(exp(log(p**2)))", 0.7),
        ("1e-3*p + .5", 0.5007),
        ("+p - -v", 0.7 - 1.3),
        ("tanh(p)*cos(v)/sin(1) + tan(0.1) + asin(0.2) + acos(0.3) + atan(p)",
         math.tanh(0.7) * math.cos(-1.3) / math.sin(1) + math.tan(0.1) + math.asin(0.2) + math.acos(0.3) + math.atan(0.7)),
    ],
)
def test_values_match_python_semantics(text, expected):
    assert value(text) == pytest.approx(expected, rel=1e-14, abs=1e-14)


def test_params_are_folded_and_names_recorded():
    expression = parse_expression("m*3 + p", NAMES)
    assert expression.names == frozenset({"p"})
    assert parse_expression("m*3", NAMES).tree.value == 6.0


@pytest.mark.parametrize(
    "text, fragment, column",
    [
        ("__import__('os').system('touch x')", "unknown function '__import__'", 1),
        ("p.__class__", "attribute access", 2),
        ("(lambda: 1)()", "'lambda' is not allowed", 2),
        ("[p for p in v]", "subscripts and lists", 1),
        ("p**99999", "exponent 99999 is too large", 2),
        ("9**9**9", "too large", 2),
        ("q + 1", "unknown name 'q'", 1),
        ("system(p)", "unknown function 'system'", 1),
        ("p + 'a'", "strings are not allowed", 5),
        ("p; p", "';' is not allowed", 2),
        ("p ^ 2", "use '**'", 3),
        ("p v", "unexpected 'v'", 3),
        ("(p + 1", "ends too early", 7),
        ("sin(p, v)", "takes 1 argument", 1),
        ("sin", "must be called", 1),
        ("1e999", "not finite", 1),
        ("1/0 + p", "cannot be evaluated", 2),
        ("sqrt(-1)", "cannot be evaluated", 1),
        ("", "empty expression", 1),
        ("p < 1", "comparisons are not allowed", 3),
        ("-" * 100 + "p", "nested more than", 65),
        ("p" + "+p" * 3000, "at most 4000", 1),
    ],
)
def test_rejections_name_the_problem_and_column(text, fragment, column):
    with pytest.raises(ExpressionError) as info:
        parse_expression(text, NAMES)
    assert fragment in str(info.value)
    assert info.value.column == column


def test_non_text_is_rejected():
    for bad in (None, True, [1], {"a": 1}):
        with pytest.raises(ExpressionError):
            parse_expression(bad, NAMES)
    assert parse_expression(3, NAMES).tree.value == 3.0


# -- property: the parser agrees with an independent evaluation of random trees --

_leaf = st.one_of(
    st.sampled_from(["p", "v", "m"]),
    st.floats(min_value=0.1, max_value=5.0, allow_nan=False).map(lambda x: f"{x:.3f}"),
)


def _combine(children):
    binary = st.tuples(children, st.sampled_from(["+", "-", "*"]), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
    unary = st.tuples(st.sampled_from(["sin", "cos", "tanh", "-"]), children).map(
        lambda t: f"-({t[1]})" if t[0] == "-" else f"{t[0]}({t[1]})"
    )
    return st.one_of(binary, unary)


_tree = st.recursive(_leaf, _combine, max_leaves=12)


def _reference(text: str, p: float, v: float) -> float:
    """Evaluate by a tiny independent recursive-descent evaluator over the same restricted grammar."""
    tokens = text.replace("(", " ( ").replace(")", " ) ").split()
    env = {"p": p, "v": v, "m": 2.0}
    functions = {"sin": math.sin, "cos": math.cos, "tanh": math.tanh}
    position = 0

    def atom() -> float:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "(":
            left = expr()
            position += 1  # ')'
            return left
        if token == "-":
            return -atom()
        if token in functions:
            position += 1  # '('
            inner = expr()
            position += 1  # ')'
            return functions[token](inner)
        return env[token] if token in env else float(token)

    def expr() -> float:
        nonlocal position
        left = atom()
        while position < len(tokens) and tokens[position] in "+-*":
            op = tokens[position]
            position += 1
            right = atom()
            left = left + right if op == "+" else left - right if op == "-" else left * right
        return left

    return expr()


@settings(max_examples=200, deadline=None)
@given(_tree, st.floats(-3, 3), st.floats(-3, 3))
def test_random_expressions_match_reference(text, p, v):
    assert value(text, p, v) == pytest.approx(_reference(text, p, v), rel=1e-12, abs=1e-12)
