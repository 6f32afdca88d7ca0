"""The float32 tanh of the exported C: a rational approximation with an exhaustively checked error bound.

``tanh(x) ~ x P(x^2) / Q(x^2)`` with P and Q of degree 4 (coefficients fitted
for this project by iteratively reweighted least squares on the relative
error, then rounded to float32), the input clamped to ``[-CLAMP, CLAMP]``,
evaluated by Horner's rule in the order :func:`tanh32` spells out. Why not
the C library's ``tanhf``: it costs about 100 instructions on a Cortex-M4F
(newlib), and glibc's and newlib's differ in the last bits on a few inputs,
so the host and target builds would not agree bit for bit. This function uses
only IEEE-754 ``+ * /`` (correctly rounded on both, with fused multiply-add
off), so host and target compute the same bits.

The bound (:data:`TANH32_RELATIVE_UNITS`, in units of ``2^-23 |tanh(x)|``) is
established by :func:`prove_bound`:

* every float32 in ``[2^-12, CLAMP]`` is evaluated exactly as the C does
  (numpy's float32 ``+ * /`` are correctly rounded, like the C's) and compared
  with float64 ``tanh`` (whose own error, below 1e-16 relative, is added);
* below ``2^-12`` every Horner step rounds back to its constant term (checked
  at ``2^-12``, the steps are monotone in ``t``), so the result is ``x``
  itself, within ``x^2 / 3 < 2^-24`` relative of tanh;
* above ``CLAMP`` the result is the value at ``CLAMP`` (1.0), within the bound
  of both ``tanh(CLAMP)`` and 1, hence of every tanh(x) between; negative inputs mirror positive ones exactly
  (rounding to nearest is symmetric).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLAMP = np.float32(9.02)
#: x P(x^2): coefficients of x^1, x^3, ..., x^9
P = np.array([1.0, 0.13379708, 0.00349402, 2.058315e-05, 1.3318475e-08], dtype=np.float32)
#: Q(x^2): coefficients of x^0, x^2, ..., x^8
Q = np.array([1.0, 0.46713024, 0.025871025, 0.0003283065, 7.7618023e-07], dtype=np.float32)
#: proven: |tanh32(x) - tanh(x)| <= TANH32_RELATIVE_UNITS * 2^-23 * |tanh(x)| for every float32 x
TANH32_RELATIVE_UNITS = 3.0
SMALL = np.float32(2.0 ** -12)


def tanh32(x: np.ndarray) -> np.ndarray:
    """The C code's float32 tanh, operation for operation (input and output float32)."""
    return rational32(np.minimum(np.maximum(np.asarray(x, dtype=np.float32), -CLAMP), CLAMP))


@dataclass(frozen=True)
class EarlySaturation:
    """The speed profile's form of the clamp: ``t = x * x; if (t > threshold) return x > 0 ? upper : lower``.

    Attributes
    ----------
    threshold : numpy.float32
        ``fl(CLAMP * CLAMP)``.
    upper, lower : numpy.float32
        ``tanh32(CLAMP)`` and ``tanh32(-CLAMP)``: what the clamped evaluation returns beyond the clamp.
    exact : bool
        The form gives :func:`tanh32`'s bits on every float32 input (see :func:`early_saturation`).
    """

    threshold: np.float32
    upper: np.float32
    lower: np.float32
    exact: bool


def early_saturation() -> EarlySaturation:
    """Check that testing ``fl(x * x) > fl(CLAMP^2)`` and returning the clamp's values is :func:`tanh32`.

    Rounding is monotone, so ``|x| <= CLAMP`` gives ``fl(x^2) <= fl(CLAMP^2)`` (evaluated as before, the
    clamp being a no-op there) and ``fl(x^2) > fl(CLAMP^2)`` implies ``|x| > CLAMP`` (clamped: the constant).
    The floats just beyond the clamp whose square still rounds to ``fl(CLAMP^2)`` are evaluated without
    the clamp: each is checked to give the clamp's value. NaN fails the test and propagates, as before.
    """
    threshold = np.float32(CLAMP * CLAMP)
    upper, lower = tanh32(np.array([CLAMP, -CLAMP], dtype=np.float32))
    exact = bool(upper == -lower)
    x = np.nextafter(CLAMP, np.float32(np.inf))
    while np.float32(x * x) <= threshold:
        values = rational32(np.array([x, -x], dtype=np.float32))
        exact &= bool(values[0] == upper and values[1] == lower)
        x = np.nextafter(x, np.float32(np.inf))
    return EarlySaturation(threshold=threshold, upper=upper, lower=lower, exact=exact)


