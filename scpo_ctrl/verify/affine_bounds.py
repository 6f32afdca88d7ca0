"""Sound affine bounds of the law's residual over zonotopes (affine arithmetic).

A zonotope of states ``x = c + G xi`` (``|xi|_inf <= 1``, ``m`` generators) is pushed through the
residual ``r(x) = sigma(x) * u_scale * phi((x - x_eq) / x_scale)`` of :mod:`scpo_ctrl.export.law`
as an :class:`AffineForm`: every quantity ``q`` is written

    q = centre + linear @ xi + e,    |e| <= radius (per component),

so the part of ``q`` that depends on the state stays a function of the same ``xi`` as the state
(exact correlation) and only ``e`` is new, independent uncertainty. The steps:

* affine layers ``W q + b``: exact for the linear part, ``|W| radius`` for the remainder;
* ``tanh`` (hidden layers) and the gate ``smoothstep(clip(s, 0, 1))``: per neuron, over the
  neuron's range ``[l, u]``, ``f(y) = alpha y + beta + d`` with ``|d| <= delta``. The slope is the
  smaller derivative at the ends (min-slope) or the chord slope, whichever gives the narrower
  band; the band is the exact range of ``f(y) - alpha y`` on ``[l, u]`` (its extremes are at the ends or
  where ``f' = alpha``, which both functions give in closed form);
* the level ``V/c`` with ``V = dx^T P dx``: exact constant and linear part, the quadratic part
  ``xi^T D^T P D xi`` bounded by ``[0, sum |D^T P D|]``;
* the product ``sigma * y``: the affine product, the quadratic and remainder cross terms bounded
  by an interval.

Every step widens the remainder by a relative ``ROUND_OFF_WIDENING`` of its operands' magnitudes to
cover this module's own float64 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..export.law import DeployedLaw

ROUND_OFF_WIDENING = 1e-12  # relative and absolute slack for this module's own float64 arithmetic


@dataclass(frozen=True)
class AffineForm:
    """``q = centre + linear @ xi + e`` with ``|xi| <= 1`` and ``|e| <= radius``, for ``M`` sets at once.

    Attributes
    ----------
    centre : ndarray, shape (M, k)
    linear : ndarray, shape (M, k, m)
        Coefficients of the zonotope's noise symbols ``xi``.
    radius : ndarray, shape (M, k)
        Half-width of the independent remainder (>= 0).
    """

    centre: np.ndarray
    linear: np.ndarray
    radius: np.ndarray

    def bounds(self) -> tuple:
        """The range of every component: ``(lo, hi)``, each ``(M, k)``."""
        spread = np.abs(self.linear).sum(axis=2) + self.radius
        return self.centre - spread, self.centre + spread


def _slack(*magnitudes: np.ndarray) -> np.ndarray:
    """Widening that covers float64 rounding in an operation on operands of these magnitudes."""
    return ROUND_OFF_WIDENING * (1.0 + sum(magnitudes))


def state_form(centre: np.ndarray, G: np.ndarray) -> AffineForm:
    """The zonotope ``c + G xi`` itself: centre (M, nx), G (M, nx, m), no remainder."""
    return AffineForm(centre, G, np.zeros_like(centre))


def affine_map(form: AffineForm, W: np.ndarray, b: np.ndarray) -> AffineForm:
    """``W q + b`` for W (n, k), b (n,): exact linear part, remainder ``|W| radius``."""
    centre = form.centre @ W.T + b
    linear = np.matmul(W, form.linear)
    radius = form.radius @ np.abs(W).T
    size = np.abs(form.centre) @ np.abs(W).T + np.abs(linear).sum(axis=2) + radius
    return AffineForm(centre, linear, radius + _slack(size, np.abs(b)))


def scale(form: AffineForm, factor: np.ndarray, offset: np.ndarray) -> AffineForm:
    """``factor * q + offset`` component-wise (factor, offset broadcast to (M, k))."""
    factor = np.asarray(factor, dtype=float)
    centre = factor * form.centre + offset
    linear = factor[..., None] * form.linear
    radius = np.abs(factor) * form.radius
    size = np.abs(centre) + np.abs(linear).sum(axis=2) + radius
    return AffineForm(centre, linear, radius + _slack(size))


# -- scalar relaxations ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScalarFunction:
    """A function of one variable with what a linear relaxation needs.

    ``value``, ``slope``: f and f'; ``stationary(alpha)``: an array ``(S, ...)`` holding every point
    where ``f' = alpha`` (and any kink), possibly extra points or infinities (they are clipped into
    the range, which keeps the extreme search exact and sound).
    """

    value: object
    slope: object
    stationary: object


def _tanh_stationary(alpha: np.ndarray) -> np.ndarray:
    """Points where tanh' = 1 - tanh^2 = alpha: +-atanh(sqrt(1 - alpha)) for 0 <= alpha <= 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.arctanh(np.sqrt(np.clip(1.0 - alpha, 0.0, 1.0)))
    return np.stack([root, -root])


