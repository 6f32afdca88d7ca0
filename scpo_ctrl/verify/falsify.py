"""Falsification: search the initial box for the state whose closed loop comes closest to (or past) a limit.

Multi-start local optimisation: for each safety row, and for the reach
condition ``V(x_H)/c <= 1``, maximise ``max_t g_i(x_t(x0))`` over the initial
box with L-BFGS-B, the gradient of the active step's row from CasADi AD
through the float64 rollout of the reference law. Starts: the worst states
the Monte Carlo found for that row, plus seeded uniform points. The best state
found is then replayed with the compiled C in the loop by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np
from scipy.optimize import minimize

from ..plant.model import PlantModel
from ..policy.residual import ResidualPolicy
from ..sim.rollout import RolloutEngine

REACH = "target.reach"


@dataclass(frozen=True)
class SearchResult:
    """The worst initial state found for one row.

    Attributes
    ----------
    row : str
    x0 : ndarray, shape (nx,)
    value : float
        max over steps of the row at x0 (> 0: a violation) in the float64 reference closed loop;
        for the reach row ``V(x_H)/c - 1``.
    step : int
        The step where the maximum occurs.
    evaluations : int
    """

    row: str
    x0: np.ndarray
    value: float
    step: int
    evaluations: int


class _Rollout:
    """``x0 -> (rows (ng, H+1), V(x_H)/c - 1)`` and their Jacobians, from the reference policy."""

    def __init__(self, model: PlantModel, policy: ResidualPolicy, theta: np.ndarray, horizon: int):
        engine = RolloutEngine(model, policy.function(ca.SX), horizon, jit=False)
        x0, theta_mx, X, _, G = engine.symbolic()
        dx = X[:, -1] - ca.DM(policy.x_eq)
        reach = ca.mtimes([dx.T, ca.DM(policy.P), dx]) / policy.c - 1.0
        outputs = ca.vertcat(ca.vec(G.T), reach)  # row-major by row: (ng * (H+1) + 1)
        self.ng, self.H1 = G.shape[0], G.shape[1]
        function = ca.Function("falsify", [x0, theta_mx], [outputs, ca.jacobian(outputs, x0)])
        self.function = function
        self.theta = np.asarray(theta, dtype=float)

    def __call__(self, x0: np.ndarray) -> tuple:
        values, jacobian = self.function(x0, self.theta)
        values = np.array(values, dtype=float).ravel()
        jacobian = np.array(jacobian, dtype=float)
        values = np.where(np.isfinite(values), values, 1e12)
        return values, jacobian


def search(model: PlantModel, policy: ResidualPolicy, theta: np.ndarray, horizon: int, box: np.ndarray,
           starts_per_row: dict, *, random_starts: int, seed: int, max_iterations: int) -> list:
    """Worst initial state per row (plant rows, then the reach row).

    Parameters
    ----------
    box : ndarray, shape (nx, 2)
        The initial box [lower, upper] per state.
    starts_per_row : dict
        Row name -> initial states ``(k, nx)`` to start from (e.g. the Monte Carlo's worst).
    random_starts : int
        Seeded uniform starts per row, on top of ``starts_per_row`` (``verify``'s: the campaign file's).
    seed : int
    max_iterations : int
        L-BFGS-B iterations per start.
    """
    rollout = _Rollout(model, policy, theta, horizon)
    rng = np.random.default_rng(seed)
    names = [row.name for row in model.rows] + [REACH]
    results = []
    for index, name in enumerate(names):
        starts = [np.atleast_2d(starts_per_row.get(name, np.zeros((0, model.nx))))]
        starts.append(rng.uniform(box[:, 0], box[:, 1], size=(random_starts, model.nx)))
        best, evaluations = None, 0
        for x_start in np.concatenate(starts):
            counter = [0]

            def objective(x0: np.ndarray, row: int = index) -> tuple:
                counter[0] += 1
                values, jacobian = rollout(x0)
                if row < rollout.ng:
                    block = values[row * rollout.H1:(row + 1) * rollout.H1]
                    step = int(np.argmax(block))
                    return -float(block[step]), -jacobian[row * rollout.H1 + step]
                return -float(values[-1]), -jacobian[-1]

            solution = minimize(objective, x_start, jac=True, method="L-BFGS-B", bounds=[tuple(b) for b in box],
                                options={"maxiter": max_iterations})
            evaluations += counter[0]
            x0 = np.clip(solution.x, box[:, 0], box[:, 1])
            value = -objective(x0)[0]
            if best is None or value > best[1]:
                best = (x0, value)
        values, _ = rollout(best[0])
        step = horizon if index == rollout.ng else int(np.argmax(values[index * rollout.H1:(index + 1) * rollout.H1]))
        results.append(SearchResult(row=name, x0=best[0], value=float(best[1]), step=step, evaluations=evaluations))
    return results
