"""Where a backup alone is safe: its closed loop from a grid of initial states on a 2-D slice of the state space.

A state is *saved* by a backup when the backup's closed loop from it keeps
every safety row over the plant's safety horizon and ends in the target set,
``V(x_H) <= level`` (:func:`scpo_ctrl.sim.rollout.safety_metrics`: the same
criterion as the validation set). Comparing two backups on one plant means
passing both the same ``P``, ``x_eq`` and ``level``; the safety rows come from
the plant, which two plant files of one plant share.

The grid is judged by simulation only: a state counts as saved because its
simulated trajectory is safe, whatever the MPC solver reported along the way.
How often the solver did not converge is recorded beside the verdict.

Margins: an MPC plans up to its limits, so from states where a limit is
active its trajectory touches that limit (the worst row is 0 up to rounding
and the solver's tolerance), and the verdict ``g <= 0`` is decided at that
level. :attr:`SafeRegion.margin` keeps how far each trajectory stays inside
its limits, so that the count can also be given with a margin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..config.plant_spec import PlantSpec
from ..sim.mpc_rollout import MpcRolloutEngine
from ..sim.rollout import safety_metrics


@dataclass(frozen=True)
class StateSlice:
    """Initial states on a regular grid over two states; the other states are held at fixed values.

    The grid points are the centres of ``n x n`` equal cells tiling the two states' limits, so the cells
    tile the limit box exactly and every point lies strictly inside it.

    Attributes
    ----------
    names : tuple of str
        The two states that vary (plant file names).
    index : tuple of int
        Their positions in the state vector.
    a, b : ndarray, shapes (n_a,), (n_b,)
        Grid values of the first and second state [state units].
    bounds : ndarray, shape (2, 2)
        ``[[a_min, a_max], [b_min, b_max]]``: the limits the cells tile.
    x0 : ndarray, shape (n_a * n_b, nx)
        The initial states, the first state varying slowest (``x0.reshape(n_a, n_b, nx)``).
    """

    names: tuple
    index: tuple
    a: np.ndarray
    b: np.ndarray
    bounds: np.ndarray
    x0: np.ndarray

    @property
    def shape(self) -> tuple:
        return self.a.size, self.b.size

    def grid(self, values: np.ndarray) -> np.ndarray:
        """Per-state ``values (n_a * n_b, ...)`` as ``(n_a, n_b, ...)``."""
        values = np.asarray(values)
        return values.reshape(self.shape + values.shape[1:])


def state_slice(spec: PlantSpec, names: tuple, n: int, fixed: np.ndarray | None = None) -> StateSlice:
    """An ``n x n`` grid over the limits of the states ``names``; the others at ``fixed`` (default: the equilibrium).

    Raises
    ------
    ValueError
        For an unknown state, the same state twice, ``n < 1``, or a state without both limits.
    """
    state_names = [state.name for state in spec.states]
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"a slice needs two different states, got {tuple(names)}")
    unknown = [name for name in names if name not in state_names]
    if unknown:
        raise ValueError(f"unknown state {unknown[0]!r} (states: {', '.join(state_names)})")
    if n < 1:
        raise ValueError(f"the grid needs at least one point per axis, got {n}")
    index = tuple(state_names.index(name) for name in names)
    bounds = []
    for i in index:
        state = spec.states[i]
        if state.min is None or state.max is None:
            raise ValueError(f"state {state.name!r} has no limits to span")
        bounds.append((float(state.min), float(state.max)))
    bounds = np.array(bounds)
    centres = (np.arange(n) + 0.5) / n
    a, b = (lo + centres * (hi - lo) for lo, hi in bounds)
    x0 = np.tile(np.asarray(spec.x_eq if fixed is None else fixed, dtype=float), (n * n, 1))
    A, B = np.meshgrid(a, b, indexing="ij")
    x0[:, index[0]], x0[:, index[1]] = A.ravel(), B.ravel()
    return StateSlice(tuple(names), index, a, b, bounds, x0)


@dataclass(frozen=True)
class SafeRegion:
    """Which initial states one backup saves.

    Attributes
    ----------
    backup : str
        Which backup: ``'lqr'``, ``'mpc'``, or a caller's label.
    names : tuple of str
        The safety rows and ``target.reach``.
    g : ndarray, shape (N, len(names))
        Worst value of each row over the horizon, and ``V(x_H) - level`` (<= 0 safe).
    safe : ndarray of bool, shape (N,)
    unconverged_steps : ndarray of int, shape (N,)
        Steps of each trajectory at which the MPC solver returned a nonzero status (zeros for the LQR).
    statuses : dict
        ``{acados status: number of solves}`` over the batch (empty for the LQR).
    seconds : float
        Wall time of the rollouts [s] (the engine's construction excluded).
    """

    backup: str
    names: tuple
    g: np.ndarray
    safe: np.ndarray
    unconverged_steps: np.ndarray
    statuses: dict
    seconds: float

    @property
    def fraction(self) -> float:
        """Share of the states saved."""
        return float(self.safe.mean()) if self.safe.size else float("nan")

    @property
    def margin(self) -> np.ndarray:
        """How far each trajectory stays from its closest limit, ``-max(g)`` per state (in that row's units;
        >= 0 where safe, 0 for a trajectory that touches a limit)."""
        return -self.g.max(axis=1)

    def saved_with_margin(self, margin: float) -> np.ndarray:
        """States whose every row stays at least ``margin`` inside its limit (``g <= -margin``; a negative
        ``margin`` tolerates violations up to ``-margin``)."""
        return self.margin >= margin


def backup_region(problem, x0: np.ndarray, level: float, P: np.ndarray, x_eq: np.ndarray,
                  threads: int | None = None) -> SafeRegion:
    """Roll the backup of ``problem`` (a :class:`~scpo_ctrl.problem.ControlProblem`) alone out from ``x0 (N, nx)``
    over the safety horizon, and judge each trajectory with the rows of ``problem.model`` and ``V(x_H) <= level``."""
    engine = problem.engine(problem.backup_law(), threads=threads)
    return engine_region(engine, problem.backup_kind.type, x0, level, P, x_eq)


def engine_region(engine, backup: str, x0: np.ndarray, level: float, P: np.ndarray, x_eq: np.ndarray) -> SafeRegion:
    """As :func:`backup_region` for a rollout engine already built (a :class:`~scpo_ctrl.sim.rollout.RolloutEngine`,
    or a :class:`~scpo_ctrl.sim.mpc_rollout.MpcRolloutEngine`, whose solver statuses are recorded)."""
    start = time.perf_counter()
    if isinstance(engine, MpcRolloutEngine):
        result = engine.rollout(x0)
        rollouts, status = result.rollouts, result.stats.status
        unconverged = (status != 0).sum(axis=1)
        values, counts = np.unique(status, return_counts=True)
        statuses = {int(value): int(count) for value, count in zip(values, counts)}
    else:
        rollouts = engine.simulate(x0)
        unconverged, statuses = np.zeros(len(x0), dtype=int), {}
    seconds = time.perf_counter() - start
    evaluation = safety_metrics(engine.model, rollouts, level, P, x_eq)
    return SafeRegion(backup, evaluation.names, evaluation.g, np.all(evaluation.g <= 0.0, axis=1), unconverged,
                      statuses, seconds)


@dataclass(frozen=True)
class RegionComparison:
    """Two backups' safe states on the same grid.

    Attributes
    ----------
    states : int
    saved_first, saved_second : int
        States each backup saves.
    only_first, only_second : ndarray of int
        Indices of the states only the first (second) backup saves.
    """

    states: int
    saved_first: int
    saved_second: int
    only_first: np.ndarray
    only_second: np.ndarray


def compare_regions(first: SafeRegion, second: SafeRegion) -> RegionComparison:
    """Counts and the states on which ``first`` and ``second`` disagree."""
    if first.safe.shape != second.safe.shape:
        raise ValueError(f"the regions have {first.safe.size} and {second.safe.size} states")
    return RegionComparison(
        states=int(first.safe.size), saved_first=int(first.safe.sum()), saved_second=int(second.safe.sum()),
        only_first=np.flatnonzero(first.safe & ~second.safe), only_second=np.flatnonzero(second.safe & ~first.safe),
    )
