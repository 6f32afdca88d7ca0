"""The SCPO iteration (SCPO.md section 2) and the baselines behind the same interface.

Each iteration: propose a raw step, build the bank of probe directions,
evaluate g at every probe in one batched call, update the curvature bounds
from the antithetic pairs, project the raw step onto the certified region,
backtrack (Armijo) on the loss, validate g at the new point, and accept it
or raise l and retry, or reject. Every accepted iterate has g <= 0 on the
constraint rows; the state needed to resume bit-for-bit is in
:class:`OptimizerState`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from .projection import certified_bound, project
from .problem import ConstrainedProblem

METHODS = ("scpo", "unconstrained", "penalty", "lagrangian")


@dataclass(frozen=True)
class OptimizerSettings:
    """Settings of one run (defaults measured on the regression task, SCPO.md section 6).

    Attributes
    ----------
    iterations : int
    step_size : float
        eta in raw = -eta * grad L.
    trust_radius : float
        r: the raw step is clipped to it, and |D xi| <= r.
    probe_norm : float or None
        Norm each bank column is rescaled to (None: r / 30).
    gradient_pieces : int
        Loss-gradient pieces in the bank.
    random_pairs : int
        Antithetic random direction pairs in the bank.
    curvature_factor : float
        Safety factor on the curvature seen by the pairs.
    l_initial : float
        Curvature bound before any estimate.
    max_retries : int
        Validation failures (each raises l) before the update is rejected.
    armijo_c1 : float
    armijo_backtracks : int
    seed : int
    method : {'scpo', 'unconstrained', 'penalty', 'lagrangian'}
    penalty_weight : float
        lambda of the soft-penalty baseline.
    dual_step : float
        Step of the multipliers in the Lagrangian baseline.
    """

    iterations: int = 200
    step_size: float = 0.05
    trust_radius: float = 0.5
    probe_norm: float | None = None
    gradient_pieces: int = 4
    random_pairs: int = 2
    curvature_factor: float = 2.0
    l_initial: float = 0.0
    max_retries: int = 4
    armijo_c1: float = 1e-4
    armijo_backtracks: int = 6
    seed: int = 0
    method: str = "scpo"
    penalty_weight: float = 1.0
    dual_step: float = 1.0

    @property
    def probe(self) -> float:
        return self.probe_norm if self.probe_norm is not None else self.trust_radius / 30.0


@dataclass
class OptimizerState:
    """Everything that determines the rest of a run (saved for ``--resume``).

    Attributes
    ----------
    iteration : int
        Iterations done.
    theta : ndarray, shape (d,)
        The current (last accepted) iterate.
    g : ndarray, shape (k,)
        The constraint rows at theta.
    loss : float
    previous_step : ndarray, shape (d,)
        The last accepted step (zero before the first).
    l : ndarray, shape (n_groups,)
        Curvature bound per group; never lowered within a run.
    multipliers : ndarray, shape (k,)
        Lagrangian baseline only.
    rng_state : dict
        The bit generator's state.
    """

    iteration: int
    theta: np.ndarray
    g: np.ndarray
    loss: float
    previous_step: np.ndarray
    l: np.ndarray
    multipliers: np.ndarray
    rng_state: dict


@dataclass(frozen=True)
class StepRecord:
    """One iteration, as written to ``training.jsonl``.

    ``g_max`` is the largest constraint row at the iterate the run holds
    after this iteration (for SCPO, always the accepted one: <= 0);
    ``g_max_groups`` the same per group.
    """

    iteration: int
    method: str
    loss: float
    g_max: float
    g_max_groups: list
    accepted: bool
    reason: str
    step_norm: float
    alpha: float
    l: list
    retries: int
    bank_size: int
    rows: int
    seconds: float
    timing: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "iteration": self.iteration, "method": self.method, "loss": self.loss, "g_max": self.g_max,
            "g_max_groups": self.g_max_groups, "accepted": self.accepted, "reason": self.reason,
            "step_norm": self.step_norm, "alpha": self.alpha, "l": self.l, "retries": self.retries,
            "bank_size": self.bank_size, "rows": self.rows, "seconds": self.seconds, "timing": self.timing,
        }


def initial_state(problem: ConstrainedProblem, theta0: np.ndarray, settings: OptimizerSettings) -> OptimizerState:
    """Evaluate the start; SCPO needs it feasible (raises ValueError otherwise)."""
    theta0 = np.asarray(theta0, dtype=float).copy()
    g0 = problem.constraints(theta0[None, :])[0]
    if settings.method == "scpo" and np.any(g0 > 0):
        worst = int(np.argmax(g0))
        group = problem.group_names[problem.row_groups[worst]]
        raise ValueError(f"the initial parameters are not safe: row {worst} ({group}) = {g0[worst]:.3g} > 0")
    rng = np.random.default_rng(settings.seed)
    n_groups = len(problem.group_names)
    return OptimizerState(
        iteration=0, theta=theta0, g=g0, loss=float(problem.loss(theta0)), previous_step=np.zeros_like(theta0),
        l=np.full(n_groups, float(settings.l_initial)), multipliers=np.zeros_like(g0), rng_state=rng.bit_generator.state,
    )


def step(problem: ConstrainedProblem, state: OptimizerState, settings: OptimizerSettings) -> tuple[OptimizerState, StepRecord]:
    """Run one iteration of ``settings.method``; returns the new state and its record."""
    if settings.method == "scpo":
        return _scpo_step(problem, state, settings)
    if settings.method in ("unconstrained", "penalty", "lagrangian"):
        return _baseline_step(problem, state, settings)
    raise ValueError(f"unknown method {settings.method!r} (valid: {', '.join(METHODS)})")


def _clip(v: np.ndarray, radius: float) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v if norm <= radius or norm == 0.0 else v * (radius / norm)


def _group_max(problem: ConstrainedProblem, g: np.ndarray) -> list:
    out = np.full(len(problem.group_names), -np.inf)
    np.maximum.at(out, problem.row_groups, g)
    return out.tolist()


def build_bank(raw: np.ndarray, previous: np.ndarray, pieces: np.ndarray, rng: np.random.Generator,
               settings: OptimizerSettings) -> tuple[np.ndarray, list]:
    """Probe directions ``D (d, m)``, each of norm ``settings.probe``, and the index pairs (j, j') of antithetic columns.

    Columns: raw, previous accepted step, gradient pieces (those not nearly
    collinear with an earlier column), then ``random_pairs`` pairs (d, -d).
    """
    rho = settings.probe
    columns: list[np.ndarray] = []

    def add(v: np.ndarray) -> None:
        norm = float(np.linalg.norm(v))
        if norm == 0.0 or not np.isfinite(norm):
            return
        u = v / norm
        if any(abs(float(u @ c)) / rho > 0.995 for c in columns):
            return
        columns.append(rho * u)

    add(raw)
    add(previous)
    for piece in pieces:
        add(piece)
    pairs = []
    for _ in range(settings.random_pairs):
        direction = rng.standard_normal(raw.shape[0])
        direction *= rho / np.linalg.norm(direction)
        pairs.append((len(columns), len(columns) + 1))
        columns.extend([direction, -direction])
    return np.column_stack(columns), pairs


def curvature_from_pairs(g0: np.ndarray, G: np.ndarray, D: np.ndarray, pairs: list, row_groups: np.ndarray,
                         n_groups: int) -> np.ndarray:
    """Per group, the largest |g(+d) + g(-d) - 2 g0| / |d|^2 over pairs and rows, shape ``(n_groups,)``."""
    estimate = np.zeros(n_groups)
    for j, k in pairs:
        norm2 = float(D[:, j] @ D[:, j])
        second = np.abs(G[:, j] + G[:, k] - 2.0 * g0) / norm2
        second = np.where(np.isfinite(second), second, 0.0)
        np.maximum.at(estimate, row_groups, second)
    return estimate


def _scpo_step(problem, state: OptimizerState, settings: OptimizerSettings):
    start = time.perf_counter()
    timing: dict[str, float] = {}
    rng = np.random.default_rng()
    rng.bit_generator.state = state.rng_state
    theta, g0 = state.theta, state.g

    t = time.perf_counter()
    if settings.gradient_pieces > 0:
        # the pieces sum to the gradient (ConstrainedProblem contract): one evaluation serves both
        pieces = problem.gradient_pieces(theta, settings.gradient_pieces)
        loss, gradient = state.loss, pieces.sum(axis=0)
    else:
        pieces = np.zeros((0, theta.size))
        loss, gradient = problem.loss_and_gradient(theta)
    timing["gradient"] = time.perf_counter() - t
    raw = _clip(-settings.step_size * gradient, settings.trust_radius)

    D, pairs = build_bank(raw, state.previous_step, -pieces, rng, settings)
    t = time.perf_counter()
    G = problem.constraints(theta[None, :] + D.T).T  # (k, m)
    timing["bank_evaluation"] = time.perf_counter() - t
    n_groups = len(problem.group_names)
    seen = curvature_from_pairs(g0, G, D, pairs, problem.row_groups, n_groups)
    l = np.maximum(state.l, settings.curvature_factor * seen)
    G = np.where(np.isfinite(G), G, 1e12)  # a probe that blew up certifies nothing toward it

    S = D.T @ D
    retries = 0
    reason = "zero step: nothing better is certified"
    accepted = False
    alpha = 0.0
    new_theta, new_g, new_loss = theta, g0, loss
    timing["projection"] = 0.0
    timing["line_search"] = 0.0
    timing["validation"] = 0.0
    step_vector = np.zeros_like(theta)
    while True:
        t = time.perf_counter()
        projection = project(D, raw, g0, G, l[problem.row_groups], settings.trust_radius)
        timing["projection"] += time.perf_counter() - t
        xi = projection.xi
        p = D @ xi
        if not np.any(xi):
            reason = f"zero step ({projection.status})"
            break
        t = time.perf_counter()
        slope = float(gradient @ p)
        alpha = 1.0
        trial_loss = problem.loss(theta + p)
        backtracks = 0
        while trial_loss > loss + settings.armijo_c1 * alpha * slope and backtracks < settings.armijo_backtracks:
            alpha *= 0.5
            backtracks += 1
            trial_loss = problem.loss(theta + alpha * p)
        timing["line_search"] += time.perf_counter() - t
        if trial_loss > loss + settings.armijo_c1 * alpha * slope:
            reason = "rejected: no Armijo decrease along the certified step"
            break
        t = time.perf_counter()
        candidate = theta + alpha * p
        g_new = problem.constraints(candidate[None, :])[0]
        timing["validation"] += time.perf_counter() - t
        if np.all(g_new <= 0.0):
            accepted = True
            reason = "accepted" if retries == 0 else f"accepted after raising l {retries} time(s)"
            new_theta, new_g, new_loss = candidate, g_new, trial_loss
            step_vector = alpha * p
            break
        # l was underestimated: raise it for the violating groups and re-project.
        retries += 1
        bad = ~(g_new <= 0.0)
        quadratic = float((alpha * xi) @ S @ (alpha * xi)) + float(np.abs(alpha * xi) @ np.diag(S))
        linear = certified_bound(alpha * xi, g0, G, np.zeros_like(g0), S)
        implied = np.where(bad, 2.0 * (np.where(np.isfinite(g_new), g_new, 1e12) - linear) / max(quadratic, 1e-300), 0.0)
        for group in np.unique(problem.row_groups[bad]):
            in_group = problem.row_groups == group
            l[group] = max(2.0 * l[group], 2.0 * float(implied[in_group].max()), 1e-12)
        if retries > settings.max_retries:
            reason = f"rejected: validation failed {retries} time(s); l raised"
            break

    new_state = replace(
        state, iteration=state.iteration + 1, theta=new_theta, g=new_g, loss=float(new_loss),
        previous_step=step_vector if accepted else state.previous_step, l=l, rng_state=rng.bit_generator.state,
    )
    record = StepRecord(
        iteration=new_state.iteration, method="scpo", loss=float(new_loss), g_max=float(new_g.max()),
        g_max_groups=_group_max(problem, new_g), accepted=accepted, reason=reason,
        step_norm=float(np.linalg.norm(step_vector)), alpha=alpha if accepted else 0.0, l=l.tolist(),
        retries=retries, bank_size=D.shape[1], rows=int(g0.size), seconds=time.perf_counter() - start, timing=timing,
    )
    return new_state, record


def _baseline_step(problem, state: OptimizerState, settings: OptimizerSettings):
    """Unconstrained descent, soft penalty, or Lagrangian primal-dual; iterates may be unsafe."""
    start = time.perf_counter()
    theta = state.theta
    loss, gradient = problem.loss_and_gradient(theta)
    multipliers = state.multipliers
    if settings.method == "penalty":
        weights = settings.penalty_weight * (state.g > 0.0)
        _, penalty_gradient = problem.weighted_constraint_gradient(theta, weights)
        gradient = gradient + penalty_gradient
    elif settings.method == "lagrangian":
        _, dual_gradient = problem.weighted_constraint_gradient(theta, multipliers)
        gradient = gradient + dual_gradient
    p = _clip(-settings.step_size * gradient, settings.trust_radius)
    new_theta = theta + p
    new_g = problem.constraints(new_theta[None, :])[0]
    new_loss = float(problem.loss(new_theta))
    if settings.method == "lagrangian":
        multipliers = np.maximum(0.0, multipliers + settings.dual_step * np.where(np.isfinite(new_g), new_g, 1e6))
    new_state = replace(state, iteration=state.iteration + 1, theta=new_theta, g=new_g, loss=new_loss,
                        previous_step=p, multipliers=multipliers)
    record = StepRecord(
        iteration=new_state.iteration, method=settings.method, loss=new_loss, g_max=float(new_g.max()),
        g_max_groups=_group_max(problem, new_g), accepted=True, reason="unconditional step",
        step_norm=float(np.linalg.norm(p)), alpha=1.0, l=state.l.tolist(), retries=0, bank_size=1,
        rows=int(new_g.size), seconds=time.perf_counter() - start,
    )
    return new_state, record
