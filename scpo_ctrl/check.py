"""``scpo-ctrl check``: is the plant file sound, and is the backup safe where we want to adapt?"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import qmc

from .config.plant_spec import PlantSpec, load_plant_spec
from .policy.expert import expert_function
from .problem import ControlProblem, build_problem
from .sim.initial_states import initial_box, search_corners
from .sim.rollout import REACH_ROW, SafetyEvaluation, safety_metrics


@dataclass(frozen=True)
class RowMargin:
    """Worst value of one safety row over the validation set (<= 0 safe)."""

    name: str
    description: str
    worst: float
    violating_states: int


@dataclass(frozen=True)
class CheckReport:
    """What ``check`` found; every field is plain data (JSON-ready via :meth:`to_dict`)."""

    plant: str
    source: str
    nx: int
    nu: int
    dt: float
    states: list
    inputs: list
    dynamics: str
    dynamics_affine: bool
    x_eq: list
    u_eq: list
    A: list
    B: list
    K: list
    P: list
    closed_loop_eigenvalues: list
    closed_loop_spectral_radius: float
    target_level: float
    target_binding: str
    target_exact: bool
    target_levels: list
    validation_states: int
    horizon: int
    backup_margins: list
    backup_safe: bool
    expert_margins: list | None
    expert_safe: bool | None
    backup_type: str = "lqr"
    mpc: dict | None = None
    backup_box: BackupOnBox | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BackupOnBox:
    """The backup's closed loops from the whole initial box, sampled (a search, not a proof).

    SCPO certifies a law near the backup on the validation set; ``verify`` judges it on the whole box.
    Where the backup itself breaks a row, no law SCPO can reach from it is safe, so such states are
    the plant file's problem (box or backup), found before any adaptation.

    Attributes
    ----------
    examined : int
        Initial states simulated: the box's corners (see :func:`~scpo_ctrl.sim.initial_states.search_corners`),
        then Halton points.
    corners : int
        Of those, how many are corners.
    violating : int
        States from which the backup breaks at least one row (a plant row or the target set's reach row).
    violating_corners : int
        Of those, how many are corners.
    rows : list of RowMargin
        Per row, the worst value over the sample and how many states break it.
    worst_state : list of float or None
        The initial state from which the backup breaks ``worst_row`` the most (None when nothing breaks).
    worst_row : str or None
        The broken row broken from the most states (ties: the larger value; rows have different units,
        so their values are not compared with each other).
    """

    examined: int
    corners: int
    violating: int
    violating_corners: int
    rows: list
    worst_state: list | None
    worst_row: str | None

    @property
    def safe(self) -> bool:
        return self.violating == 0


def backup_on_box(problem: ControlProblem, samples: int | None = None, seed: int = 0) -> BackupOnBox:
    """Simulate the backup from the initial box's corners and ``samples`` scrambled Halton points of it (None:
    the backup's :attr:`~scpo_ctrl.backup.kinds.Backup.box_check_samples`)."""
    if samples is None:
        samples = problem.backup_kind.box_check_samples
    box = initial_box(problem.spec.safety.initial_states)
    nx = box.shape[0]
    corners = search_corners(box, samples)
    inside = box[:, 0] + qmc.Halton(d=nx, scramble=True, seed=seed).random(samples) * (box[:, 1] - box[:, 0])
    X0 = np.concatenate([corners, inside])
    evaluation = _backup_evaluation(problem, X0)
    broken = np.any(evaluation.g > 0.0, axis=1)
    worst_state = worst_row = None
    if broken.any():
        # rows have different units: take the row broken from the most states (ties: the larger value)
        counts = evaluation.violating_states()
        row = max(range(len(counts)), key=lambda i: (counts[i], evaluation.worst[i]))
        index = int(np.argmax(evaluation.g[:, row]))
        worst_state, worst_row = X0[index].tolist(), evaluation.names[row]
    return BackupOnBox(examined=len(X0), corners=len(corners), violating=int(broken.sum()),
                       violating_corners=int(broken[: len(corners)].sum()),
                       rows=_margins(problem, evaluation), worst_state=worst_state, worst_row=worst_row)


def _backup_evaluation(problem: ControlProblem, X0: np.ndarray) -> SafetyEvaluation:
    """The backup's safety metrics from ``X0 (N, nx)`` over the safety horizon."""
    return problem.engine(problem.backup_law(), jit=False).evaluate(X0, problem.target.c, problem.target.P,
                                                                    problem.target.x_eq)[1]


def run_check(plant: str | PlantSpec) -> CheckReport:
    """Load, build and check the plant file at ``plant`` (a path, or a validated :class:`PlantSpec`)."""
    spec = plant if isinstance(plant, PlantSpec) else load_plant_spec(plant)
    problem = build_problem(spec)
    mpc = None
    if not problem.backup_kind.in_closed_form:  # the solver's statistics come with the rollouts
        engine = problem.engine(problem.backup_law())
        result = engine.rollout(problem.x0)
        backup_eval = safety_metrics(problem.model, result.rollouts, problem.target.c, problem.target.P,
                                     problem.target.x_eq)
        mpc = _mpc_summary(problem, result.stats)
    else:
        _, backup_eval = problem.closed_loop(problem.backup_law())
    expert = expert_function(spec)
    expert_eval = problem.closed_loop(expert)[1] if expert is not None else None
    backup = problem.backup
    eigenvalues = backup.closed_loop_eigenvalues
    return CheckReport(
        plant=spec.name,
        source=spec.source,
        nx=spec.nx,
        nu=spec.nu,
        dt=spec.dt,
        states=[{"name": v.name, "unit": v.unit, "min": v.min, "max": v.max} for v in spec.states],
        inputs=[{"name": v.name, "unit": v.unit, "min": v.min, "max": v.max} for v in spec.inputs],
        dynamics=spec.dynamics.kind,
        dynamics_affine=problem.model.dynamics_affine,
        x_eq=spec.x_eq.tolist(),
        u_eq=spec.u_eq.tolist(),
        A=backup.linear.A.tolist(),
        B=backup.linear.B.tolist(),
        K=backup.K.tolist(),
        P=backup.P.tolist(),
        closed_loop_eigenvalues=[[float(z.real), float(z.imag)] for z in eigenvalues],
        closed_loop_spectral_radius=float(np.max(np.abs(eigenvalues))),
        target_level=problem.target.c,
        target_binding=problem.target.binding,
        target_exact=problem.target.exact,
        target_levels=[
            {"name": l.name, "level": l.level, "method": l.method, "searched_up_to": l.searched_up_to}
            for l in problem.target.levels
        ],
        validation_states=int(problem.x0.shape[0]),
        horizon=spec.safety.horizon,
        backup_margins=[asdict(m) for m in _margins(problem, backup_eval)],
        backup_safe=backup_eval.safe,
        expert_margins=None if expert_eval is None else [asdict(m) for m in _margins(problem, expert_eval)],
        expert_safe=None if expert_eval is None else expert_eval.safe,
        backup_type=spec.backup.type,
        mpc=mpc,
        backup_box=backup_on_box(problem),
    )


def _mpc_summary(problem: ControlProblem, stats) -> dict:
    """The MPC's settings and how its solves went in the validation closed loops (times measured in C)."""
    F = problem.mpc.formulation
    seconds = stats.seconds.ravel()
    return {
        "horizon": F.N, "solver": F.solver, "terminal_level": F.c, "tighten": problem.spec.backup.tighten,
        "solves": int(seconds.size),
        "not_converged": int(np.count_nonzero(stats.status.ravel() != 0)),
        "iterations_median": float(np.median(stats.iterations)),
        "solve_us_median": float(np.median(seconds) * 1e6),
        "solve_us_p99": float(np.percentile(seconds, 99) * 1e6),
        "library": str(problem.mpc.files.library),
    }


def _margins(problem: ControlProblem, evaluation: SafetyEvaluation) -> list:
    """One :class:`RowMargin` per row of ``evaluation``."""
    descriptions = {row.name: row.description for row in problem.model.rows}
    descriptions[REACH_ROW] = f"V(x_H) <= c within {problem.spec.safety.horizon} steps"
    worst = evaluation.worst
    counts = evaluation.violating_states()
    return [
        RowMargin(name, descriptions[name], float(worst[i]), int(counts[i]))
        for i, name in enumerate(evaluation.names)
    ]
