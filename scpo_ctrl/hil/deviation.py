"""How far a HIL trajectory may drift from the Python closed loop of the same law: the float32 error
propagated over the horizon (first order).

The Python loop is ``x_{k+1} = f(x_k, pi(x_k))`` in float64. The HIL loop applies
``u_k = pi(fl32(x~_k)) + e_k`` with ``|e_k| <= eps(x~_k)`` (the export's per-state float32 bound) and
``|fl32(x) - x| <= 2^-24 |x|``. Linearising along the Python trajectory, with ``A_k = df/dx``,
``B_k = df/du``, ``J_k = dpi/dx`` and ``Phi_k = A_k + B_k J_k``, the deviation
``d_k = x~_k - x_k`` obeys ``d_{k+1} = Phi_k d_k + B_k w_k`` with ``|w_k| <= |J_k| 2^-24 |x_k| + eps(x_k)``, so

    |d_k| <= sum_{j<k} |Phi_{k-1} ... Phi_{j+1} B_j| (|J_j| 2^-24 |x_j| + eps(x_j))   (componentwise).

Keeping the products signed (and taking the absolute value of each transfer matrix, not of each
factor) keeps the stable closed loop's contraction; a product of absolute values would grow
exponentially. What the bound is not: second-order terms are dropped (they are O(|d|^2), ~1e-14 here),
``eps`` is taken at the Python state rather than the HIL one, ``J`` is a finite-difference Jacobian
(the larger one-sided slope at a kink of the saturation or the gate), and the float64 rounding of the
plant step itself (2^-53 relative, eight orders below the float32 terms) is omitted. It does not hold
across a monitor fallback (a discontinuity); certified runs do not reach one.
"""

from __future__ import annotations

import casadi as ca
import numpy as np

from ..export.error_bound import float_error_bound
from ..export.law import DeployedLaw, evaluate

FLOAT32_UNIT = 2.0 ** -24
RELATIVE_STEP = 1e-6


def policy_jacobian(law: DeployedLaw, X: np.ndarray) -> np.ndarray:
    """``dpi/dx`` at the rows of ``X (N, nx)``, shape (N, nu, nx): the larger-magnitude one-sided difference."""
    base = evaluate(law, X).u
    J = np.empty((len(X), law.nu, law.nx))
    for j in range(law.nx):
        h = RELATIVE_STEP * np.maximum(np.abs(X[:, j]), 1.0)
        step = np.zeros_like(X)
        step[:, j] = h
        forward = (evaluate(law, X + step).u - base) / h[:, None]
        backward = (base - evaluate(law, X - step).u) / h[:, None]
        J[:, :, j] = np.where(np.abs(forward) >= np.abs(backward), forward, backward)
    return J


def plant_jacobians(model, X: np.ndarray, U: np.ndarray) -> tuple:
    """``A (N, nx, nx)``, ``B (N, nx, nu)`` of the CasADi step at the rows of ``X``, ``U``."""
    x, u = ca.MX.sym("x", model.nx), ca.MX.sym("u", model.nu)
    step = model.f(x, u)
    jac = ca.Function("plant_jacobians", [x, u], [ca.jacobian(step, x), ca.jacobian(step, u)]).map(len(X))
    A, B = jac(X.T, U.T)
    A = np.array(A, dtype=float).reshape(model.nx, len(X), model.nx).transpose(1, 0, 2)
    B = np.array(B, dtype=float).reshape(model.nx, len(X), model.nu).transpose(1, 0, 2)
    return A, B


def propagated_bound(law: DeployedLaw, model, x_python: np.ndarray, u_python: np.ndarray) -> np.ndarray:
    """Componentwise bound on ``|x_HIL - x_Python|`` per step.

    Parameters
    ----------
    x_python : ndarray, shape (E, H+1, nx)
        Python closed-loop states (no noise, no faults).
    u_python : ndarray, shape (E, H+1, nu)

    Returns
    -------
    ndarray, shape (E, H+1, nx) [state units]; 0 at k = 0.
    """
    E, H1, nx = x_python.shape
    H = H1 - 1
    X = x_python[:, :H].reshape(-1, nx)
    U = u_python[:, :H].reshape(-1, law.nu)
    J = policy_jacobian(law, X).reshape(E, H, law.nu, nx)
    A, B = plant_jacobians(model, X, U)
    A, B = A.reshape(E, H, nx, nx), B.reshape(E, H, nx, law.nu)
    eps = float_error_bound(law, X, "float32").reshape(E, H, law.nu)
    rounding = FLOAT32_UNIT * np.abs(x_python[:, :H])
    w = np.einsum("ehuj,ehj->ehu", np.abs(J), rounding) + eps          # (E, H, nu)
    Phi = A + np.einsum("ehiu,ehuj->ehij", B, J)                       # (E, H, nx, nx)
    bound = np.zeros((E, H1, nx))
    for e in range(E):
        transfer = np.zeros((0, nx, law.nu))                           # T_j for j < k
        inputs = np.zeros((0, law.nu))
        for k in range(H):
            transfer = np.concatenate([np.einsum("ij,tju->tiu", Phi[e, k], transfer), B[e, k][None]])
            inputs = np.concatenate([inputs, w[e, k][None]])
            bound[e, k + 1] = np.einsum("tiu,tu->i", np.abs(transfer), inputs)
    return bound
