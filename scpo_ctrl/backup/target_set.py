"""The backup's target set T = {x : V(x) = (x - x_eq)^T P (x - x_eq) <= c}.

``c`` is the largest level such that, for every x in T,

1. every safety row holds (state limits and extra constraints),
2. the backup's unsaturated input stays inside the input limits, and
3. T is invariant under the backup: V(f(x, pi_b(x))) <= c.

How each level is found
-----------------------
* A row that is affine in x once ``u = u_eq - K (x - x_eq)`` is substituted
  (every state and input limit; affine extra constraints) gives the exact
  level ``c_i = h(x_eq)^2 / (a^T P^-1 a)``, where ``h(x) = a^T (x - x_eq) + h(x_eq)``.
* For a plant whose dynamics are affine, P solves the Riccati equation of the
  very map that is simulated, so ``V(f(x)) - V(x) = -dx^T (Q + K^T R K) dx < 0``
  and invariance holds at every level: nothing to compute.
* A non-affine row, and invariance of a non-affine plant (through the
  sufficient decrease condition ``V(f(x)) < V(x)`` on T minus x_eq), use a
  *ray search*: x = x_eq + s L^-T z with P = L L^T and |z| = 1 (so V = s^2);
  along ``DIRECTIONS_2D`` evenly spaced directions in 2-D, or ``DIRECTIONS_ND``
  seeded random directions plus the coordinate axes otherwise, the first s at
  which the row is violated is bracketed on a grid and bisected; then an NLP
  (IPOPT) started from the best rays minimises s^2 subject to the violation.
  The level is the smallest s^2 found, times ``SAMPLED_LEVEL_FACTOR``.

Limits: the ray search and the NLP are local; a violation that hides between
rays and that the NLP does not reach would be missed, and a row with a
violation region thinner than the grid spacing could be stepped over. The
factor 0.98 is a margin, not a proof. The method used for each level is
recorded in :class:`TargetSet.levels` so that reports can say which levels
are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import casadi as ca
import numpy as np

from ..plant.model import PlantModel
from .lqr import LqrBackup

DIRECTIONS_2D = 1440
DIRECTIONS_ND = 4000
RADIAL_POINTS = 64
BISECTION_STEPS = 50
NLP_STARTS = 6
SAMPLED_LEVEL_FACTOR = 0.98
UNBOUNDED_LEVEL_CAP = 1e8


@dataclass(frozen=True)
class LevelLimit:
    """The largest level one requirement allows.

    Attributes
    ----------
    name : str
        Row name (``p.max``, ``a.min``, an extra constraint) or ``invariance``.
    level : float
        Largest c for which the requirement holds on T (``inf`` if it holds at
        every level, or, for a searched row, if no violation was found below
        ``searched_up_to``).
    method : {'exact', 'ray-search+nlp', 'lyapunov'}
    searched_up_to : float
        For a searched row, the level the search covered (the smallest exact
        level, which caps c anyway); ``nan`` otherwise.
    """

    name: str
    level: float
    method: str
    searched_up_to: float = math.nan


@dataclass(frozen=True)
class TargetSet:
    """``T = {x : (x - x_eq)^T P (x - x_eq) <= c}``.

    Attributes
    ----------
    P : ndarray, shape (nx, nx)
    x_eq : ndarray, shape (nx,)
    c : float
        The level (dimensionless: V has the units of P times state units squared).
    binding : str
        Name of the requirement that sets c.
    levels : tuple of LevelLimit
        The level each requirement allows, and how it was found.
    exact : bool
        True when every level was computed exactly (no sampling involved).
    """

    P: np.ndarray
    x_eq: np.ndarray
    c: float
    binding: str
    levels: tuple
    exact: bool

    def value(self, x: np.ndarray) -> np.ndarray:
        """V(x) for states ``x (..., nx)``; returns shape ``(...)``."""
        dx = np.asarray(x, dtype=float) - self.x_eq
        return np.einsum("...i,ij,...j->...", dx, self.P, dx)

    def sample(self, count: int, rng: np.random.Generator, level: float | None = None, surface: bool = False) -> np.ndarray:
        """Uniform points in (or on the surface of) ``{V <= level}``, shape ``(count, nx)``."""
        level = self.c if level is None else level
        nx = self.P.shape[0]
        z = rng.standard_normal((count, nx))
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        radius = np.ones(count) if surface else rng.random(count) ** (1.0 / nx)
        return self.x_eq + math.sqrt(level) * _to_state(self.P, z * radius[:, None])


def _to_state(P: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Map unit-ball coordinates ``z (N, nx)`` to ``dx`` with ``dx^T P dx = |z|^2``."""
    L = np.linalg.cholesky(P)
    return np.linalg.solve(L.T, z.T).T


