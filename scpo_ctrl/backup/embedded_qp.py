"""The embedded MPC's programme solved exactly (Clarabel, interior point, float64): the reference the
fixed-iteration ADMM is measured against and its penalty scale is chosen with.

The same problem as :mod:`.embedded_mpc`'s docstring, with explicit slacks: ``s_k >= 0`` per limited state
and stage 1..N-1 (``x_min' - s <= x_k <= x_max' + s``), ``t >= 0`` for the terminal set
(``|L' dx_N| <= sqrt(c) + t``, a second-order cone), each penalised by ``PENALTY`` times its value.
"""

from __future__ import annotations

import clarabel
import numpy as np
from scipy import sparse

from ..errors import ScpoError
from .embedded_mpc import PENALTY, EmbeddedMpcFormulation


class ExactQpError(ScpoError):
    """Clarabel did not solve the embedded MPC's programme."""


def exact_inputs(F: EmbeddedMpcFormulation, X: np.ndarray) -> np.ndarray:
    """The optimal first input ``(B, nu)`` at each row of ``X (B, nx)``."""
    X = np.atleast_2d(np.asarray(X, dtype=float))
    problem = _Programme(F)
    return np.array([problem.solve(x) for x in X]).reshape(len(X), F.nu)


class _Programme:
    """The QP's matrices (built once per formulation); :meth:`solve` sets the initial state."""

    def __init__(self, F: EmbeddedMpcFormulation):
        nx, nu, N = F.nx, F.nu, F.N
        self.F = F
        limited = np.flatnonzero(np.isfinite(F.x_min) | np.isfinite(F.x_max))
        ns = limited.size
        n_u, n_x, n_s = N * nu, N * nx, (N - 1) * ns
        n = n_u + n_x + n_s + 1
        it = n - 1
        # variables: du_0..du_{N-1}, dx_1..dx_N, s_1..s_{N-1} (limited states), t
        H = sparse.block_diag([sparse.kron(sparse.eye(N), F.R), sparse.kron(sparse.eye(N - 1), F.Q), F.P,
                               sparse.csc_matrix((n_s + 1, n_s + 1))], format="csc")
        q = np.zeros(n)
        q[n_u + n_x:] = PENALTY
        # dynamics (zero cone): dx_{k+1} - A dx_k - B du_k = 0 (k = 0: = A dx_0, set per state)
        shift = sparse.kron(sparse.eye(N, k=-1), F.A)
        dyn = sparse.hstack([-sparse.kron(sparse.eye(N), F.B), sparse.eye(n_x) - shift,
                             sparse.csc_matrix((n_x, n_s + 1))])
        blocks, rhs = [dyn], [np.zeros(n_x)]
        # input bounds, then state limits with their slacks (nonnegative cone: b - A v >= 0)
        finite_u = [(i, sign, sign * (bound - F.u_eq[i])) for i in range(nu)
                    for sign, bound in ((1.0, F.u_max[i]), (-1.0, F.u_min[i])) if np.isfinite(bound)]
        rows = sparse.lil_matrix((N * len(finite_u) + (N - 1) * 2 * ns + n_s + 1, n))
        b = []
        r = 0
        for k in range(N):
            for i, sign, bound in finite_u:
                rows[r, k * nu + i] = sign
                b.append(bound)
                r += 1
        for k in range(1, N):
            for j, i in enumerate(limited):
                for sign, bound in ((1.0, F.x_max[i]), (-1.0, F.x_min[i])):
                    if np.isfinite(bound):
                        rows[r, n_u + (k - 1) * nx + i] = sign
                        rows[r, n_u + n_x + (k - 1) * ns + j] = -1.0
                        b.append(sign * (bound - F.x_eq[i]))
                        r += 1
        for v in range(n_s + 1):
            rows[r, n_u + n_x + v] = -1.0
            b.append(0.0)
            r += 1
        blocks.append(rows[:r].tocsc())
        rhs.append(np.array(b))
        cone = sparse.lil_matrix((1 + nx, n))
        cone[0, it] = -1.0
        cone[1:, n_u + (N - 1) * nx: n_u + N * nx] = -np.linalg.cholesky(F.P).T
        blocks.append(cone.tocsc())
        rhs.append(np.concatenate([[np.sqrt(F.c)], np.zeros(nx)]))
        self.H, self.q = sparse.triu(H).tocsc(), q
        self.A = sparse.vstack(blocks).tocsc()
        self.b = np.concatenate(rhs)
        self.cones = [clarabel.ZeroConeT(n_x), clarabel.NonnegativeConeT(r), clarabel.SecondOrderConeT(1 + nx)]
        settings = clarabel.DefaultSettings()
        settings.verbose = False
        settings.tol_gap_abs = settings.tol_gap_rel = 1e-10
        settings.tol_feas = 1e-10
        self.settings = settings

    def solve(self, x: np.ndarray) -> np.ndarray:
        """The optimal ``u_0 (nu,)`` from state ``x (nx,)``."""
        F = self.F
        b = self.b.copy()
        b[:F.nx] = F.A @ (np.asarray(x, dtype=float) - F.x_eq)
        solution = clarabel.DefaultSolver(self.H, self.q, self.A, b, self.cones, self.settings).solve()
        if str(solution.status).split(".")[-1] not in ("Solved", "AlmostSolved"):
            raise ExactQpError(f"Clarabel did not solve the embedded MPC's QP at x = {x}: {solution.status}")
        return np.asarray(solution.x)[:F.nu] + F.u_eq
