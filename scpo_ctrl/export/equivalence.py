"""Compare an implementation of the law (ONNX, compiled C) with the float64 reference on a campaign."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .error_bound import float_error_bound
from .law import DeployedLaw, LawOutput, evaluate

#: float64 implementations are held to these absolute tolerances [input units]: the C to 1e-12;
#: onnxruntime to 1e-6, because its graph optimiser may fuse a constant scale into a Gemm whose
#: alpha attribute is float32 (seen: 8e-9 on a float64 graph before the graph was reordered).
FLOAT64_TOLERANCE = {"c": 1e-12, "onnx": 1e-6}
#: relative distance of V/c to a gate switching level (1 or gate_ratio) below which the branch
#: may legitimately differ between precisions.
SWITCHING_BAND = {"float32": 1e-4, "float64": 1e-10}


@dataclass(frozen=True)
class Equivalence:
    """The result of one comparison.

    Attributes
    ----------
    implementation : str
        e.g. ``c-host-float32``.
    precision : str
    states : int
    worst_error : float
        max |u - u_ref| over states and inputs [input units].
    worst_state : list
        The state where it occurred.
    worst_bound_ratio : float
        max |u - u_ref| / tolerance (<= 1 means within tolerance everywhere).
    tolerance : str
        How the tolerance was set.
    max_tolerance : float
        Largest per-state tolerance used.
    branch_mismatches : int
        States away from the switching surfaces whose branch differs.
    branch_mismatches_near_switching : int
        Branch differences within the switching band (allowed).
    reason_mismatches : int
    passed : bool
    """

    implementation: str
    precision: str
    states: int
    worst_error: float
    worst_state: list
    worst_bound_ratio: float
    tolerance: str
    max_tolerance: float
    branch_mismatches: int
    branch_mismatches_near_switching: int
    reason_mismatches: int
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def tolerance_for(law: DeployedLaw, X: np.ndarray, precision: str, any_order: bool,
                  activation_ulps: float | None = None, U_backup: np.ndarray | None = None) -> tuple:
    """Per-state, per-input tolerance ``(N, nu)`` and a sentence saying where it comes from.

    ``any_order`` marks an ONNX runtime (kernels with their own summation order), otherwise the C.
    """
    if precision == "float64":
        tolerance = FLOAT64_TOLERANCE["onnx" if any_order else "c"]
        return np.full((len(X), law.nu), tolerance), f"absolute {tolerance:g}"
    kwargs = {} if activation_ulps is None else {"activation_ulps": activation_ulps}
    bound = float_error_bound(law, X, precision, any_order=any_order, U_backup=U_backup, **kwargs)
    order = "any summation order/FMA" if any_order else "the C code's operation order"
    return bound, f"forward rounding-error bound of the float32 evaluation ({order}), per state"


def compare(law: DeployedLaw, implementation: str, precision: str, X: np.ndarray, output: LawOutput,
            any_order: bool = False, activation_ulps: float | None = None,
            U_backup: np.ndarray | None = None) -> Equivalence:
    """Compare ``output`` (computed on ``X``, and ``U_backup`` for an MPC-backed law) with the reference;
    finite states only."""
    reference = evaluate(law, X, U_backup)
    tolerance, how = tolerance_for(law, X, precision, any_order, activation_ulps, U_backup)
    error = np.abs(output.u - reference.u)
    error = np.where(np.isnan(error), np.inf, error)
    ratio = np.max(error / np.maximum(tolerance, np.finfo(float).tiny))
    worst = np.unravel_index(np.argmax(error), error.shape)
    band = SWITCHING_BAND[precision]
    near = np.zeros(len(X), dtype=bool)
    for level in (1.0, law.gate_ratio):
        near |= np.abs(reference.level / level - 1.0) <= band
    # Between the surfaces, blend vs its neighbours is decided by the gate; away from them it is exact.
    differs = output.branch != reference.branch
    mismatches = int(np.sum(differs & ~near))
    reasons = int(np.sum(output.reason != reference.reason))
    passed = bool(ratio <= 1.0 and mismatches == 0 and reasons == 0)
    return Equivalence(
        implementation=implementation, precision=precision, states=len(X), worst_error=float(np.max(error)),
        worst_state=[float(v) for v in X[worst[0]]], worst_bound_ratio=float(ratio), tolerance=how,
        max_tolerance=float(np.max(tolerance)), branch_mismatches=mismatches,
        branch_mismatches_near_switching=int(np.sum(differs & near)), reason_mismatches=reasons, passed=passed,
    )

