"""SCPO on a plant: the residual policy's loss and its black-box safety metrics (SCPO.md section 3).

Constraint rows: for every validation initial state, each state limit and
extra constraint at every step of the horizon (one smooth row per step: a
max over time would have kinks where the argmax moves, and the curvature
estimate would explode there, SCPO.md section 6), the decay envelope
``V(x_k) - max(reach_level c, beta gamma^k V(x_0))`` at every step
(:mod:`~scpo_ctrl.backup.envelope`), then the final-step row
``V(x_H) - reach_level c`` (reach the target set). Rows of one constraint
form a group (reported together). Each row carries a margin: SCPO accepts an
iterate only with ``g <= -margin`` (see :class:`RowSettings`).

Loss states (imitation)
-----------------------
For an expert given as a law (expressions or a gain), the loss is the mean
over ``LOSS_STATES`` states of ``|(pi_theta(x) - sat(expert(x))) / u_scale|^2``.
The states are drawn (seeded) from the backup's closed-loop trajectories
started at ``TRAINING_STARTS`` low-discrepancy points of the validation box
(seed + 1, so not the validation points themselves), keeping only states
outside the target set: there the gate lets the residual act (inside it the
policy is the backup by construction, whatever theta). For an expert given as data, the loss is
taken on the data's states and inputs. The closed-loop cost task averages
``(dx^T Q dx + du^T R du)`` over the horizon and ``TRAINING_STARTS`` initial
states (gradient by CasADi AD through the rollout).
"""

from __future__ import annotations

import casadi as ca
import numpy as np
from scipy.stats import qmc

from dataclasses import dataclass

from ..backup.envelope import DecayEnvelope, contraction_rate, derive_envelope
from ..jit import compile_function, compiler_available
from ..policy.expert import expert_function
from ..policy.mlp import MlpLayout
from ..policy.residual import DEFAULT_GATE_RATIO, ResidualPolicy
from ..problem import ControlProblem
from ..errors import ScpoError
from ..sim.rollout import REACH_ROW
from .mpc_cost import MpcClosedLoopCost, MpcCostLoops

LOSS_STATES = 2048
TRAINING_STARTS = 256
COST_STARTS = 64
MAX_PIECES = 16
ENVELOPE_ROW = "target.envelope"


@dataclass(frozen=True)
class RowSettings:
    """Which closed-loop rows SCPO keeps, and their margins.

    Attributes
    ----------
    envelope : bool
        The decay envelope ``V(x_k) <= max(reach_level c, beta gamma^k V(x_0))`` at every step.
    final_reach : bool
        The final-step row ``V(x_H) <= reach_level c``.
    envelope_rate, envelope_gain : float or None
        gamma and beta of the envelope (None: derived from the backup, see
        :func:`~scpo_ctrl.backup.envelope.derive_envelope`).
    envelope_rate_fraction : float
        When derived, ``gamma = gamma_b ** envelope_rate_fraction``.
    margin : float
        Each row must hold with ``g <= -margin * scale``: scale is the state's
        half range for a state limit, the largest ``|g|`` along the backup's
        validation trajectories for an extra constraint, and ``c`` for the
        envelope and reach rows. Where the backup itself has less slack than
        that on a row, the row's margin is half the backup's slack.
    """

    envelope: bool = True
    final_reach: bool = True
    envelope_rate: float | None = None
    envelope_gain: float | None = None
    envelope_rate_fraction: float = 0.1
    margin: float = 1e-3

    @classmethod
    def from_spec(cls, safety) -> "RowSettings":
        """The rows a plant file's ``safety`` section asks for."""
        envelope = safety.envelope
        return cls(envelope.enabled, safety.final_reach, envelope.rate, envelope.gain, envelope.rate_fraction,
                   safety.margin)