def compute_target_set(model: PlantModel, backup: LqrBackup, seed: int = 0) -> TargetSet:
    """Compute the level c of the backup's target set (see the module docstring)."""
    nx = model.nx
    P, x_eq = backup.P, backup.x_eq
    x = ca.SX.sym("x", nx)
    u_lin = backup.control_unsaturated(x)
    rows_expr = ca.vertcat(model.g(x, u_lin), model.g_input(x, u_lin))
    names = [row.name for row in model.rows] + [row.name for row in model.input_rows]
    J = ca.jacobian(rows_expr, x)
    affine = [not ca.depends_on(J[i, :], x) for i in range(len(names))]
    row_fn = ca.Function("rows", [x], [rows_expr, J])
    h0, grad = (np.array(M, dtype=float) for M in row_fn(x_eq))
    h0 = h0.ravel()
    P_inv = np.linalg.inv(P)

    limits: list[LevelLimit] = []
    for i, name in enumerate(names):
        if affine[i]:
            a = grad[i]
            denominator = float(a @ P_inv @ a)
            level = h0[i] ** 2 / denominator if denominator > 0 else math.inf
            limits.append(LevelLimit(name, level, "exact"))
    exact_cap = min((limit.level for limit in limits), default=math.inf)
    cap = exact_cap if math.isfinite(exact_cap) else UNBOUNDED_LEVEL_CAP

    rng = np.random.default_rng(seed)
    directions = _directions(nx, rng)
    for i, name in enumerate(names):
        if not affine[i]:
            violation = ca.Function("violation", [x], [rows_expr[i]])
            level = _ray_level(violation, P, x_eq, directions, cap)
            limits.append(LevelLimit(name, level * SAMPLED_LEVEL_FACTOR, "ray-search+nlp", cap))
    if model.dynamics_affine:
        limits.append(LevelLimit("invariance", math.inf, "lyapunov"))
    else:
        dx = x - ca.DM(x_eq)
        x_next = model.f(x, u_lin) - ca.DM(x_eq)
        decrease = ca.mtimes([x_next.T, ca.DM(P), x_next]) - ca.mtimes([dx.T, ca.DM(P), dx])
        # Strict decrease with a small relative margin keeps the condition away from x_eq itself.
        violation = ca.Function("invariance", [x], [decrease + 1e-9 * ca.mtimes([dx.T, ca.DM(P), dx])])
        level = _ray_level(violation, P, x_eq, directions, cap)
        limits.append(LevelLimit("invariance", level * SAMPLED_LEVEL_FACTOR, "ray-search+nlp", cap))

    binding = min(limits, key=lambda limit: limit.level)
    c = binding.level
    if not math.isfinite(c):
        c = UNBOUNDED_LEVEL_CAP
    exact = binding.method != "ray-search+nlp"
    return TargetSet(P=P, x_eq=x_eq, c=float(c), binding=binding.name, levels=tuple(limits), exact=exact)


