"""Closed loops with any controller in them (the compiled C, the Python reference) and their safety rows.

The plant is the CasADi model in float64 (one ``map`` call per step for the
whole batch); the controller is a callable on a batch of states, so the
compiled float32 C runs in the loop exactly as deployed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..plant.model import PlantModel, evaluate_rows


@dataclass(frozen=True)
class ClosedLoopBatch:
    """Trajectories and their safety rows.

    Attributes
    ----------
    x : ndarray, shape (N, H+1, nx)
    u : ndarray, shape (N, H+1, nu)
    g : ndarray, shape (N, H+1, ng)
        The plant's safety rows (state limits, extra constraints) at each step; <= 0 safe.
    g_input : ndarray, shape (N, H+1, n_input_rows)
    level : ndarray, shape (N, H+1)
        V(x_t) / c.
    row_names : tuple of str
    input_row_names : tuple of str
    """

    x: np.ndarray
    u: np.ndarray
    g: np.ndarray
    g_input: np.ndarray
    level: np.ndarray
    row_names: tuple
    input_row_names: tuple

    def worst_per_row(self) -> np.ndarray:
        """Max over states and steps of each safety row, shape (ng,)."""
        return self.g.max(axis=(0, 1)) if self.g.shape[2] else np.zeros(0)

    def violating(self) -> np.ndarray:
        """Per trajectory: does any safety row exceed 0 at any step? shape (N,)."""
        bad = np.any(self.g > 0, axis=(1, 2)) if self.g.shape[2] else np.zeros(len(self.x), dtype=bool)
        return bad | ~np.all(np.isfinite(self.x), axis=(1, 2))

    def reached(self) -> np.ndarray:
        """Per trajectory: is x_H in the target set (V/c <= 1)? shape (N,)."""
        return self.level[:, -1] <= 1.0


def simulate(model: PlantModel, controller: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, horizon: int,
             P: np.ndarray, c: float, x_eq: np.ndarray, rows: bool = True) -> ClosedLoopBatch:
    """Run ``x+ = f(x, controller(x))`` from every row of ``x0 (N, nx)`` for ``horizon`` steps.

    ``rows=False`` skips evaluating the safety rows (``g`` and ``g_input`` are then empty).
    """
    x0 = np.atleast_2d(np.asarray(x0, dtype=float))
    N, nx, nu = len(x0), model.nx, model.nu
    step = model.f.map(N)
    X = np.empty((N, horizon + 1, nx))
    U = np.empty((N, horizon + 1, nu))
    X[:, 0] = x0
    for t in range(horizon + 1):
        U[:, t] = controller(X[:, t])
        if t < horizon:
            X[:, t + 1] = np.array(step(X[:, t].T, U[:, t].T)).T
    flat_x, flat_u = X.reshape(-1, nx), U.reshape(-1, nu)
    if rows:
        G = evaluate_rows(model.g, flat_x, flat_u).reshape(N, horizon + 1, -1)
        G_in = evaluate_rows(model.g_input, flat_x, flat_u).reshape(N, horizon + 1, -1)
    else:
        G, G_in = np.zeros((N, horizon + 1, 0)), np.zeros((N, horizon + 1, 0))
    G = np.where(np.isfinite(G), G, np.inf)
    d = X - x_eq
    level = np.einsum("nti,ij,ntj->nt", d, P, d) / c
    level = np.where(np.isfinite(level), level, np.inf)
    return ClosedLoopBatch(x=X, u=U, g=G, g_input=G_in, level=level,
                           row_names=tuple(row.name for row in model.rows),
                           input_row_names=tuple(row.name for row in model.input_rows))

