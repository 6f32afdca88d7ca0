"""Interval evaluation of plant expressions encloses every sampled value (soundness) and is tight on monotone parts."""

from __future__ import annotations

import numpy as np
import pytest

from scpo_ctrl.plant.expr import parse_expression
from scpo_ctrl.plant.interval import Interval, evaluate_interval

# (expression text, the same function written in numpy as an independent oracle)
EXPRESSIONS = [
    ("p + v*abs(v)/2 - 4.5", lambda p, v: p + v * np.abs(v) / 2 - 4.5),
    ("sin(p) * cos(v) - tan(p/4)", lambda p, v: np.sin(p) * np.cos(v) - np.tan(p / 4)),
    ("exp(p/3) - log(v*v + 1) + sqrt(abs(p))", lambda p, v: np.exp(p / 3) - np.log(v * v + 1) + np.sqrt(np.abs(p))),
    ("p**3 - 2*v**2 + p**-1", lambda p, v: p**3 - 2 * v**2 + 1 / p),
    ("min(p, v) - max(p, -v) + atan(p) + tanh(v)",
     lambda p, v: np.minimum(p, v) - np.maximum(p, -v) + np.arctan(p) + np.tanh(v)),
    ("(p - v)**2 / (1 + v**2)", lambda p, v: (p - v) ** 2 / (1 + v**2)),
    ("asin(p/10) + acos(v/10) + atan2(p, v)", lambda p, v: np.arcsin(p / 10) + np.arccos(v / 10) + np.arctan2(p, v)),
    ("p**0.5 + v", lambda p, v: np.sqrt(p) + v),
    ("-(p*v) + 3", lambda p, v: -(p * v) + 3),
]


@pytest.mark.parametrize("text, oracle", EXPRESSIONS)
def test_enclosure_contains_every_sample(text, oracle):
    expression = parse_expression(text, {"p": None, "v": None})
    rng = np.random.default_rng(0)
    centre = rng.uniform(-4, 4, size=(2, 200))
    width = rng.uniform(0, 2, size=(2, 200)) * rng.integers(0, 2, size=(2, 200))  # some boxes are points
    lo, hi = centre - width, centre + width
    enclosure = evaluate_interval(expression, {"p": Interval(lo[0], hi[0]), "v": Interval(lo[1], hi[1])})
    for _ in range(200):
        t = rng.random((2, 200))
        p, v = lo[0] + t[0] * (hi[0] - lo[0]), lo[1] + t[1] * (hi[1] - lo[1])
        with np.errstate(all="ignore"):
            value = oracle(p, v)
        finite = np.isfinite(value)
        assert np.all(enclosure.lo[finite] <= value[finite]) and np.all(value[finite] <= enclosure.hi[finite])


def test_monotone_expression_is_tight():
    expression = parse_expression("2*p + tanh(v)", {"p": None, "v": None})
    box = evaluate_interval(expression, {"p": Interval(np.array([1.0]), np.array([2.0])),
                                         "v": Interval(np.array([0.0]), np.array([1.0]))})
    assert np.isclose(box.lo[0], 2.0) and np.isclose(box.hi[0], 4.0 + np.tanh(1.0))
