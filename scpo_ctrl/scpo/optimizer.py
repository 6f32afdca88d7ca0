"""The SCPO iteration (SCPO.md section 2) and the baselines behind the same interface.

Each iteration: propose a raw step, build the bank of probe directions,
evaluate g at every probe in one batched call, update the curvature bounds
from the antithetic pairs, project the raw step onto the certified region,
backtrack (Armijo) on the loss, validate g at the new point, and accept it
or raise l and retry, or reject. Every accepted iterate has ``g <= -margin``
on the constraint rows (the problem's ``margins``, zero when it has none);
the state needed to resume bit-for-bit is in :class:`OptimizerState`.

Curvature bounds are kept per row and adapt both ways (SCPO.md section 7):
each iteration ``l_i <- max(decay * l_i, factor * seen_i)`` with ``seen_i``
the curvature the antithetic pairs show on row i, and a row that fails
validation has its ``l_i`` raised to twice the value its failure implies.
Validation, not l, is what keeps the iterates safe, so l may shrink; a
single group-wide l that never decreases made SCPO crawl (a few kinked rows
set the bound for all of them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from .projection import certified_bound, project
from .problem import ConstrainedProblem

METHODS = ("scpo", "unconstrained", "penalty", "lagrangian")
#: the projection aims this far inside each row (see :func:`~scpo_ctrl.scpo.projection.project`)
AIM_MARGIN_FRACTION = 1e-3
AIM_ABSOLUTE = 1e-9


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
    curvature_decay : float
        Factor in (0, 1] applied to every row's l each iteration before the new
        estimate (1: l never decreases, the first implementation's rule).
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
    curvature_decay: float = 0.9
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
    l : ndarray, shape (k,)
        Curvature bound per constraint row.
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
    after this iteration (for SCPO, always the accepted one: <= -margin);
    ``g_max_groups`` the same per group; ``l`` the largest curvature bound
    per group.
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


def row_margins(problem: ConstrainedProblem) -> np.ndarray:
    """The margin each row must keep (``g <= -margin``), shape ``(k,)``; zeros when the problem sets none."""
    margins = getattr(problem, "margins", None)
    if margins is None:
        return np.zeros(problem.row_groups.size)
    return np.asarray(margins, dtype=float)


def initial_state(problem: ConstrainedProblem, theta0: np.ndarray, settings: OptimizerSettings) -> OptimizerState:
    """Evaluate the start; SCPO needs it feasible with its margins (raises ValueError otherwise)."""
    theta0 = np.asarray(theta0, dtype=float).copy()
    g0 = problem.constraints(theta0[None, :])[0]
    margin = row_margins(problem)
    if settings.method == "scpo" and np.any(g0 + margin > 0):
        worst = int(np.argmax(g0 + margin))
        group = problem.group_names[problem.row_groups[worst]]
        raise ValueError(f"the initial parameters are not safe: row {worst} ({group}) = {g0[worst]:.3g} > "
                         f"-{margin[worst]:.3g} (its margin)")
    rng = np.random.default_rng(settings.seed)
    return OptimizerState(
        iteration=0, theta=theta0, g=g0, loss=float(problem.loss(theta0)), previous_step=np.zeros_like(theta0),
        l=np.full(g0.size, float(settings.l_initial)), multipliers=np.zeros_like(g0), rng_state=rng.bit_generator.state,
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


def _group_l(problem: ConstrainedProblem, l: np.ndarray) -> list:
    out = np.zeros(len(problem.group_names))
    np.maximum.at(out, problem.row_groups, l)
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


def curvature_from_pairs(g0: np.ndarray, G: np.ndarray, D: np.ndarray, pairs: list) -> np.ndarray:
    """Per row, the largest ``|g(+d) + g(-d) - 2 g0| / |d|^2`` over the antithetic pairs, shape ``(k,)``."""
    estimate = np.zeros(g0.size)
    for j, k in pairs:
        norm2 = float(D[:, j] @ D[:, j])
        second = np.abs(G[:, j] + G[:, k] - 2.0 * g0) / norm2
        estimate = np.maximum(estimate, np.where(np.isfinite(second), second, 0.0))
    return estimate


def _scpo_step(problem, state: OptimizerState, settings: OptimizerSettings):
    start = time.perf_counter()
    timing: dict[str, float] = {}
    rng = np.random.default_rng()
    rng.bit_generator.state = state.rng_state
    theta = state.theta
    # rows are certified against -margin: shift them so the region's "<= 0" is "g <= -margin"
    margin = row_margins(problem)
    g0 = state.g + margin

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
    G = problem.constraints(theta[None, :] + D.T).T + margin[:, None]  # (k, m)
    timing["bank_evaluation"] = time.perf_counter() - t
    seen = curvature_from_pairs(g0, G, D, pairs)
    l = np.maximum(settings.curvature_decay * state.l, settings.curvature_factor * seen)
    G = np.where(np.isfinite(G), G, 1e12)  # a probe that blew up certifies nothing toward it

    S = D.T @ D
    retries = 0
    reason = "zero step: nothing better is certified"
    accepted = False
    alpha = 0.0
    new_theta, new_g, new_loss = theta, state.g, loss
    timing["projection"] = 0.0
    timing["line_search"] = 0.0
    timing["validation"] = 0.0
    step_vector = np.zeros_like(theta)
    while True:
        t = time.perf_counter()
        projection = project(D, raw, g0, G, l, settings.trust_radius, aim=AIM_MARGIN_FRACTION * margin + AIM_ABSOLUTE)
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
        shifted = g_new + margin
        if np.all(shifted <= 0.0):
            accepted = True
            reason = "accepted" if retries == 0 else f"accepted after raising l {retries} time(s)"
            new_theta, new_g, new_loss = candidate, g_new, trial_loss
            step_vector = alpha * p
            break
        # l was underestimated on the failing rows: raise each to twice what its failure implies, re-project.
        retries += 1
        bad = ~(shifted <= 0.0)
        quadratic = float((alpha * xi) @ S @ (alpha * xi)) + float(np.abs(alpha * xi) @ np.diag(S))
        linear = certified_bound(alpha * xi, g0, G, np.zeros_like(g0), S)
        implied = 2.0 * (np.where(np.isfinite(shifted), shifted, 1e12) - linear) / max(quadratic, 1e-300)
        l = np.where(bad, np.maximum(np.maximum(2.0 * l, 2.0 * implied), 1e-12), l)
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
        step_norm=float(np.linalg.norm(step_vector)), alpha=alpha if accepted else 0.0, l=_group_l(problem, l),
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
        step_norm=float(np.linalg.norm(p)), alpha=1.0, l=_group_l(problem, state.l), retries=0, bank_size=1,
        rows=int(new_g.size), seconds=time.perf_counter() - start,
    )
    return new_state, record