def residual_policy(problem: ControlProblem, hidden: tuple, activation: str = "tanh",
                    gate_ratio: float = DEFAULT_GATE_RATIO) -> ResidualPolicy:
    """The residual policy around the problem's backup, scaled to its validation box and input range."""
    spec, backup = problem.spec, problem.backup
    x0 = problem.x0
    half_width = 0.5 * (x0.max(axis=0) - x0.min(axis=0))
    x_scale = np.where(half_width > 0, half_width, 1.0)
    span = np.where(np.isfinite(backup.u_max - backup.u_min), 0.5 * (backup.u_max - backup.u_min), 1.0)
    return ResidualPolicy(
        layout=MlpLayout((spec.nx, *hidden, spec.nu), activation), K=backup.K, x_eq=backup.x_eq, u_eq=backup.u_eq,
        u_min=backup.u_min, u_max=backup.u_max, P=problem.target.P, c=problem.target.c, gate_ratio=gate_ratio,
        x_scale=x_scale, u_scale=span, plant=spec.name, state_names=spec.state_names,
        input_names=spec.input_names, dt=spec.dt, backup=spec.backup.type,
    )


def closed_loop_law(problem: ControlProblem, policy: ResidualPolicy) -> ca.Function:
    """The policy as the rollout engine takes it: the matrix (MX) form of ``(x, theta) -> u`` for a backup in closed
    form (the compiled rollouts stay small and build in about a second at any width), else scalar (SX) code of
    ``(x, theta, u_backup) -> u`` (the closed loop runs in C around the backup's solver)."""
    return policy.function(ca.MX) if problem.backup_kind.in_closed_form else policy.law(ca.SX)


def training_starts(problem: ControlProblem, count: int) -> np.ndarray:
    """Initial states for the loss, low-discrepancy in the validation box with seed + 1, shape ``(count, nx)``."""
    lo, hi = problem.x0.min(axis=0), problem.x0.max(axis=0)
    seed = problem.spec.safety.initial_states.seed + 1
    return lo + qmc.Halton(d=problem.spec.nx, scramble=True, seed=seed).random(count) * (hi - lo)


