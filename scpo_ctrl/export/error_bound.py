"""A forward rounding-error bound for the exported law evaluated in float32 (or float64).

Each quantity of the C step function is tracked as its exact value ``a``
(computed in float64) and a bound ``e`` on ``|a_hat - a|``, where ``a_hat`` is
what the C code computes. Constants carry the exact error of their rounding to
the C type. With unit roundoff ``r`` (2^-24 for float32) and IEEE operations
rounded to nearest (``-ffp-contract=off``, the default under ``-std=c99``):

* ``a + b``:  ``e = e_a + e_b + r (|a + b| + e_a + e_b)``
* ``a * b``:  ``e = |a| e_b + |b| e_a + e_a e_b + r (|a b| + |a| e_b + |b| e_a + e_a e_b)``
* ``a / b`` (b a constant stored as b~): ``e = e_a / |b~| + |a| |1/b~ - 1/b| + r (...)``
* ``tanh``: 1-Lipschitz, plus the implementation's own error (the bundle's proven float32
  rational tanh, or the C library's double tanh);
* ``min``/``max`` with a limit: 1-Lipschitz, plus the limit's own rounding.

The bound holds for the branch the reference takes; it is not applied where the
monitor's decision could differ (never, for finite states: the region bounds
are float32-representable, so both precisions compare the same numbers).

Summation order: every inner product is ``acc = b_j`` (or 0), then
``acc = acc + W[j][i] * x_i`` for ``i = 0, 1, ...``, each product and sum rounded
(:func:`_dot`), so the bound of an output depends on that order and its length. Every
code profile of the C bundle (:mod:`.c_bundle`: ``speed`` blocks several outputs per
pass but keeps one accumulator per output, summed in this order; ``size`` loops one
output at a time in this order; ``unrolled`` likewise) performs exactly these operations,
so one bound serves them all; the tests check the profiles agree bit for bit. The
speed profile's activation skips the clamp's test only where it cannot fire for a
state whose output is used (:func:`.c_bundle.clamp_free_layers`), and its early return
beyond the clamp gives the clamped evaluation's bits (:func:`.activation.early_saturation`).
An evaluation in another order (ONNX runtimes) takes ``any_order=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activation import TANH32_RELATIVE_UNITS
from .law import ACTIVATION_ULPS, REASON_OK, DeployedLaw, backup_inputs, deployed_input_limits, evaluate

#: tanh error assumed for onnxruntime's float32 kernel [ulp]: it is a rational approximation,
#: measured at 4 ulp at most on 10^5 points of [-5, 5] (tests check it on every export).
ONNX_ACTIVATION_ULPS = 8.0

UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "float64": 2.0 ** -53}
SMALLEST_SUBNORMAL = {"float32": 2.0 ** -149, "float64": 2.0 ** -1074}
STORAGE = {"float32": np.float32, "float64": np.float64}


@dataclass(frozen=True)
class Tracked:
    """Exact values ``a`` (any shape) and bounds ``e >= |computed - a|``, same shape."""

    a: np.ndarray
    e: np.ndarray


class _Arithmetic:
    """The error rules for one precision (unit roundoff ``r``)."""

    def __init__(self, precision: str):
        self.r = UNIT_ROUNDOFF[precision]
        self.tiny = SMALLEST_SUBNORMAL[precision]
        self.dtype = STORAGE[precision]

    def constant(self, value) -> Tracked:
        value = np.asarray(value, dtype=float)
        stored = value.astype(self.dtype).astype(float)
        with np.errstate(invalid="ignore"):
            error = np.where(np.isfinite(value), np.abs(stored - value), 0.0)
        return Tracked(value, error)

    def exact(self, value) -> Tracked:
        value = np.asarray(value, dtype=float)
        return Tracked(value, np.zeros_like(value))

    def _rounded(self, a: np.ndarray, e: np.ndarray) -> Tracked:
        return Tracked(a, e + self.r * (np.abs(a) + e) + self.tiny)

    def add(self, x: Tracked, y: Tracked, sign: float = 1.0) -> Tracked:
        return self._rounded(x.a + sign * y.a, x.e + y.e)

    def mul(self, x: Tracked, y: Tracked) -> Tracked:
        return self._rounded(x.a * y.a, np.abs(x.a) * y.e + np.abs(y.a) * x.e + x.e * y.e)

    def div_constant(self, x: Tracked, value) -> Tracked:
        value = np.asarray(value, dtype=float)
        stored = value.astype(self.dtype).astype(float)
        propagated = x.e / np.abs(stored) + np.abs(x.a) * np.abs(1.0 / stored - 1.0 / value)
        return self._rounded(x.a / value, propagated)

    def tanh(self, x: Tracked, ulps: float) -> Tracked:
        value = np.tanh(x.a)
        # ulp(v) <= 2 r |v| for normal v; the library adds ``ulps`` of them.
        library = ulps * 2.0 * self.r * (np.abs(value) + x.e) + self.tiny
        return Tracked(value, x.e + library)

    def clip(self, x: Tracked, low, high, stored: tuple | None = None) -> Tracked:
        """min(max(x, low), high); ``stored`` = the limits as the code holds them (default: rounded to nearest)."""
        low_t, high_t = self.constant(low), self.constant(high)
        if stored is not None:
            with np.errstate(invalid="ignore"):
                low_t = Tracked(low_t.a, np.where(np.isfinite(low_t.a), np.abs(stored[0] - low_t.a), 0.0))
                high_t = Tracked(high_t.a, np.where(np.isfinite(high_t.a), np.abs(stored[1] - high_t.a), 0.0))
        value = np.minimum(np.maximum(x.a, low_t.a), high_t.a)
        error = np.maximum(x.e, np.maximum(low_t.e, high_t.e))
        # Where both the exact and every possible computed value lie beyond a limit, both are clipped:
        # only the limit's own rounding remains.
        with np.errstate(invalid="ignore"):
            above = x.a - x.e > np.maximum(high_t.a, high_t.a + high_t.e)
            below = x.a + x.e < np.minimum(low_t.a, low_t.a - low_t.e)
        error = np.where(above, high_t.e, np.where(below, low_t.e, error))
        return Tracked(value, error)


def float_error_bound(law: DeployedLaw, X: np.ndarray, precision: str = "float32", any_order: bool = False,
                      activation_ulps: float | None = None, U_backup: np.ndarray | None = None) -> np.ndarray:
    """Bound on ``|u_computed - u_exact|`` per state and input for an evaluation in ``precision``.

    Parameters
    ----------
    law : DeployedLaw
    X : ndarray, shape (N, nx)
        Finite states, representable in ``precision`` (the evaluation receives them exactly).
    precision : {'float32', 'float64'}
    any_order : bool
        False: the C code's order (sums in index order, no fused multiply-add). True: any
        summation order and any use of FMA in the matrix products (an ONNX runtime's kernels);
        each dot product of n terms then gets the classical ``gamma_(n+1) sum |w| |x|``.
    activation_ulps : float, optional
        Error of the tanh implementation [units of 2^-23 |tanh| in float32, of 2^-52 |tanh| in float64].
        Default: the C code's, i.e. the proven bound of the bundle's float32 tanh
        (:data:`.activation.TANH32_RELATIVE_UNITS`) or the C library's double ``tanh``
        (:data:`.law.ACTIVATION_ULPS`).
    U_backup : ndarray, shape (N, nu), optional
        The backup's inputs (float64) for a law whose backup is an input (MPC); the evaluation receives
        them rounded to ``precision``, an error the bound carries.

    Returns
    -------
    ndarray, shape (N, nu)
        The bound [input units]; where the monitor trips (outside the region: the decision is
        exact in every precision) the bound of the saturated backup.
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    u, fallback = _law_errors(_Arithmetic(precision), law, X, precision, activation_ulps, any_order,
                              U_backup=U_backup)
    tripped = evaluate(law, X, U_backup).reason != REASON_OK
    return np.where(tripped[:, None], fallback.e, u.e)


def _law_errors(ar: _Arithmetic, law: DeployedLaw, X: np.ndarray, precision: str, activation_ulps: float | None,
                any_order: bool = False, gate_adjust=None, U_backup: np.ndarray | None = None) -> tuple:
    """The C step function's operations on ``X (N, nx)`` under the arithmetic ``ar``.

    ``gate_adjust(s, gate) -> gate`` may replace the tracked gate (the box version uses it). Returns the
    tracked saturated law and the tracked saturated backup, each ``(N, nu)``.
    """
    if activation_ulps is None:
        activation_ulps = TANH32_RELATIVE_UNITS if precision == "float32" else ACTIVATION_ULPS
    N = len(X)
    x = ar.exact(X)
    dx = ar.add(x, ar.constant(np.broadcast_to(law.x_eq, X.shape)), sign=-1.0)
    dot = _dot_any_order if any_order else _dot
    if law.backup_kind.in_closed_form:
        backup_sum = dot(ar, dx, law.K, bias=None)
        u_backup = ar.add(ar.constant(np.broadcast_to(law.u_eq, (N, law.nu))), backup_sum, sign=-1.0)
    else:
        # the backup's input arrives rounded to the evaluation's precision
        u_backup = ar.constant(backup_inputs(law, X, U_backup))
    Pdx = dot(ar, dx, law.P, bias=None)
    products = ar.mul(dx, Pdx)
    V = _sum_any_order(ar, products) if any_order else _sum(ar, products)
    level = ar.div_constant(V, law.c)
    s = ar.div_constant(ar.add(level, ar.exact(np.ones(N)), sign=-1.0), law.gate_ratio - 1.0)
    s = ar.clip(s, 0.0, 1.0)
    three_minus = ar.add(ar.exact(np.full(N, 3.0)), ar.mul(ar.exact(np.full(N, 2.0)), s), sign=-1.0)
    gate = ar.mul(ar.mul(s, s), three_minus)
    if gate_adjust is not None:
        gate = gate_adjust(s, gate)
    h = ar.div_constant(dx, np.broadcast_to(law.x_scale, X.shape))
    for index, (W, b) in enumerate(zip(law.weights, law.biases)):
        h = dot(ar, h, W, bias=b)
        if index < len(law.weights) - 1:
            h = ar.tanh(h, activation_ulps)
    scaled = ar.mul(ar.constant(np.broadcast_to(law.u_scale, (N, law.nu))), h)
    gate_u = Tracked(np.repeat(gate.a[:, None], law.nu, axis=1), np.repeat(gate.e[:, None], law.nu, axis=1))
    u = ar.add(u_backup, ar.mul(gate_u, scaled))
    limits = deployed_input_limits(law, precision)
    return ar.clip(u, law.u_min, law.u_max, limits), ar.clip(u_backup, law.u_min, law.u_max, limits)


def _dot(ar: _Arithmetic, x: Tracked, M: np.ndarray, bias) -> Tracked:
    """``bias + sum_j M[:, j] x_j`` accumulated in index order (as the C loops); x (N, n_in) -> (N, n_out)."""
    N = x.a.shape[0]
    if bias is None:
        acc = ar.exact(np.zeros((N, M.shape[0])))
    else:
        acc = ar.constant(np.broadcast_to(bias, (N, M.shape[0])))
    for j in range(M.shape[1]):
        weight = ar.constant(np.broadcast_to(M[:, j], (N, M.shape[0])))
        xj = Tracked(np.repeat(x.a[:, j:j + 1], M.shape[0], axis=1), np.repeat(x.e[:, j:j + 1], M.shape[0], axis=1))
        acc = ar.add(acc, ar.mul(weight, xj))
    return acc


def _gamma(ar: _Arithmetic, n: int) -> float:
    return n * ar.r / (1.0 - n * ar.r)


def _dot_any_order(ar: _Arithmetic, x: Tracked, M: np.ndarray, bias) -> Tracked:
    """As :func:`_dot` for any summation order and FMA use: gamma_(n+1) times the sum of magnitudes."""
    weight = ar.constant(M)  # (n_out, n_in)
    stored = np.abs(weight.a) + weight.e
    value = x.a @ M.T
    propagated = x.e @ stored.T + np.abs(x.a) @ weight.e.T
    magnitude = (np.abs(x.a) + x.e) @ stored.T
    if bias is not None:
        b = ar.constant(bias)
        value = value + b.a
        propagated = propagated + b.e
        magnitude = magnitude + np.abs(b.a) + b.e
    n = M.shape[1] + (0 if bias is None else 1)
    return Tracked(value, propagated + _gamma(ar, n) * magnitude + n * ar.tiny)


def _sum_any_order(ar: _Arithmetic, x: Tracked) -> Tracked:
    n = x.a.shape[-1]
    value = np.sum(x.a, axis=-1)
    return Tracked(value, np.sum(x.e, axis=-1) + _gamma(ar, n) * np.sum(np.abs(x.a) + x.e, axis=-1) + n * ar.tiny)


def _sum(ar: _Arithmetic, x: Tracked) -> Tracked:
    """Sum over the last axis in index order, starting from 0."""
    acc = ar.exact(np.zeros(x.a.shape[:-1]))
    for j in range(x.a.shape[-1]):
        acc = ar.add(acc, Tracked(x.a[..., j], x.e[..., j]))
    return acc


class _Magnitudes(_Arithmetic):
    """The same rules on magnitude bounds: ``a`` bounds ``|value|`` over a set of states, not a value."""

    def add(self, x: Tracked, y: Tracked, sign: float = 1.0) -> Tracked:
        return self._rounded(np.abs(x.a) + np.abs(y.a), x.e + y.e)

    def mul(self, x: Tracked, y: Tracked) -> Tracked:
        a, b = np.abs(x.a), np.abs(y.a)
        return self._rounded(a * b, a * y.e + b * x.e + x.e * y.e)

    def div_constant(self, x: Tracked, value) -> Tracked:
        result = super().div_constant(Tracked(np.abs(x.a), x.e), value)
        return Tracked(np.abs(result.a), result.e)

    def tanh(self, x: Tracked, ulps: float) -> Tracked:
        result = super().tanh(Tracked(np.abs(x.a), x.e), ulps)
        return Tracked(np.abs(result.a), result.e)

    def clip(self, x: Tracked, low, high, stored: tuple | None = None) -> Tracked:
        low_t, high_t = self.constant(low), self.constant(high)
        if stored is not None:
            with np.errstate(invalid="ignore"):
                low_t = Tracked(low_t.a, np.where(np.isfinite(low_t.a), np.abs(stored[0] - low_t.a), 0.0))
                high_t = Tracked(high_t.a, np.where(np.isfinite(high_t.a), np.abs(stored[1] - high_t.a), 0.0))
        limit = np.maximum(np.abs(low_t.a), np.abs(high_t.a))
        return Tracked(np.minimum(np.abs(x.a), limit), np.maximum(x.e, np.maximum(low_t.e, high_t.e)))


def float_error_bound_box(law: DeployedLaw, lo: np.ndarray, hi: np.ndarray, precision: str = "float32",
                          activation_ulps: float | None = None, level_range: tuple | None = None) -> np.ndarray:
    """Bound on ``|u_C - u_exact|`` valid for *every* state of each box ``[lo, hi]`` (C operation order).

    The per-state rules of :func:`float_error_bound` are applied to magnitude bounds (``|x|`` over
    the box, ``|tanh| <= 1``, the gate and its argument clipped to [0, 1]), which is sound because
    every rule is non-decreasing in the magnitudes. Coarser than the per-state bound; used where a
    whole set of states must be covered (formal reachability).

    Parameters
    ----------
    lo, hi : ndarray, shape (M, nx)
        Finite boxes.
    level_range : (ndarray, ndarray), optional
        Bounds ``(M,)`` on V/c over each box. Where even the computed level is certainly below 1
        (or above gate_ratio), the computed gate is exactly 0 (or 1) and carries no error.

    Returns
    -------
    ndarray, shape (M, nu)
    """
    if not law.backup_kind.in_closed_form:
        raise ValueError(f"a box bound needs the backup in closed form; an {law.backup_kind.type.upper()} backup's "
                         "input is not")
    lo, hi = np.atleast_2d(lo), np.atleast_2d(hi)

    def adjust(s: Tracked, gate: Tracked) -> Tracked:
        gate = Tracked(np.minimum(gate.a, 1.0), gate.e)
        if level_range is None:
            return gate
        # the computed s lies within e of the exact one; the clip then returns exactly 0 or 1
        s_low = (np.asarray(level_range[0]) - 1.0) / (law.gate_ratio - 1.0) - s.e
        s_high = (np.asarray(level_range[1]) - 1.0) / (law.gate_ratio - 1.0) + s.e
        zero, one = s_high < 0.0, s_low > 1.0
        return Tracked(np.where(zero, 0.0, np.where(one, 1.0, gate.a)), np.where(zero | one, 0.0, gate.e))

    u, fallback = _law_errors(_Magnitudes(precision), law, np.maximum(np.abs(lo), np.abs(hi)), precision,
                              activation_ulps, gate_adjust=adjust)
    return np.maximum(u.e, fallback.e)