def _directions(nx: int, rng: np.random.Generator) -> np.ndarray:
    """Unit directions in z-space, shape ``(N, nx)``."""
    if nx == 1:
        return np.array([[1.0], [-1.0]])
    if nx == 2:
        angles = np.linspace(0.0, 2 * np.pi, DIRECTIONS_2D, endpoint=False)
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    z = rng.standard_normal((DIRECTIONS_ND, nx))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return np.vstack([np.eye(nx), -np.eye(nx), z])


def _ray_level(violation: ca.Function, P: np.ndarray, x_eq: np.ndarray, directions: np.ndarray, cap: float) -> float:
    """Smallest V at which ``violation(x) >= 0`` (or is not finite), searched along rays.

    Returns ``inf`` when no violation is found up to ``cap``.
    """
    nx = P.shape[0]
    n_dir = directions.shape[0]
    s_max = math.sqrt(cap)
    s_grid = s_max * np.arange(1, RADIAL_POINTS + 1) / RADIAL_POINTS
    dx_unit = _to_state(P, directions)  # (N, nx), V = 1
    evaluate = violation.map(n_dir * RADIAL_POINTS)
    points = x_eq[None, None, :] + s_grid[None, :, None] * dx_unit[:, None, :]  # (N, M, nx)
    values = np.array(evaluate(points.reshape(-1, nx).T), dtype=float).reshape(n_dir, RADIAL_POINTS)
    bad = ~(values < 0.0)
    crossing = bad.any(axis=1)
    if not crossing.any():
        return math.inf
    else:
        first = bad.argmax(axis=1)[crossing]
        lo = np.where(first > 0, s_grid[np.maximum(first - 1, 0)], 0.0)
        hi = s_grid[first]
        units = dx_unit[crossing]
        evaluate_rays = violation.map(units.shape[0])
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            v = np.array(evaluate_rays((x_eq + mid[:, None] * units).T), dtype=float).ravel()
            is_bad = ~(v < 0.0)
            hi = np.where(is_bad, mid, hi)
            lo = np.where(is_bad, lo, mid)
        best = float(hi.min() ** 2)
        order = np.argsort(hi)[:NLP_STARTS]
        for start in order:
            refined = _nlp_polish(violation, P, x_eq, directions[crossing][start], float(hi[start]))
            if refined is not None:
                best = min(best, refined)
    return best


def _nlp_polish(violation: ca.Function, P: np.ndarray, x_eq: np.ndarray, z0: np.ndarray, s0: float) -> float | None:
    """Locally minimise s^2 subject to violation(x_eq + s L^-T z) >= 0, |z| = 1; None if it fails."""
    nx = P.shape[0]
    L_inv_T = np.linalg.inv(np.linalg.cholesky(P)).T
    w = ca.SX.sym("w", nx + 1)
    z, s = w[:nx], w[nx]
    x = ca.DM(x_eq) + s * ca.mtimes(ca.DM(L_inv_T), z)
    nlp = {"x": w, "f": s**2, "g": ca.vertcat(violation(x), ca.dot(z, z))}
    options = {"ipopt.print_level": 0, "print_time": False, "ipopt.sb": "yes", "ipopt.max_iter": 200}
    try:
        solver = ca.nlpsol("polish", "ipopt", nlp, options)
        result = solver(x0=np.append(z0, s0), lbg=[0.0, 1.0], ubg=[np.inf, 1.0], lbx=[-2.0] * nx + [0.05 * s0], ubx=[2.0] * nx + [s0])
    except RuntimeError:
        return None
    w_opt = np.array(result["x"], dtype=float).ravel()
    z_opt = w_opt[:nx] / np.linalg.norm(w_opt[:nx])
    s_opt = w_opt[nx]
    # Trust only what the row itself confirms at the normalised point.
    value = float(violation(x_eq + s_opt * (L_inv_T @ z_opt)))
    if value >= 0.0 or not math.isfinite(value):
        return float(s_opt**2)
    return None