def _gate_value(s: np.ndarray) -> np.ndarray:
    t = np.clip(s, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gate_slope(s: np.ndarray) -> np.ndarray:
    t = np.clip(s, 0.0, 1.0)
    return 6.0 * t * (1.0 - t)


def _gate_stationary(alpha: np.ndarray) -> np.ndarray:
    """Points where 6 s (1 - s) = alpha (0 <= alpha <= 1.5), and the kinks of the clip at 0 and 1."""
    root = 0.5 * np.sqrt(np.clip(1.0 - 2.0 * alpha / 3.0, 0.0, 1.0))
    zero = np.zeros_like(alpha)
    return np.stack([0.5 - root, 0.5 + root, zero, zero + 1.0])


def _relu_stationary(alpha: np.ndarray) -> np.ndarray:
    """ReLU is piecewise linear: its only interior extreme of ``relu(y) - alpha y`` is the kink at 0."""
    return np.zeros_like(alpha)[None]


def _sigmoid_value(y: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * y))


def _sigmoid_slope(y: np.ndarray) -> np.ndarray:
    s = _sigmoid_value(y)
    return s * (1.0 - s)


def _sigmoid_stationary(alpha: np.ndarray) -> np.ndarray:
    """Points where s (1 - s) = alpha (0 <= alpha <= 1/4): s = (1 +- sqrt(1 - 4 alpha)) / 2, y = logit(s)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(np.clip(1.0 - 4.0 * alpha, 0.0, 1.0))
        y = 2.0 * np.arctanh(root)  # logit((1 + r) / 2) = 2 atanh(r)
    return np.stack([y, -y])


TANH = ScalarFunction(np.tanh, lambda y: 1.0 - np.tanh(y) ** 2, _tanh_stationary)
#: ReLU: with the chord slope over a crossing range this is the usual triangle relaxation (band [0, -a l])
RELU = ScalarFunction(lambda y: np.maximum(y, 0.0), lambda y: (y > 0.0).astype(float), _relu_stationary)
SIGMOID = ScalarFunction(_sigmoid_value, _sigmoid_slope, _sigmoid_stationary)
GATE = ScalarFunction(_gate_value, _gate_slope, _gate_stationary)


def band(function: ScalarFunction, lo: np.ndarray, hi: np.ndarray, alpha: np.ndarray) -> tuple:
    """Exact range ``[b_lo, b_hi]`` of ``f(y) - alpha y`` over ``y in [lo, hi]`` (element-wise), widened
    for rounding. The extremes lie at the ends or at a stationary point inside."""
    points = np.concatenate([lo[None], hi[None], np.clip(function.stationary(alpha), lo, hi)])
    with np.errstate(invalid="ignore"):
        values = function.value(points) - alpha * points
    slack = _slack(np.abs(values).max(axis=0))
    return values.min(axis=0) - slack, values.max(axis=0) + slack


def _chord_slope(function: ScalarFunction, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(f(hi) - f(lo)) / (hi - lo)``, and ``f'(lo)`` where the range is a point."""
    width = hi - lo
    flat = width <= 0.0
    rise = function.value(hi) - function.value(lo)
    return np.where(flat, function.slope(lo), rise / np.where(flat, 1.0, width))


def relax(function: ScalarFunction, lo: np.ndarray, hi: np.ndarray) -> tuple:
    """A linear relaxation per element: ``f(y) in alpha y + beta +- delta`` for every y in [lo, hi].

    Of the min-slope (``min(f'(lo), f'(hi))``) and chord slopes, the one with the smaller ``delta``.

    Returns
    -------
    (alpha, beta, delta), each of the shape of ``lo``.
    """
    best = None
    for alpha in (np.minimum(function.slope(lo), function.slope(hi)), _chord_slope(function, lo, hi)):
        b_lo, b_hi = band(function, lo, hi, alpha)
        option = (alpha, (b_lo + b_hi) / 2, (b_hi - b_lo) / 2)
        if best is None:
            best = option
            continue
        better = option[2] < best[2]
        best = tuple(np.where(better, new, old) for new, old in zip(option, best))
    return best


def apply(function: ScalarFunction, form: AffineForm) -> AffineForm:
    """``f(q)`` component-wise, through :func:`relax` over each component's range."""
    lo, hi = form.bounds()
    alpha, beta, delta = relax(function, lo, hi)
    return AffineForm(alpha * form.centre + beta, alpha[..., None] * form.linear,
                      alpha * form.radius + delta + _slack(np.abs(alpha * form.centre), np.abs(beta)))


