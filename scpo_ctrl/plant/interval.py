"""Interval evaluation of plant expressions: sound enclosures of ``expr(x)`` over boxes of states.

Vectorised over a batch of boxes: every variable maps to ``(lo, hi)`` arrays of
the same shape. Each operation returns an enclosure of every value it can take
for inputs in the given intervals (plain interval arithmetic, so dependent
occurrences of a variable make it conservative, never wrong). Rounding of the
float64 operations is covered by widening every result outward by one ulp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .expr import BinOp, Call, Expression, Neg, Node, Num, Var


@dataclass(frozen=True)
class Interval:
    """Element-wise intervals ``[lo, hi]`` (arrays of one shape)."""

    lo: np.ndarray
    hi: np.ndarray


def _outward(lo, hi) -> Interval:
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    return Interval(np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf))


def _unbounded(shape) -> Interval:
    return Interval(np.full(shape, -np.inf), np.full(shape, np.inf))


def add(a: Interval, b: Interval) -> Interval:
    return _outward(a.lo + b.lo, a.hi + b.hi)


def sub(a: Interval, b: Interval) -> Interval:
    return _outward(a.lo - b.hi, a.hi - b.lo)


def mul(a: Interval, b: Interval) -> Interval:
    with np.errstate(invalid="ignore"):
        products = np.stack([a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi])
    products = np.where(np.isnan(products), 0.0, products)  # 0 * inf: the factor is exactly 0 there
    return _outward(products.min(axis=0), products.max(axis=0))


def div(a: Interval, b: Interval) -> Interval:
    crosses = (b.lo <= 0.0) & (b.hi >= 0.0)
    safe_lo = np.where(crosses, 1.0, b.lo)
    safe_hi = np.where(crosses, 1.0, b.hi)
    reciprocal = Interval(1.0 / safe_hi, 1.0 / safe_lo)
    result = mul(a, reciprocal)
    return Interval(np.where(crosses, -np.inf, result.lo), np.where(crosses, np.inf, result.hi))


def power(a: Interval, b: Interval) -> Interval:
    exponent_is_constant = np.all(b.lo == b.hi) and np.all(b.lo == np.ravel(b.lo)[0])
    if exponent_is_constant:
        k = float(np.ravel(b.lo)[0])
        if k == int(k) and k < 0:
            one = Interval(np.ones_like(a.lo), np.ones_like(a.hi))
            return div(one, power(a, Interval(-b.lo, -b.hi)))
        if k == int(k) and k >= 0:
            k = int(k)
            result = Interval(np.ones_like(a.lo), np.ones_like(a.hi))
            for _ in range(k):  # repeated multiplication: sound (even powers a little loose)
                result = mul(result, a)
            if k % 2 == 0 and k > 0:
                lo = np.where((a.lo <= 0) & (a.hi >= 0), 0.0, np.minimum(a.lo ** k, a.hi ** k))
                result = _outward(np.maximum(lo, 0.0), np.maximum(a.lo ** k, a.hi ** k))
            return result
    # general case: exp(b log a), defined for a > 0 (a negative base gives NaN: no enclosure)
    result = exp_(mul(b, log_(a)))
    negative = a.lo < 0
    return Interval(np.where(negative, -np.inf, result.lo), np.where(negative, np.inf, result.hi))


def _monotone(a: Interval, function, increasing: bool = True) -> Interval:
    with np.errstate(all="ignore"):
        lo, hi = function(a.lo), function(a.hi)
    return _outward(lo, hi) if increasing else _outward(hi, lo)


def exp_(a: Interval) -> Interval:
    return _monotone(a, np.exp)


def log_(a: Interval) -> Interval:
    lo = np.where(a.lo > 0, a.lo, 0.0)
    with np.errstate(divide="ignore"):
        result = _monotone(Interval(lo, np.maximum(a.hi, 0.0)), np.log)
    return Interval(np.where(a.lo > 0, result.lo, -np.inf), np.where(a.hi > 0, result.hi, -np.inf))


def sqrt_(a: Interval) -> Interval:
    return _monotone(Interval(np.maximum(a.lo, 0.0), np.maximum(a.hi, 0.0)), np.sqrt)


def abs_(a: Interval) -> Interval:
    lo = np.where((a.lo <= 0) & (a.hi >= 0), 0.0, np.minimum(np.abs(a.lo), np.abs(a.hi)))
    return Interval(lo, np.maximum(np.abs(a.lo), np.abs(a.hi)))


def _periodic(a: Interval, function, peaks: float, troughs: float) -> Interval:
    """sin/cos: endpoint values, widened to +-1 where a peak/trough (at ``peaks + 2 pi k``) is inside."""
    with np.errstate(all="ignore"):
        lo = np.minimum(function(a.lo), function(a.hi))
        hi = np.maximum(function(a.lo), function(a.hi))

    def contains(phase: float) -> np.ndarray:
        k = np.ceil((a.lo - phase) / (2 * math.pi))
        return phase + 2 * math.pi * k <= a.hi

    wide = ~np.isfinite(a.lo) | ~np.isfinite(a.hi) | (a.hi - a.lo >= 2 * math.pi)
    hi = np.where(wide | contains(peaks), 1.0, hi)
    lo = np.where(wide | contains(troughs), -1.0, lo)
    result = _outward(lo, hi)
    return Interval(np.maximum(result.lo, -1.0), np.minimum(result.hi, 1.0))


def sin_(a: Interval) -> Interval:
    return _periodic(a, np.sin, math.pi / 2, -math.pi / 2)


def cos_(a: Interval) -> Interval:
    return _periodic(a, np.cos, 0.0, math.pi)


def tan_(a: Interval) -> Interval:
    k = np.ceil((a.lo - math.pi / 2) / math.pi)
    pole = math.pi / 2 + math.pi * k <= a.hi
    result = _monotone(a, np.tan)
    return Interval(np.where(pole, -np.inf, result.lo), np.where(pole, np.inf, result.hi))


def _domain_monotone(a: Interval, function, low: float, high: float, increasing: bool) -> Interval:
    clipped = Interval(np.clip(a.lo, low, high), np.clip(a.hi, low, high))
    return _monotone(clipped, function, increasing)


FUNCTIONS = {
    "sin": sin_, "cos": cos_, "tan": tan_, "exp": exp_, "log": log_, "sqrt": sqrt_, "abs": abs_,
    "tanh": lambda a: _monotone(a, np.tanh), "atan": lambda a: _monotone(a, np.arctan),
    "asin": lambda a: _domain_monotone(a, np.arcsin, -1.0, 1.0, True),
    "acos": lambda a: _domain_monotone(a, np.arccos, -1.0, 1.0, False),
}


def evaluate_interval(expression: Expression, boxes: Mapping[str, Interval]) -> Interval:
    """An enclosure of ``expression`` over the boxes (each name -> Interval, all of one shape)."""
    shape = np.shape(next(iter(boxes.values())).lo) if boxes else ()
    return _node(expression.tree, boxes, shape)


def _node(node: Node, boxes: Mapping[str, Interval], shape) -> Interval:
    if isinstance(node, Num):
        return Interval(np.full(shape, node.value), np.full(shape, node.value))
    if isinstance(node, Var):
        return boxes[node.name]
    if isinstance(node, Neg):
        a = _node(node.operand, boxes, shape)
        return Interval(-a.hi, -a.lo)
    if isinstance(node, BinOp):
        a, b = _node(node.left, boxes, shape), _node(node.right, boxes, shape)
        return {"+": add, "-": sub, "*": mul, "/": div, "**": power}[node.op](a, b)
    if isinstance(node, Call):
        args = [_node(arg, boxes, shape) for arg in node.args]
        if node.function == "min":
            return Interval(np.minimum(args[0].lo, args[1].lo), np.minimum(args[0].hi, args[1].hi))
        if node.function == "max":
            return Interval(np.maximum(args[0].lo, args[1].lo), np.maximum(args[0].hi, args[1].hi))
        if node.function == "atan2":
            return Interval(np.full(shape, -math.pi), np.full(shape, math.pi))
        return FUNCTIONS[node.function](args[0])
    return _unbounded(shape)
