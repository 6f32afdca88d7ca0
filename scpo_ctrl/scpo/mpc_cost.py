"""The closed-loop cost task when the backup is an MPC: exact value, gradient through a local model of the MPC.

The value comes from the C rollouts (the MPC solved at every step). The
gradient in theta is the chain rule through the rollout with the MPC's input
replaced, along the simulated trajectory, by its first-order model

    u_b(x) ~= u_b,k + J_k (x - xbar_k),

J_k from forward differences of warm-started MPC re-solves (the C rollout
returns them; 1 + nx solves per step). acados' own parametric sensitivity
would cost one solve per step, but it was measured 0.4 % to 5 % off the
finite-difference slope of the loss where constraints are active (its
Hessian is projected to positive definite), against 0.1 % here. At the current theta the model's trajectory is the simulated
one (x_k = xbar_k), so the value is exact and the gradient is exact up to
J_k. SCPO needs the loss gradient only to propose steps; safety is never
judged from it.
"""

from __future__ import annotations

import casadi as ca
import numpy as np

from ..jit import compile_function
from ..policy.residual import ResidualPolicy
from ..sim.mpc_rollout import MpcRolloutEngine


class MpcCostLoops:
    """The closed loops of the cost from any initial states: trajectories, and per-start value and gradient.

    Each start's results depend on that start alone (every MPC closed loop starts from the same cold guess, see
    :mod:`~scpo_ctrl.sim.mpc_rollout`, and the gradient is one evaluation per start), so the starts can be split
    into blocks anywhere (:class:`~scpo_ctrl.scpo.bank.DistributedCostLoops`) with bit-identical results.

    Parameters
    ----------
    engine : MpcRolloutEngine
        Runs the policy's law on top of the MPC.
    policy : ResidualPolicy
    Q, R : ndarray, shapes (nx, nx), (nu, nu)
        The task's weights.
    jit : bool
    """

    def __init__(self, engine: MpcRolloutEngine, policy: ResidualPolicy, Q: np.ndarray, R: np.ndarray, jit: bool):
        self.engine = engine
        self.policy = policy
        self.Q, self.R = np.asarray(Q, dtype=float), np.asarray(R, dtype=float)
        self._maps: dict[int, ca.Function] = {}
        self._single = self._build_single(jit)

    def _build_single(self, jit: bool) -> ca.Function:
        model = self.engine.model
        nx, nu, H, d = model.nx, model.nu, self.engine.horizon, self.policy.n_theta
        law = self.policy.function_on_backup(ca.SX)
        x, theta = ca.SX.sym("x", nx), ca.SX.sym("theta", d)
        u_k, j_k, xbar_k = ca.SX.sym("u_backup", nu), ca.SX.sym("jacobian", nu * nx), ca.SX.sym("xbar", nx)
        u = law(x, theta, u_k + ca.mtimes(ca.reshape(j_k, nu, nx), x - xbar_k))
        step = ca.Function("step", [x, theta, u_k, j_k, xbar_k], [model.f(x, u), u])
        x0, th = ca.MX.sym("x0", nx), ca.MX.sym("theta", d)
        UB, JB, XB = ca.MX.sym("UB", nu, H + 1), ca.MX.sym("JB", nu * nx, H + 1), ca.MX.sym("XB", nx, H + 1)
        X, U = step.mapaccum("accumulate", H)(x0, ca.repmat(th, 1, H), UB[:, :H], JB[:, :H], XB[:, :H])
        _, u_last = step(X[:, -1], th, UB[:, H], JB[:, H], XB[:, H])
        X, U = ca.horzcat(x0, X), ca.horzcat(U, u_last)
        dX = X - ca.repmat(ca.DM(self.policy.x_eq), 1, H + 1)
        dU = U - ca.repmat(ca.DM(self.policy.u_eq), 1, H + 1)
        cost = (ca.sum2(ca.sum1(dX * ca.mtimes(ca.DM(self.Q), dX)))
                + ca.sum2(ca.sum1(dU * ca.mtimes(ca.DM(self.R), dU)))) / (H + 1)
        function, _ = compile_function("mpc_cost", [x0, th, UB, JB, XB], [cost, ca.gradient(cost, th)],
                                       ["x0", "theta", "UB", "JB", "XB"], ["J", "grad"], jit)
        return function

    def trajectories(self, theta: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The C rollouts with ``theta (d,)`` from ``starts (S, nx)``: ``X (S, H+1, nx)``, ``U (S, H+1, nu)``."""
        rollouts = self.engine.rollout(starts, np.asarray(theta)[None, :]).rollouts
        return rollouts.x, rollouts.u

    def per_start(self, theta: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each start's ``J_s`` and ``grad J_s`` at ``theta (d,)``: shapes ``(S,)`` and ``(d, S)``."""
        result = self.engine.rollout(starts, np.asarray(theta)[None, :], jacobian=True)
        S, H1 = starts.shape[0], self.engine.horizon + 1
        nx, nu = self.engine.model.nx, self.engine.model.nu
        # column-major vec of each step's (nu, nx) Jacobian, as ca.reshape reads it
        JB = result.jacobian.transpose(0, 1, 3, 2).reshape(S, H1, nu * nx)
        if S not in self._maps:
            self._maps[S] = self._single.map(S, "thread", self.engine.threads)
        stacked = [np.concatenate(list(array), axis=1) for array in (
            result.u_backup.transpose(0, 2, 1), JB.transpose(0, 2, 1), result.rollouts.x.transpose(0, 2, 1))]
        J, g = self._maps[S](starts.T, theta, *stacked)
        return np.array(J).ravel(), np.array(g)


class MpcClosedLoopCost:
    """``L(theta) = mean over starts of (1 / (H+1)) sum_k (dx_k^T Q dx_k + du_k^T R du_k)``.

    Parameters
    ----------
    loops : MpcCostLoops or DistributedCostLoops
        Runs the closed loops (``trajectories`` and ``per_start``), in this process or in blocks of starts on an
        executor: the same numbers either way.
    policy : ResidualPolicy
    Q, R : ndarray, shapes (nx, nx), (nu, nu)
        The task's weights.
    starts : ndarray, shape (S, nx)
        The initial states the cost is averaged over.
    """

    def __init__(self, loops, policy: ResidualPolicy, Q: np.ndarray, R: np.ndarray, starts: np.ndarray):
        self.loops = loops
        self.policy = policy
        self.Q, self.R = np.asarray(Q, dtype=float), np.asarray(R, dtype=float)
        self.starts = np.asarray(starts, dtype=float)

    def _cost(self, X: np.ndarray, U: np.ndarray) -> np.ndarray:
        """Per-start cost from trajectories ``X (S, H+1, nx)``, ``U (S, H+1, nu)``: shape ``(S,)``."""
        dX, dU = X - self.policy.x_eq, U - self.policy.u_eq
        per_step = np.einsum("skn,nm,skm->sk", dX, self.Q, dX) + np.einsum("skn,nm,skm->sk", dU, self.R, dU)
        return per_step.mean(axis=1)

    def value(self, theta: np.ndarray) -> float:
        """The loss at ``theta`` from the C rollouts."""
        return float(self._cost(*self.loops.trajectories(theta, self.starts)).mean())

    def weighted(self, theta: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(sum_s W[s, p] J_s, sum_s W[s, p] grad J_s)`` for every column p of ``W (S, P)``:
        values ``(P,)`` and gradients ``(d, P)``."""
        values, gradients = self.loops.per_start(theta, self.starts)  # (S,), (d, S)
        return W.T @ values, gradients @ W