# -- the level, the product --------------------------------------------------------------------
def quadratic(form: AffineForm, P: np.ndarray) -> AffineForm:
    """``q^T P q`` (P symmetric positive semi-definite) of a form without remainder, one component.

    ``(c + D xi)^T P (c + D xi) = c^T P c + 2 c^T P D xi + xi^T D^T P D xi``: the last term lies in
    ``[0, sum_ij |(D^T P D)_ij|]``.
    """
    if np.any(form.radius > 0):
        raise ValueError("quadratic() takes a form without remainder (the state zonotope)")
    c, D = form.centre, form.linear
    Pc = c @ P.T  # (M, n)
    constant = np.sum(c * Pc, axis=1)
    linear = 2.0 * np.matmul(Pc[:, None, :], D)  # (M, 1, m)
    Q = np.matmul(np.swapaxes(D, 1, 2), np.matmul(P, D))  # (M, m, m)
    top = np.abs(Q).sum(axis=(1, 2))
    centre = constant + top / 2
    size = np.abs(constant) + np.abs(linear).sum(axis=(1, 2)) + top
    return AffineForm(centre[:, None], linear, (top / 2 + _slack(size))[:, None])


def product(a: AffineForm, b: AffineForm) -> AffineForm:
    """``a * b`` component-wise (a with one component broadcast over b's).

    ``(a0 + a xi + ea)(b0 + b xi + eb) = a0 b0 + (a0 b + b0 a) xi + rest``, with
    ``|rest| <= |a0| rb + |b0| ra + |(a xi)(b xi)| + |a|_1 rb + ra |b|_1 + ra rb`` and the quadratic
    term ``(a xi)(b xi) = sum_i a_i b_i xi_i^2 + sum_{i != j} a_i b_j xi_i xi_j`` in
    ``[sum_i min(0, a_i b_i) - off, sum_i max(0, a_i b_i) + off]``, ``off = |a|_1 |b|_1 - sum_i |a_i b_i|``.
    """
    a0, b0 = a.centre, b.centre
    la, lb = a.linear, b.linear
    diagonal = la * lb  # (M, k, m)
    abs_a, abs_b = np.abs(la).sum(axis=2), np.abs(lb).sum(axis=2)
    off = np.maximum(abs_a * abs_b - np.abs(diagonal).sum(axis=2), 0.0)
    q_lo = np.minimum(diagonal, 0.0).sum(axis=2) - off
    q_hi = np.maximum(diagonal, 0.0).sum(axis=2) + off
    centre = a0 * b0 + (q_lo + q_hi) / 2
    linear = a0[..., None] * lb + b0[..., None] * la
    radius = ((q_hi - q_lo) / 2 + np.abs(a0) * b.radius + np.abs(b0) * a.radius + abs_a * b.radius
              + a.radius * abs_b + a.radius * b.radius)
    size = np.abs(a0 * b0) + np.abs(linear).sum(axis=2) + radius + (abs_a + a.radius) * (abs_b + b.radius)
    return AffineForm(centre, linear, radius + _slack(size))


# -- the law's residual --------------------------------------------------------------------------
def network_form(law: DeployedLaw, x: AffineForm) -> AffineForm:
    """``phi((x - x_eq) / x_scale)`` (tanh hidden layers, linear output): (M, nu) components."""
    h = scale(x, 1.0 / law.x_scale, -law.x_eq / law.x_scale)
    for index, (W, b) in enumerate(zip(law.weights, law.biases)):
        h = affine_map(h, W, b)
        if index < len(law.weights) - 1:
            h = apply(TANH, h)
    return h


def gate_form(law: DeployedLaw, x: AffineForm) -> AffineForm:
    """``sigma(x) = smoothstep(clip((V/c - 1) / (gate_ratio - 1), 0, 1))``: (M, 1)."""
    dx = AffineForm(x.centre - law.x_eq, x.linear, x.radius)
    level = quadratic(dx, law.P)
    k = 1.0 / (law.c * (law.gate_ratio - 1.0))
    s = scale(level, np.full(1, k), np.full(1, -1.0 / (law.gate_ratio - 1.0)))
    return apply(GATE, s)


def residual_form(law: DeployedLaw, centre: np.ndarray, G: np.ndarray) -> AffineForm:
    """The residual ``sigma(x) u_scale phi(...)`` over the zonotopes ``centre (M, nx) + G (M, nx, m) xi``,
    as an affine form (M, nu) in the same ``xi``."""
    x = state_form(centre, G)
    y = scale(network_form(law, x), law.u_scale, np.zeros(law.nu))
    return product(gate_form(law, x), y)
