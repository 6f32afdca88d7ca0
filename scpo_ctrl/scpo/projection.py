"""The certified region of SCPO and the projection of the raw step onto it (SCPO.md section 2, steps 4-5).

Notation: a bank ``D (d, m)`` of probe directions around theta, the safety
metrics ``g0 (k,)`` at theta and ``G (k, m)`` at ``theta + D[:, j]``,
curvature bounds ``l (k,)``, ``S = D^T D``. The step ``D xi`` is certified
for row i when

    (1 - 1^T xi) g0_i + G_i xi + (l_i / 2) (xi^T S xi + |xi|^T diag(S)) <= 0.

The projection solves

    min_xi |D xi - raw|^2   s.t. every row certified,  xi^T S xi <= r^2

as a conic program in (xi, t, q) with t >= |xi| and q >= xi^T S xi, so each
row is linear and a single second-order cone carries the quadratic (solved
by Clarabel). Rows are generated lazily: the solve starts from the rows
closest to active and adds the rows its answer breaks. The answer is
re-checked in float64 and shrunk toward 0 (the region is convex and contains
0 when g0 <= 0) until every row holds exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

SHRINK_STEPS = 60
INITIAL_WORKING_ROWS = 32
LAZY_ROUNDS = 12


@dataclass(frozen=True)
class Projection:
    """The projected step.

    Attributes
    ----------
    xi : ndarray, shape (m,)
        Bank coefficients; the step is ``D @ xi``.
    status : str
        Solver status (``solved``, ``zero`` when nothing better is certified,
        or the solver's word when it failed and the zero step was returned).
    shrink : float
        Factor applied to the solver's answer to certify it in float64 (1.0: none).
    bound : ndarray, shape (k,)
        The certified upper bound of each row at ``xi`` (all <= 0).
    """

    xi: np.ndarray
    status: str
    shrink: float
    bound: np.ndarray


def certified_bound(xi: np.ndarray, g0: np.ndarray, G: np.ndarray, l: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Upper bound of ``g(theta + D xi)`` per row from the smoothness assumption, shape ``(k,)``."""
    xi = np.asarray(xi, dtype=float)
    quadratic = float(xi @ S @ xi) + float(np.abs(xi) @ np.diag(S))
    return (1.0 - xi.sum()) * g0 + G @ xi + 0.5 * l * quadratic


def in_region(xi: np.ndarray, g0, G, l, S, radius: float) -> bool:
    """True when ``xi`` is certified for every row and within the trust radius."""
    return bool(np.all(certified_bound(xi, g0, G, l, S) <= 0.0) and float(xi @ S @ xi) <= radius**2 * (1 + 1e-12))


def project(D: np.ndarray, raw: np.ndarray, g0: np.ndarray, G: np.ndarray, l: np.ndarray, radius: float,
            aim: np.ndarray | None = None) -> Projection:
    """Project ``raw (d,)`` onto the certified region spanned by ``D (d, m)``.

    ``g0 (k,)`` must be <= 0 (a safe iterate). Returns the zero step when the
    solver fails or finds nothing better; never raises for a numerical reason.

    ``aim (k,) >= 0`` asks the conic solve for rows certified to ``<= -aim``
    (the float64 check still asks ``<= 0``). Without it, a step that ends on a
    row's boundary leaves the next iterate with ``g0 = 0`` there, where the
    certified region is a cone at 0 and the solver's tolerance on the wrong
    side makes every answer shrink to the zero step; aiming a little inside
    keeps each accepted iterate strictly feasible.
    """
    D = np.asarray(D, dtype=float)
    g0, G, l = (np.asarray(a, dtype=float) for a in (g0, G, l))
    aim = np.zeros_like(g0) if aim is None else np.minimum(np.asarray(aim, dtype=float), -g0)
    m = D.shape[1]
    S = D.T @ D
    if np.any(g0 > 0):
        raise ValueError("the current iterate is not safe (g0 > 0): SCPO needs a feasible start")
    b = D.T @ raw
    # The raw step itself, if it is in the span and certified, is the answer.
    xi_ls = np.linalg.lstsq(D, raw, rcond=None)[0]
    if np.allclose(D @ xi_ls, raw, rtol=1e-12, atol=1e-14 * max(1.0, np.linalg.norm(raw))) and in_region(xi_ls, g0, G, l, S, radius):
        return Projection(xi_ls, "raw", 1.0, certified_bound(xi_ls, g0, G, l, S))
    xi, status = _solve_lazy(S, b, g0 + aim, G + aim[:, None], l, radius, D)
    if xi is None:
        return _zero(m, g0, status)
    xi, shrink = _shrink_to_region(xi, g0, G, l, S, radius)
    if shrink == 0.0 or float(np.linalg.norm(D @ xi - raw)) >= float(np.linalg.norm(raw)):
        return _zero(m, g0, "zero")
    return Projection(xi, status, shrink, certified_bound(xi, g0, G, l, S))


def _solve_lazy(S, b, g0, G, l, radius, D) -> tuple[np.ndarray | None, str]:
    """Solve on a working set of rows, adding the rows the answer breaks, until none is broken.

    Rows far from active cannot bind within the trust region; starting from the
    rows closest to 0 keeps the solve small when k is large.
    """
    k = g0.size
    order = np.argsort(-g0)
    working = np.zeros(k, dtype=bool)
    working[order[:min(k, INITIAL_WORKING_ROWS)]] = True
    xi, status = None, "not solved"
    for _ in range(LAZY_ROUNDS):
        index = np.flatnonzero(working)
        xi, status = _solve_conic(S, b, g0[index], G[index], l[index], radius, D)
        if xi is None:
            return None, status
        broken = (certified_bound(xi, g0, G, l, S) > 0.0) & ~working
        if not broken.any():
            return xi, status
        working |= broken
    return xi, status


def _zero(m: int, g0: np.ndarray, status: str) -> Projection:
    return Projection(np.zeros(m), status, 0.0, g0.copy())


def _shrink_to_region(xi, g0, G, l, S, radius) -> tuple[np.ndarray, float]:
    """Scale ``xi`` toward 0 until it is certified in float64; returns (xi, factor)."""
    if in_region(xi, g0, G, l, S, radius):
        return xi, 1.0
    lo, hi = 0.0, 1.0  # lo certified, hi not
    for _ in range(SHRINK_STEPS):
        mid = 0.5 * (lo + hi)
        if in_region(mid * xi, g0, G, l, S, radius):
            lo = mid
        else:
            hi = mid
    return lo * xi, lo


def _solve_conic(S, b, g0, G, l, radius, D) -> tuple[np.ndarray | None, str]:
    """Solve the lifted conic program with Clarabel; returns (xi or None, status)."""
    import clarabel

    m = S.shape[0]
    # Variables z = [xi (m), t (m), q (1)]; objective q - 2 b^T xi (+ |raw|^2, dropped).
    n = 2 * m + 1
    P = sp.csc_matrix((n, n))
    c = np.concatenate([-2.0 * b, np.zeros(m), [1.0]])
    diag_S = np.diag(S)
    # Rows in the form A z + s = rhs, s >= 0:
    #  certified rows: (G_i - g0_i 1)^T xi + (l_i/2) diag(S)^T t + (l_i/2) q <= -g0_i
    A_rows = np.hstack([G - g0[:, None], 0.5 * l[:, None] * diag_S[None, :], 0.5 * l[:, None]])
    #  |xi_j| <= t_j:  xi - t <= 0, -xi - t <= 0
    I = np.eye(m)
    A_abs = np.vstack([np.hstack([I, -I, np.zeros((m, 1))]), np.hstack([-I, -I, np.zeros((m, 1))])])
    #  trust region: q <= r^2
    A_trust = np.concatenate([np.zeros(2 * m), [1.0]])[None, :]
    A_lin = np.vstack([A_rows, A_abs, A_trust])
    b_lin = np.concatenate([-g0, np.zeros(2 * m), [radius**2]])
    # Second-order cone ||(q - 1, 2 R xi)|| <= q + 1  <=>  xi^T S xi <= q, with S = R^T R.
    R = np.zeros((m, m))
    R_top = np.linalg.qr(D, mode="r")  # (min(d, m), m)
    R[: R_top.shape[0]] = R_top
    A_soc = np.zeros((m + 2, n))
    b_soc = np.zeros(m + 2)
    A_soc[0, -1], b_soc[0] = -1.0, 1.0
    A_soc[1, -1], b_soc[1] = -1.0, -1.0
    A_soc[2:, :m] = -2.0 * R
    A = sp.csc_matrix(np.vstack([A_lin, A_soc]))
    rhs = np.concatenate([b_lin, b_soc])
    cones = [clarabel.NonnegativeConeT(A_lin.shape[0]), clarabel.SecondOrderConeT(m + 2)]
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = 1e-10
    settings.tol_gap_rel = 1e-10
    settings.tol_feas = 1e-10
    try:
        solution = clarabel.DefaultSolver(P, c, A, rhs, cones, settings).solve()
    except Exception as exc:  # Clarabel raises plain exceptions on numerical trouble
        return None, f"solver error: {exc}"
    status = str(solution.status)
    if "Solved" not in status:
        return None, status
    return np.array(solution.x[:m]), "solved"


