"""A plain per-initial-state, per-step loop: the reference the batched engine is tested and benchmarked against.

Deliberately naive (one CasADi call per step and initial state); never used in
a hot path.
"""

from __future__ import annotations

import casadi as ca
import numpy as np

from ..plant.model import PlantModel
from .rollout import Rollouts


def reference_rollouts(model: PlantModel, policy: ca.Function, x0: np.ndarray, horizon: int,
                       theta: np.ndarray | None = None) -> Rollouts:
    """Same outputs as :meth:`RolloutEngine.simulate`, computed one step at a time."""
    x0 = np.atleast_2d(np.asarray(x0, dtype=float))
    theta = np.zeros(policy.size1_in(1)) if theta is None else np.asarray(theta, dtype=float)
    batch = x0.shape[0]
    ng = model.g.size1_out(0)
    X = np.zeros((batch, horizon + 1, model.nx))
    U = np.zeros((batch, horizon + 1, model.nu))
    G = np.zeros((batch, horizon + 1, ng))
    xs = ca.SX.sym("x", model.nx)
    ths = ca.SX.sym("theta", policy.size1_in(1))
    us = policy(xs, ths)
    step = ca.Function("reference_step", [xs, ths], [us, model.g(xs, us), model.f(xs, us)])
    for b in range(batch):
        x = x0[b]
        th = ca.DM(theta if theta.ndim == 1 else theta[b])  # converted once, not per step
        for t in range(horizon + 1):
            u, g, x_next = step(x, th)
            X[b, t], U[b, t], G[b, t] = x, np.asarray(u).ravel(), np.asarray(g).ravel()
            x = np.asarray(x_next).ravel()
    return Rollouts(x=X, u=U, g=G)