def rational32(x: np.ndarray) -> np.ndarray:
    """``x P(x^2) / Q(x^2)`` in float32, operation for operation, without the clamp."""
    x = np.asarray(x, dtype=np.float32)
    t = x * x
    p = P[4]
    for coefficient in P[3::-1]:
        p = p * t + coefficient
    p = p * x
    q = Q[4]
    for coefficient in Q[3::-1]:
        q = q * t + coefficient
    return (p / q).astype(np.float32)


@dataclass(frozen=True)
class ActivationProof:
    """What :func:`prove_bound` checked.

    Attributes
    ----------
    inputs_checked : int
        float32 values evaluated (all of ``[2^-12, CLAMP]`` when exhaustive).
    exhaustive : bool
    worst_relative_units : float
        max |tanh32 - tanh| / (2^-23 |tanh|) found.
    worst_input : float
    small_inputs_exact : bool
        Below 2^-12 the result is x itself.
    clamp_value_ok : bool
        tanh32(CLAMP) within the bound of both tanh(CLAMP) and 1.
    odd : bool
        tanh32(-x) == -tanh32(x) on the checked inputs.
    holds : bool
        Every check passed and ``worst_relative_units <= TANH32_RELATIVE_UNITS``.
    """

    inputs_checked: int
    exhaustive: bool
    worst_relative_units: float
    worst_input: float
    small_inputs_exact: bool
    clamp_value_ok: bool
    odd: bool
    holds: bool


def prove_bound(stride: int = 1, chunk: int = 1 << 24) -> ActivationProof:
    """Check the bound on every ``stride``-th float32 of ``[2^-12, CLAMP]`` (``stride=1``: all of them)."""
    first = int(np.array(SMALL, dtype=np.float32).view(np.uint32))
    last = int(np.array(CLAMP, dtype=np.float32).view(np.uint32))
    worst, worst_input, checked, odd = 0.0, 0.0, 0, True
    for start in range(first, last + 1, chunk * stride):
        bits = np.arange(start, min(start + chunk * stride, last + 1), stride, dtype=np.uint32)
        x = bits.view(np.float32)
        y = tanh32(x)
        exact = np.tanh(x.astype(float))
        units = (np.abs(y.astype(float) - exact) / exact + 1e-16) / 2.0 ** -23
        index = int(np.argmax(units))
        if units[index] > worst:
            worst, worst_input = float(units[index]), float(x[index])
        odd &= bool(np.array_equal(tanh32(-x), -y))
        checked += len(x)
    tiny = np.array([SMALL, np.nextafter(SMALL, np.float32(0)), np.float32(1e-20), np.float32(1e-45)],
                    dtype=np.float32)
    small_exact = bool(np.array_equal(tanh32(tiny[1:]), tiny[1:]))
    # the first Horner steps at t = 2^-24 (x = 2^-12) already round to their constants
    t = SMALL * SMALL
    for coefficients in (P, Q):
        for k in range(len(coefficients) - 1, 0, -1):
            small_exact &= bool(coefficients[k] * t + coefficients[k - 1] == coefficients[k - 1])
    # beyond CLAMP the output is the constant y_c = tanh32(CLAMP), and tanh(x) lies in [tanh(CLAMP), 1):
    # the error is at most the larger of the distances from y_c to the interval's two ends
    y_c = float(tanh32(np.array([CLAMP]))[0])
    allowed = TANH32_RELATIVE_UNITS * 2.0 ** -23 * np.tanh(float(CLAMP))
    clamp_ok = bool(abs(y_c - 1.0) <= allowed and abs(y_c - np.tanh(float(CLAMP))) <= allowed
                    and tanh32(np.array([np.float32(1e30)]))[0] == np.float32(y_c))
    holds = small_exact and clamp_ok and odd and worst <= TANH32_RELATIVE_UNITS
    return ActivationProof(inputs_checked=checked, exhaustive=stride == 1, worst_relative_units=worst,
                           worst_input=worst_input, small_inputs_exact=small_exact, clamp_value_ok=clamp_ok,
                           odd=odd, holds=holds)
