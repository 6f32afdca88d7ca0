"""Batched closed-loop rollouts of a policy ``u = pi(x, theta)`` on a plant.

One rollout is one CasADi function: the closed-loop step (SX) accumulated over
the horizon with ``mapaccum``, then mapped over the batch of initial states
(and parameter vectors) with threads. It is JIT-compiled to C with the system
compiler when one is available (about 0.5 to 1 s once per engine); otherwise
CasADi's virtual machine evaluates it. Either way a batch is one call: there
is no Python loop over time steps or initial states.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import casadi as ca
import numpy as np

from ..jit import compile_function, compiler_available
from ..plant.model import PlantModel

log = logging.getLogger(__name__)

REACH_ROW = "target.reach"


@dataclass(frozen=True)
class Rollouts:
    """Closed-loop trajectories of a batch.

    Attributes
    ----------
    x : ndarray, shape (B, H+1, nx)
        States, x[:, 0] the initial states [state units].
    u : ndarray, shape (B, H+1, nu)
        Inputs applied at each state (u[:, H] is what the policy would apply at x_H).
    g : ndarray, shape (B, H+1, ng)
        Safety-row values at each step (<= 0 safe), rows as in ``PlantModel.rows``.
    """

    x: np.ndarray
    u: np.ndarray
    g: np.ndarray


@dataclass(frozen=True)
class SafetyEvaluation:
    """The safety metrics of a batch, one row per constraint and initial state.

    Attributes
    ----------
    names : tuple of str
        Row names: the plant's safety rows, then ``target.reach``.
    g : ndarray, shape (B, len(names))
        Max over the horizon of each safety row, and V(x_H) - c for reaching
        the target set. Non-finite values count as +inf. Safe where <= 0.
    """

    names: tuple
    g: np.ndarray

    @property
    def worst(self) -> np.ndarray:
        """Worst value per row over the batch, shape ``(len(names),)``."""
        return self.g.max(axis=0)

    @property
    def safe(self) -> bool:
        return bool(np.all(self.g <= 0.0))

    def violating_states(self) -> np.ndarray:
        """Per row, how many initial states violate it, shape ``(len(names),)``."""
        return (self.g > 0.0).sum(axis=0)


def default_threads() -> int:
    """Threads for batched evaluation: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class RolloutEngine:
    """Simulates ``x+ = f(x, pi(x, theta))`` from many initial states at once.

    Parameters
    ----------
    model : PlantModel
    policy : casadi.Function
        ``(x (nx,), theta (d,)) -> u (nu,)``.
    horizon : int
        Number of steps H.
    jit : bool or None
        Compile to C (None: when gcc is available).
    threads : int or None
        Threads for the batch map (None: the usable cores).
    """

    def __init__(self, model: PlantModel, policy: ca.Function, horizon: int, jit: bool | None = None,
                 threads: int | None = None):
        self.model = model
        self.policy = policy
        self.horizon = int(horizon)
        self.n_theta = policy.size1_in(1)
        self.threads = threads or default_threads()
        self.jit = compiler_available() if jit is None else jit
        self._single, self.jit = self._build_single()
        self._mapped: dict[int, ca.Function] = {}
        self._metrics: ca.Function | None = None
        self._metrics_maps: dict[tuple, ca.Function] = {}

    def symbolic(self):
        """The rollout from one initial state as MX: inputs (x0, theta), outputs X (nx, H+1), U (nu, H+1), G (ng, H+1)."""
        nx = self.model.nx
        # An MX policy keeps its matrix products (compact code that compiles in a second at any
        # width); an SX policy is unrolled into scalar operations (fastest for small laws).
        symbolic = ca.MX if self.policy.is_a("MXFunction") else ca.SX
        x = symbolic.sym("x", nx)
        theta = symbolic.sym("theta", self.n_theta)
        u = self.policy(x, theta)
        step = ca.Function("step", [x, theta], [self.model.f(x, u), u, self.model.g(x, u)])
        accumulate = step.mapaccum("accumulate", self.horizon)
        x0 = ca.MX.sym("x0", nx)
        theta_mx = ca.MX.sym("theta", self.n_theta)
        X, U, G = accumulate(x0, ca.repmat(theta_mx, 1, self.horizon))
        x_last = X[:, -1]
        u_last = self.policy(x_last, theta_mx)
        return x0, theta_mx, ca.horzcat(x0, X), ca.horzcat(U, u_last), ca.horzcat(G, self.model.g(x_last, u_last))

    def _build_single(self) -> tuple[ca.Function, bool]:
        x0, theta, X, U, G = self.symbolic()
        return compile_function("rollout", [x0, theta], [X, U, G], ["x0", "theta"], ["X", "U", "G"], self.jit)

    def _build_metrics(self) -> ca.Function:
        """``(x0, theta) -> (safety rows at every step (ng, H+1), states (nx, H+1))``."""
        x0, theta, X, _, G = self.symbolic()
        function, _ = compile_function("metrics", [x0, theta], [G, X], ["x0", "theta"], ["G", "X"], self.jit)
        return function

    def metrics_batch(self, x0: np.ndarray, thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every parameter vector and initial state: safety rows and states at every step.

        Parameters
        ----------
        x0 : ndarray, shape (N, nx)
        thetas : ndarray, shape (n, d)

        Returns
        -------
        g : ndarray, shape (n, N, H+1, ng)
            Each safety row at each step (non-finite -> +inf).
        x : ndarray, shape (n, N, H+1, nx)
            The states, ``x[:, :, 0]`` the initial ones.

        The candidates and the initial states are two nested maps of one
        compiled function; inputs are not repeated, so the call moves only
        ``n d + N nx`` numbers in.
        """
        x0 = np.atleast_2d(np.asarray(x0, dtype=float))
        thetas = np.atleast_2d(np.asarray(thetas, dtype=float))
        N, n = x0.shape[0], thetas.shape[0]
        if self._metrics is None:
            self._metrics = self._build_metrics()
        key = (N, n)
        if key not in self._metrics_maps:
            # Threads over the candidates, not the states: a threaded map with a broadcast
            # (reduced) input measured 2-3x slower than a serial one here.
            inner = self._metrics.map("states", "serial", N, [1], [])
            parallel = "thread" if self.threads > 1 and n > 1 else "serial"
            self._metrics_maps[key] = inner.map("candidates", parallel, n, [0], [])
        G, X = self._metrics_maps[key](x0.T, thetas.T)
        ng = self.model.g.size1_out(0)
        G = np.array(G, dtype=float).reshape(ng, n, N, self.horizon + 1).transpose(1, 2, 3, 0)
        X = np.array(X, dtype=float).reshape(self.model.nx, n, N, self.horizon + 1).transpose(1, 2, 3, 0)
        return np.where(np.isfinite(G), G, np.inf), X

    def _batched(self, batch: int) -> ca.Function:
        if batch not in self._mapped:
            mode = "thread" if self.threads > 1 and batch > 1 else "serial"
            self._mapped[batch] = self._single.map(batch, mode, min(self.threads, batch))
        return self._mapped[batch]

    def simulate(self, x0: np.ndarray, theta: np.ndarray | None = None) -> Rollouts:
        """Roll out from ``x0 (B, nx)``.

        ``theta`` is one parameter vector ``(d,)`` shared by the batch, or one
        per initial state ``(B, d)``.
        """
        x0 = np.atleast_2d(np.asarray(x0, dtype=float))
        batch = x0.shape[0]
        theta = np.zeros(self.n_theta) if theta is None else np.asarray(theta, dtype=float)
        if theta.ndim == 1:
            theta_arg = theta.reshape(-1, 1)
        else:
            if theta.shape[0] != batch:
                raise ValueError(f"theta has {theta.shape[0]} rows for {batch} initial states")
            theta_arg = theta.T
        X, U, G = self._batched(batch)(x0.T, theta_arg)
        H1 = self.horizon + 1
        return Rollouts(
            x=_unstack(X, batch, H1),
            u=_unstack(U, batch, H1),
            g=_unstack(G, batch, H1),
        )

    def evaluate(self, x0: np.ndarray, level: float, P: np.ndarray, x_eq: np.ndarray,
                 theta: np.ndarray | None = None) -> tuple[Rollouts, SafetyEvaluation]:
        """Roll out and compute the safety metrics (reach row with the target set ``{V <= level}``)."""
        rollouts = self.simulate(x0, theta)
        return rollouts, safety_metrics(self.model, rollouts, level, P, x_eq)


def safety_metrics(model: PlantModel, rollouts: Rollouts, level: float, P: np.ndarray, x_eq: np.ndarray) -> SafetyEvaluation:
    """Max over the horizon of every safety row, and ``V(x_H) - level``."""
    g = rollouts.g
    g = np.where(np.isfinite(g), g, np.inf)
    path = g.max(axis=1) if g.shape[2] else np.zeros((g.shape[0], 0))
    dx = rollouts.x[:, -1, :] - x_eq
    reach = np.einsum("bi,ij,bj->b", dx, P, dx) - level
    reach = np.where(np.isfinite(reach), reach, np.inf)
    names = tuple(row.name for row in model.rows) + (REACH_ROW,)
    return SafetyEvaluation(names=names, g=np.column_stack([path, reach]))


def _unstack(M, batch: int, steps: int) -> np.ndarray:
    """CasADi's ``(n, steps * batch)`` map output as ``(batch, steps, n)``."""
    array = np.array(M, dtype=float)
    n = array.shape[0]
    return array.reshape(n, batch, steps).transpose(1, 2, 0)