class ControlAdaptation:
    """A :class:`~scpo_ctrl.scpo.problem.ConstrainedProblem` for a plant and its residual policy.

    Parameters
    ----------
    problem : ControlProblem
    policy : ResidualPolicy
    jit : bool or None
    rows : RowSettings, optional
    bank : object with ``metrics_batch(x0, thetas)``, optional
        Runs the bank's closed loops (e.g. :class:`~scpo_ctrl.scpo.bank.DistributedBank`); default the engine.
    cost_loops : object with ``trajectories(theta, starts)`` and ``per_start(theta, starts)``, optional
        Runs the closed loops of the closed-loop cost task on an MPC backup (the loss, its gradient and the line
        search), e.g. :class:`~scpo_ctrl.scpo.bank.DistributedCostLoops`; default
        :class:`~scpo_ctrl.scpo.mpc_cost.MpcCostLoops` on the engine. Unused otherwise (the imitation loss and
        the closed-form cost run here).
    """

    def __init__(self, problem: ControlProblem, policy: ResidualPolicy, jit: bool | None = None,
                 rows: RowSettings | None = None, bank=None, cost_loops=None):
        self.problem = problem
        self.policy = policy
        self.rows = RowSettings.from_spec(problem.spec.safety) if rows is None else rows
        self.dimension = policy.n_theta
        jit = compiler_available() if jit is None else jit
        self.jit = jit
        #: whether the backup is in closed form (see :class:`~scpo_ctrl.backup.kinds.Backup`): the closed loop is
        #: then a CasADi graph with gradients; else it runs in C around the backup's solver
        self.closed_form = problem.backup_kind.in_closed_form
        self.pi = closed_loop_law(problem, policy)
        self.engine = problem.engine(self.pi, jit=jit)
        #: where the bank's closed loops run (``metrics_batch``): the engine, or a distributed bank
        self.bank = self.engine if bank is None else bank
        names = [row.name for row in problem.model.rows]
        names += [ENVELOPE_ROW] * self.rows.envelope + [REACH_ROW] * self.rows.final_reach
        self.group_names = tuple(names)
        #: the reach row is V(x_H) - reach_level with reach_level = safety.reach_level * c
        self.reach_level = problem.spec.safety.reach_level * problem.target.c
        linear = problem.model.linearise()
        self.backup_rate = contraction_rate(linear.A - linear.B @ problem.backup.K, problem.target.P)
        self.set_states(problem.x0)
        self.task = problem.spec.task.type
        self._cost_loops = cost_loops
        self._weighted_rows: ca.Function | None = None
        self._weighted_maps: dict[int, ca.Function] = {}
        if self.task == "imitation":
            self._build_imitation()
        else:
            self._build_closed_loop_cost()

    # -- constraints ----------------------------------------------------------
    def set_states(self, x0: np.ndarray) -> None:
        """Use ``x0 (N, nx)`` as the validation initial states: rows, groups, envelope and margins follow.

        The rows are ordered state-major: for each state, (step, row) pairs with the path rows and the
        envelope row at every step, then the final reach row. Enlarging the set appends rows, so the
        rows of the states already there keep their indices (and their curvature bounds). Row scales
        are fixed by the first set; a derived envelope gain is re-derived over the new set (it can
        only grow, so the rows already there only loosen).
        """
        self.x0 = np.array(x0, dtype=float)
        self.n_states = self.x0.shape[0]
        steps = self.problem.spec.safety.horizon + 1
        ng = len(self.problem.model.rows)
        per_step = ng + self.rows.envelope
        per_state = np.tile(np.arange(per_step), steps)
        if self.rows.final_reach:
            per_state = np.concatenate([per_state, [per_step]])
        self.row_groups = np.tile(per_state, self.n_states)
        # the backup's own closed loop (an all-zero theta has a zero residual: the backup exactly)
        G_backup, X_backup = self.bank.metrics_batch(self.x0, np.zeros((1, self.dimension)))
        target = self.problem.target
        if not hasattr(self, "_scale_pattern"):
            scale = np.tile(np.concatenate([self._path_scales(G_backup[0]), [target.c] * self.rows.envelope]), steps)
            self._scale_pattern = np.concatenate([scale, [target.c] * self.rows.final_reach])
        self.envelope: DecayEnvelope | None = None
        if self.rows.envelope:
            try:
                self.envelope = derive_envelope(target.value(X_backup[0]), self.backup_rate, self.reach_level,
                                                self.rows.envelope_rate, self.rows.envelope_gain,
                                                self.rows.envelope_rate_fraction)
            except ValueError as exc:
                raise ScpoError(f"safety.envelope: {exc}") from None
            self._envelope_bound = self.envelope.bound(target.value(self.x0), steps)
        backup_rows = self.rows_from(G_backup, X_backup)[0]
        wanted = self.rows.margin * np.tile(self._scale_pattern, self.n_states)
        self.margins = np.minimum(wanted, 0.5 * np.maximum(0.0, -backup_rows))
        #: rows whose margin the backup's own slack limited, and the backup's rows (for the record)
        self.reduced_margins = int(np.sum(self.margins < wanted))
        self.backup_rows = backup_rows

    def violations(self, x0: np.ndarray, theta: np.ndarray, backup_rows_only: bool = False) -> tuple:
        """How badly the law with ``theta`` breaks the rows from initial states ``x0 (N, nx)``.

        Returns
        -------
        per_group : ndarray, shape (N, n_groups)
            Per group of :attr:`group_names`, the largest ``(g + margin) / scale`` over the state's rows
            (> 0: a row SCPO keeps is broken), with the envelope as it stands. With ``backup_rows_only``:
            ``g / scale`` without margin and the envelope group at -inf (the envelope adapts to the
            backup), so > 0 means no policy can be certified from there with this backup.
        plant_worst : ndarray, shape (N, ng + 1)
            The largest value over the steps of every plant row, then ``V(x_H) / c - 1``.
        """
        x0 = np.atleast_2d(np.asarray(x0, dtype=float))
        steps = self.problem.spec.safety.horizon + 1
        if x0.shape[0] == 0:
            return np.zeros((0, len(self.group_names))), np.zeros((0, len(self.problem.model.rows) + 1))
        G, X = self.bank.metrics_batch(x0, np.asarray(theta, dtype=float)[None, :])
        G, X = G[0], X[0]  # (N, H+1, ng), (N, H+1, nx)
        target = self.problem.target
        V = target.value(X)
        V = np.where(np.isfinite(V), V, np.inf)
        ng = G.shape[2]
        per_step = ng + self.rows.envelope
        scale = self._scale_pattern[: steps * per_step].reshape(steps, per_step)
        margin = 0.0 if backup_rows_only else self.rows.margin
        groups = [(G / scale[None, :, :ng]).max(axis=1) + margin]  # (N, ng)
        if self.rows.envelope:
            if backup_rows_only:
                groups.append(np.full((len(x0), 1), -np.inf))
            else:
                groups.append(((V - self.envelope.bound(V[:, 0], steps)) / target.c).max(axis=1)[:, None] + margin)
        if self.rows.final_reach:
            groups.append(((V[:, -1] - self.reach_level) / target.c)[:, None] + margin)
        per_group = np.concatenate(groups, axis=1)
        plant_worst = np.column_stack([G.max(axis=1), V[:, -1] / target.c - 1.0])
        return per_group, plant_worst

    def _path_scales(self, G_backup: np.ndarray) -> np.ndarray:
        """The scale of each path row, shape ``(ng,)``: state half range, or the largest |g| on the backup's loop."""
        spec = self.problem.spec
        half_range = {}
        for variable in spec.states:
            if variable.min is not None and variable.max is not None and variable.max > variable.min:
                half_range[variable.name] = 0.5 * (variable.max - variable.min)
        scales = []
        for index, row in enumerate(self.problem.model.rows):
            variable = row.name.rsplit(".", 1)[0]
            if row.kind == "state" and variable in half_range:
                scales.append(half_range[variable])
                continue
            values = np.abs(G_backup[..., index])
            values = values[np.isfinite(values)]
            scales.append(float(values.max()) if values.size and values.max() > 0 else 1.0)
        return np.array(scales)

    def rows_from(self, G: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Constraint rows ``(n, k)`` from :meth:`RolloutEngine.metrics_batch` outputs ``G (n, N, H+1, ng)``,
        ``X (n, N, H+1, nx)``."""
        target = self.problem.target
        n, N = G.shape[:2]
        V = target.value(X)  # (n, N, H+1)
        V = np.where(np.isfinite(V), V, np.inf)
        parts = [G]
        if self.rows.envelope:
            parts.append((V - self._envelope_bound[None])[..., None])
        rows = np.concatenate(parts, axis=3).reshape(n, N, -1)
        if self.rows.final_reach:
            reach = V[:, :, -1] - self.reach_level
            rows = np.concatenate([rows, reach[..., None]], axis=2)
        return rows.reshape(n, -1)

    def per_constraint(self, rows: np.ndarray) -> np.ndarray:
        """The worst value of each constraint group, shape ``(n_groups,)``, from rows ``(k,)``."""
        out = np.full(len(self.group_names), -np.inf)
        np.maximum.at(out, self.row_groups, rows)
        return out

    def constraints(self, thetas: np.ndarray) -> np.ndarray:
        G, X = self.bank.metrics_batch(self.x0, np.atleast_2d(thetas))
        return self.rows_from(G, X)

    def weighted_constraint_gradient(self, theta: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
        """``sum_i w_i g_i`` and its gradient through the rollout (baselines only; SCPO never calls it)."""
        if not self.closed_form:
            raise ScpoError("the gradient-based baselines need gradients of the safety rows through the rollout; "
                            "they are not available with an MPC backup (SCPO itself does not need them)")
        N, steps = self.n_states, self.problem.spec.safety.horizon + 1
        ng = len(self.problem.model.rows)
        per_step = ng + self.rows.envelope
        weights = np.asarray(weights, dtype=float).reshape(N, -1)
        W = weights[:, : steps * per_step].reshape(N, steps, per_step)
        w_reach = weights[:, -1] if self.rows.final_reach else np.zeros(N)
        W_env = W[:, :, ng] if self.rows.envelope else np.zeros((N, steps))
        E = self._envelope_bound if self.rows.envelope else np.zeros((N, steps))
        if self._weighted_rows is None:
            self._weighted_rows = self._build_weighted_rows()
        if N not in self._weighted_maps:
            # theta is shared (reduced input); value and gradient are summed over the states
            self._weighted_maps[N] = self._weighted_rows.map("weighted_rows_all", "serial", N, [1], [0, 1])
        value, gradient = self._weighted_maps[N](
            self.x0.T, theta, W[:, :, :ng].transpose(2, 0, 1).reshape(ng, N * steps), W_env.T, E.T, w_reach[None, :]
        )
        return float(value), np.array(gradient).ravel()

    def _build_weighted_rows(self) -> ca.Function:
        """``(x0, theta, W (ng, H+1), w_env (H+1,), e (H+1,), w_reach) -> (sum of weighted rows, gradient)``."""
        x0, theta, X, _, G = self.engine.symbolic()
        steps = X.shape[1]
        W = ca.MX.sym("W", G.shape[0], G.shape[1])
        w_env, e = ca.MX.sym("w_env", steps), ca.MX.sym("e", steps)
        w_reach = ca.MX.sym("w_reach")
        target = self.problem.target
        dX = X - ca.repmat(ca.DM(target.x_eq), 1, steps)
        V = ca.sum1(dX * ca.mtimes(ca.DM(target.P), dX)).T  # (H+1, 1)
        value = ca.sum2(ca.sum1(W * G)) + ca.dot(w_env, V - e) + w_reach * (V[-1] - self.reach_level)
        single, _ = compile_function("weighted_rows", [x0, theta, W, w_env, e, w_reach],
                                     [value, ca.gradient(value, theta)],
                                     ["x0", "theta", "W", "w_env", "e", "w_reach"], ["value", "grad"], self.jit)
        return single

    # -- loss -------------------------------------------------------------------
    def _build_imitation(self) -> None:
        spec = self.problem.spec
        expert = spec.task.expert
        if expert.kind == "data":
            data = np.asarray(expert.data)
            states, targets = data[:, : spec.nx], data[:, spec.nx:]
            targets = np.clip(targets, self.policy.u_min, self.policy.u_max)
        else:
            backup_engine = self.problem.engine(self.problem.backup_law(), jit=False)
            visited = backup_engine.simulate(training_starts(self.problem, TRAINING_STARTS)).x.reshape(-1, spec.nx)
            # inside the target set the gate holds the policy at the backup: nothing to learn there
            visited = visited[self.problem.target.value(visited) > self.problem.target.c]
            rng = np.random.default_rng(spec.safety.initial_states.seed + 2)
            take = rng.choice(visited.shape[0], size=min(LOSS_STATES, visited.shape[0]), replace=False)
            states = visited[np.sort(take)]
            expert_fn = expert_function(spec)
            targets = np.array(expert_fn.map(states.shape[0])(states.T, np.zeros((0, 1)))).T
        self.loss_states = states
        self.loss_targets = targets
        # The loss over all M states as matrix products (MX): compact reverse mode; pieces are the
        # gradients of P weighted sums (P reverse sweeps), never per-sample gradients.
        M = states.shape[0]
        theta = ca.MX.sym("theta", self.dimension)
        U_backup = None
        if not self.closed_form:
            # the MPC's inputs at the loss states do not depend on theta: solved once (cold starts)
            u_backup, _ = self.engine.solve(states)
            U_backup = ca.DM(u_backup.T)
        U = self.policy.control_batch(ca.DM(states.T), theta, U_backup)
        E = (U - ca.DM(targets.T)) / ca.repmat(ca.DM(self.policy.u_scale), 1, M)
        self._e2 = ca.sum1(E * E)  # (1, M)
        self._theta = theta
        self._imitation_loss = ca.Function("imitation_loss", [theta], [ca.sum2(self._e2) / M])
        self._imitation_pieces: dict[int, ca.Function] = {}

    def _build_closed_loop_cost(self) -> None:
        spec = self.problem.spec
        Q, R = np.array(spec.task.Q), np.array(spec.task.R)
        starts = training_starts(self.problem, COST_STARTS)
        self.cost_starts = starts
        if not self.closed_form:
            loops = self._cost_loops
            if loops is None:
                loops = MpcCostLoops(self.engine, self.policy, Q, R, self.jit)
            self._mpc_cost = MpcClosedLoopCost(loops, self.policy, Q, R, starts)
            return
        x0, theta, X, U, _ = self.engine.symbolic()
        dX = X - ca.repmat(ca.DM(self.policy.x_eq), 1, X.shape[1])
        dU = U - ca.repmat(ca.DM(self.policy.u_eq), 1, U.shape[1])
        cost = (ca.sum2(ca.sum1(dX * ca.mtimes(ca.DM(Q), dX))) + ca.sum2(ca.sum1(dU * ca.mtimes(ca.DM(R), dU)))) / X.shape[1]
        single, _ = compile_function("cost", [x0, theta], [cost, ca.gradient(cost, theta)], ["x0", "theta"], ["J", "grad"], self.jit)
        cost_only, _ = compile_function("cost_only", [x0, theta], [cost], ["x0", "theta"], ["J"], self.jit)
        w = ca.MX.sym("w", MAX_PIECES)
        xm, thm = ca.MX.sym("x0", spec.nx), ca.MX.sym("theta", self.dimension)
        J, gJ = single(xm, thm)
        weighted = ca.Function("weighted_cost", [xm, w, thm], [w * J, ca.mtimes(gJ, w.T)])
        # serial: a threaded map with broadcast inputs measured slower (see RolloutEngine.metrics_batch)
        self._weighted_cost = weighted.map("cost_weighted", "serial", starts.shape[0], [2], [0, 1])
        self._cost_only = cost_only.map("cost_only_all", "serial", starts.shape[0], [1], [0])

    def _weights(self, count: int) -> np.ndarray:
        """Weight columns ``(M, MAX_PIECES)``: ``count`` groups of samples (mean-normalised), rest zero."""
        M = self.loss_states.shape[0] if self.task == "imitation" else self.cost_starts.shape[0]
        key = self.loss_states[:, 0] if self.task == "imitation" else self.cost_starts[:, 0]
        W = np.zeros((M, MAX_PIECES))
        for p, index in enumerate(np.array_split(np.argsort(key, kind="stable"), count)):
            W[index, p] = 1.0 / M
        return W

    def _evaluate(self, theta: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        W = self._weights(count)
        if self.task == "imitation":
            if count not in self._imitation_pieces:
                Wc = ca.MX.sym("W", W.shape[0], count)
                pieces = ca.mtimes(self._e2, Wc).T  # (count, 1): one reverse sweep per piece
                self._imitation_pieces[count] = ca.Function(
                    f"imitation_pieces_{count}", [self._theta, Wc], [pieces, ca.jacobian(pieces, self._theta)]
                )
            value, jacobian = self._imitation_pieces[count](theta, W[:, :count])
            return np.array(value).ravel(), np.array(jacobian)
        if not self.closed_form:
            value, gradient = self._mpc_cost.weighted(theta, W)
        else:
            value, gradient = self._weighted_cost(self.cost_starts.T, W.T, theta)
        return np.array(value).ravel()[:count], np.array(gradient).T[:count]

    def loss(self, theta: np.ndarray) -> float:
        if self.task == "imitation":
            return float(self._imitation_loss(theta))
        if not self.closed_form:
            return self._mpc_cost.value(theta)
        return float(self._cost_only(self.cost_starts.T, theta)) / self.cost_starts.shape[0]

    def loss_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = self._evaluate(theta, 1)
        return float(value[0]), gradient[0]

    def gradient_pieces(self, theta: np.ndarray, count: int) -> np.ndarray:
        return self._evaluate(theta, min(count, MAX_PIECES))[1]

