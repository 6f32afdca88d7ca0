"""The verification loop: grow SCPO's validation set with the verifier's counterexamples.

SCPO guarantees its rows on the validation initial states only. Each round of
this loop searches the whole initial box for initial states where the
current iterate (the float64 law) breaks a row SCPO keeps, with its margin:

1. a Monte Carlo of closed loops from a scrambled Halton set of the box
   (a new seed each round) and the box's corners (for many plants the extreme
   closed loops start there, and a local search ends there);
2. falsification (L-BFGS-B with CasADi gradients through the rollout,
   :func:`~scpo_ctrl.verify.falsify.search`) from the Monte Carlo's worst states;
3. for affine plants, formal reachability of the deployed float32 law
   (:func:`~scpo_ctrl.verify.reach.analyse`): the worst sampled state of each
   cell it cannot prove.

The worst of these states join the validation set (those from which the
backup itself breaks a plant row cannot be certified with this backup and
are counted, not added). If the iterate breaks a row on the enlarged set, it
retreats toward the backup: the network's last layer is scaled by the largest
``s`` in [0, 1] that is safe on the enlarged set (``s = 0`` is the backup,
safe there by construction), and SCPO continues from it. Every accepted
iterate stays safe on the validation set as it stood when it was accepted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.stats import qmc

from .export.law import law_from_policy
from .scpo.control import ControlAdaptation
from .sim.initial_states import search_corners
from .verify import falsify, reach

RETREAT_GRID = 17  # residual scales tried at once (0, 1/16, ..., 1), then refined by bisection
RETREAT_BISECTIONS = 8
SOURCES = ("monte_carlo", "falsification", "reachability")  # where a round's candidate states come from
CELL_GROUP = "unproven cell"  # added_by_group's key for states added because reachability left their cell unproven
#: the loop's own budgets, not verification/campaign.yaml's: they shape the trained law (not the evidence about
#: it), and adaptation.json records LoopSettings; so editing verify's campaign never changes what adapt trains.
#: Reachability grid per state count (the same numbers as verify's default campaign today).
LOOP_CELLS_PER_AXIS = {1: 64, 2: 16, 3: 6, 4: 4}
LOOP_CELLS_PER_AXIS_BEYOND = 2


def reach_cells_per_axis(nx: int) -> int:
    """The loop's reachability grid for ``nx`` states (cells per axis)."""
    return LOOP_CELLS_PER_AXIS.get(nx, LOOP_CELLS_PER_AXIS_BEYOND)


@dataclass(frozen=True)
class LoopSettings:
    """How often and how hard the loop searches.

    Attributes
    ----------
    every : int
        A round after every ``every`` iterations (and when SCPO stalls).
    samples : int
        Monte Carlo initial states per round (Halton points; the box's corners come on top).
    add_per_round : int
        Most states added to the validation set per round.
    falsify_starts : int
        Monte Carlo states per row the falsifier starts from (plus as many random ones).
    reach_depth : int
        Bisections of a failing cell in the reachability analysis.
    closing_passes : int
        Searches of the run's last round (and of a round on a stall): while a search finds a state
        breaking a row, every such state joins the validation set, the iterate retreats, and a fresh
        search (new Monte Carlo points, new falsifier starts) runs, up to this many in all.
    falsify_iterations : int
        L-BFGS-B iterations per falsifier start.
    reach_cells_per_axis : int or None
        The reachability grid before bisection (cells per axis of the initial box); None: by the plant's
        state count (:func:`reach_cells_per_axis`), which ``adapt`` fills in so that adaptation.json
        records the number used.
    """

    every: int = 25
    samples: int = 2048
    add_per_round: int = 32
    falsify_starts: int = 2
    reach_depth: int = 2
    closing_passes: int = 3
    falsify_iterations: int = 30
    reach_cells_per_axis: int | None = None


@dataclass(frozen=True)
class RoundResult:
    """One round, as recorded in ``training.jsonl`` and ``adaptation.json``.

    Attributes
    ----------
    iteration : int
        The iteration after which the round ran.
    examined : int
        Initial states whose closed loop was evaluated.
    violating : int
        Of those, how many break a row (with its margin) under the current iterate.
    added : ndarray, shape (a, nx)
        States added to the validation set.
    backup_unsafe : int
        States from which the backup itself breaks a plant row (not added).
    falsified : bool
        True when the falsifier found an initial state whose closed loop breaks a plant row or misses
        the target set (with the current iterate, before any retreat).
    proven_fraction : float or None
        Fraction of the box reachability proved for the current iterate (None: not affine).
    residual_scale : float
        The scale s kept by the retreat (1: the iterate stayed as it was).
    validation_states : int
        The size of the validation set after the round.
    seconds : float
    findings : dict
        Per source of candidates (:data:`SOURCES`, those that ran): ``{"examined": n, "violating": m}``,
        the distinct states it contributed and how many of them break a row SCPO keeps.
    added_by_group : dict
        States added, by the row group whose worst violators they were picked as
        (:data:`CELL_GROUP`: from an unproven cell, breaking no row); sums to ``len(added)``.
    unproven_cells : int or None
        Cells reachability left unproven (None: reachability did not run).
    passes : int
        Searches in the round (more than one only in a closing round that kept finding violations).
    violating_last_pass : int
        States breaking a row found by the round's last search (0: the iterate it leaves was searched
        and nothing was found; otherwise it retreated past what that search found, unsearched since).

    ``examined``, ``backup_unsafe``, ``findings`` and ``added_by_group`` sum over the passes;
    ``violating``, ``falsified``, ``proven_fraction`` and ``unproven_cells`` are the first search's (the
    iterate as trained); ``residual_scale`` is the product of the passes' retreats.
    """

    iteration: int
    examined: int
    violating: int
    added: np.ndarray
    backup_unsafe: int
    falsified: bool
    proven_fraction: float | None
    residual_scale: float
    validation_states: int
    seconds: float
    findings: dict = field(default_factory=dict)
    added_by_group: dict = field(default_factory=dict)
    unproven_cells: int | None = None
    passes: int = 1
    violating_last_pass: int | None = None

    @property
    def added_violators(self) -> int:
        """States added because they break a row SCPO keeps (not unproven cells' states that break nothing,
        and never states from which the backup itself breaks a row: those are not added)."""
        return int(sum(n for group, n in self.added_by_group.items() if group != CELL_GROUP))

    @property
    def clean(self) -> bool:
        """Nothing found: no state added, nothing falsified, and (affine plants) the whole box proven."""
        proven = self.proven_fraction is None or self.proven_fraction >= 1.0 - 1e-12
        return self.added.shape[0] == 0 and not self.falsified and proven

    def to_dict(self) -> dict:
        return {
            "iteration": self.iteration, "examined": self.examined, "violating": self.violating,
            "added": int(self.added.shape[0]), "added_states": self.added.tolist(),
            "backup_unsafe": self.backup_unsafe, "falsified": self.falsified,
            "proven_fraction": self.proven_fraction, "residual_scale": self.residual_scale,
            "validation_states": self.validation_states, "seconds": self.seconds,
            "findings": {name: dict(counts) for name, counts in self.findings.items()},
            "added_by_group": dict(self.added_by_group), "unproven_cells": self.unproven_cells,
            "passes": self.passes,
            "violating_last_pass": self.violating if self.violating_last_pass is None else self.violating_last_pass,
        }


def initial_box(adaptation: ControlAdaptation) -> np.ndarray:
    """The box ``(nx, 2)`` the plant file's validation set is drawn from (its points' bounding box otherwise)."""
    initial = adaptation.problem.spec.safety.initial_states
    if initial.box is not None:
        return np.array(initial.box, dtype=float)
    points = np.asarray(initial.points, dtype=float)
    return np.column_stack([points.min(axis=0), points.max(axis=0)])


def scale_residual(adaptation: ControlAdaptation, theta: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Parameter vectors ``(len(s), d)`` whose residual is ``s`` times theta's (the last layer scaled)."""
    sizes = adaptation.policy.layout.sizes
    last = sizes[-1] * sizes[-2] + sizes[-1]
    thetas = np.repeat(np.asarray(theta, dtype=float)[None, :], len(s), axis=0)
    thetas[:, -last:] *= np.asarray(s, dtype=float)[:, None]
    return thetas


def run_round(adaptation: ControlAdaptation, theta: np.ndarray, iteration: int, round_index: int,
              settings: LoopSettings, seed: int, closing: bool = False) -> tuple[RoundResult, np.ndarray]:
    """Search for counterexamples, grow the validation set, retreat if needed.

    A closing round (the run's last, or on a stall) searches again while its last search added a
    violating state (and so retreated), adding every one it finds, up to ``settings.closing_passes``
    searches, so the iterate it leaves was searched as it is whenever the round ends clean. States from
    which the backup itself breaks a row are never added and do not prolong the round.

    Returns the round's record and the parameters to continue from. The
    adaptation's validation set is enlarged in place (:meth:`ControlAdaptation.set_states`).
    """
    start = time.perf_counter()
    record, theta = _search(adaptation, theta, iteration, round_index, settings, seed, settings.add_per_round)
    passes, last = 1, record
    while closing and passes < settings.closing_passes and last.added_violators:
        # every state breaking a row joins: the next search must not find the same ones again
        last, theta = _search(adaptation, theta, iteration, round_index + 10_000 * passes, settings, seed,
                              settings.samples)
        record, passes = _combined(record, last), passes + 1
    return replace(record, seconds=time.perf_counter() - start, passes=passes,
                   violating_last_pass=last.violating), theta


def _combined(first: RoundResult, later: RoundResult) -> RoundResult:
    """Two searches of one round as one record (see :class:`RoundResult` for which fields add up)."""
    def summed(a: dict, b: dict) -> dict:
        return {key: _sum_counts(a.get(key), b.get(key)) for key in {**a, **b}}

    return replace(
        first, examined=first.examined + later.examined, added=np.concatenate([first.added, later.added]),
        backup_unsafe=first.backup_unsafe + later.backup_unsafe,
        residual_scale=first.residual_scale * later.residual_scale, validation_states=later.validation_states,
        findings=summed(first.findings, later.findings), added_by_group=summed(first.added_by_group,
                                                                             later.added_by_group))


def _sum_counts(a, b):
    """``a + b`` for counts, or key by key for dicts of counts; a missing side counts as zero."""
    if isinstance(a, dict) or isinstance(b, dict):
        a, b = a or {}, b or {}
        return {key: a.get(key, 0) + b.get(key, 0) for key in {**a, **b}}
    return (a or 0) + (b or 0)


def _search(adaptation: ControlAdaptation, theta: np.ndarray, iteration: int, round_index: int,
            settings: LoopSettings, seed: int, budget: int) -> tuple[RoundResult, np.ndarray]:
    """One search of the box (its random draws seeded by ``round_index``, distinct per search), at most
    ``budget`` states added, then the retreat if a row breaks."""
    start = time.perf_counter()
    box = initial_box(adaptation)
    nx = box.shape[0]
    halton = qmc.Halton(d=nx, scramble=True, seed=seed + 1000 + round_index)
    sampled = box[:, 0] + halton.random(settings.samples) * (box[:, 1] - box[:, 0])
    corners = search_corners(box, settings.samples)
    candidates = {"monte_carlo": np.concatenate([corners, sampled])}
    _, plant_worst = adaptation.violations(candidates["monte_carlo"], theta)
    cell_states = np.zeros((0, nx))

    falsified = False
    if adaptation.closed_form:
        candidates["falsification"], falsified = _falsify(adaptation, theta, box, candidates["monte_carlo"],
                                                          plant_worst, settings, seed + round_index)
    proven_fraction, unproven_cells = None, None
    if adaptation.problem.model.dynamics_affine and adaptation.closed_form:
        cell_states, proven_fraction, unproven_cells = _unproven_cells(adaptation, theta, box, settings)
        candidates["reachability"] = cell_states

    source = np.concatenate([np.full(len(states), name, dtype=object) for name, states in candidates.items()])
    keep = _distinct(np.concatenate(list(candidates.values())), box, known=adaptation.x0)
    states, source = np.concatenate(list(candidates.values()))[keep], source[keep]
    per_group = adaptation.violations(states, theta)[0]
    backup_safe = np.all(adaptation.violations(states, np.zeros(adaptation.dimension), backup_rows_only=True)[0]
                         <= 0.0, axis=1)
    breaks = np.any(per_group > 0.0, axis=1)
    violating = int(np.sum(breaks))
    # unproven cells' worst states join even where they break nothing: rows there are what a proof needs
    from_cells = np.zeros(len(states), dtype=bool)
    if cell_states.shape[0]:
        from_cells = np.any(np.all(np.isclose(states[:, None, :], cell_states[None, :, :], rtol=0, atol=1e-12),
                                   axis=2), axis=1)
    pick, queue = _pick(per_group, backup_safe, from_cells, budget)
    added = states[pick]
    groups = tuple(adaptation.group_names) + (CELL_GROUP,)
    added_by_group = {name: int(np.sum(queue == index)) for index, name in enumerate(groups)}
    findings = {name: {"examined": int(np.sum(source == name)), "violating": int(np.sum(breaks & (source == name)))}
                for name in candidates}

    scale = 1.0
    if added.shape[0]:
        adaptation.set_states(np.concatenate([adaptation.x0, added]))
        theta, scale = retreat(adaptation, theta)
    unusable = int(np.sum((breaks | from_cells) & ~backup_safe))
    record = RoundResult(iteration, int(states.shape[0]), violating, added, unusable,
                         bool(falsified), proven_fraction, scale, adaptation.n_states, time.perf_counter() - start,
                         findings, added_by_group, unproven_cells)
    return record, theta


def _distinct(states: np.ndarray, box: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``states`` without repeats (to 1e-9 of the box's width), in their first order, leaving out
    those equal to a ``known`` state (the validation set's: SCPO keeps their rows, with their margins as
    :meth:`~scpo_ctrl.scpo.control.ControlAdaptation.set_states` sets them, so they are not news)."""
    width = np.where(box[:, 1] > box[:, 0], box[:, 1] - box[:, 0], 1.0)

    def keys(X: np.ndarray) -> np.ndarray:
        return np.round((X - box[:, 0]) / width / 1e-9)

    own = keys(states)
    _, first = np.unique(own, axis=0, return_index=True)
    first = np.sort(first)
    if known is None or len(known) == 0:
        return first
    seen = {tuple(row) for row in keys(np.asarray(known, dtype=float))}
    return np.array([i for i in first if tuple(own[i]) not in seen], dtype=int)


def _pick(per_group: np.ndarray, usable: np.ndarray, from_cells: np.ndarray, budget: int) -> tuple:
    """Indices of the states to add: the worst violator of each group in turn, then unproven cells' states.

    Returns the indices and, for each, the queue it was taken from (a group's index; ``n_groups``
    for the unproven cells).

    Taking the groups in turn keeps one kind of row (say the envelope, whose violations are large in
    units of c) from crowding out another (a state limit broken at a corner of the box).
    """
    chosen: list[int] = []
    taken_from: list[int] = []
    queues = []
    for group in range(per_group.shape[1]):
        candidates = np.flatnonzero((per_group[:, group] > 0.0) & usable)
        queues.append(list(candidates[np.argsort(-per_group[candidates, group], kind="stable")]))
    queues.append(list(np.flatnonzero(from_cells & usable & ~np.any(per_group > 0.0, axis=1))))
    while len(chosen) < budget and any(queues):
        for index, queue in enumerate(queues):
            while queue and queue[0] in chosen:
                queue.pop(0)
            if queue and len(chosen) < budget:
                chosen.append(int(queue.pop(0)))
                taken_from.append(index)
    return np.array(chosen, dtype=int), np.array(taken_from, dtype=int)


def retreat(adaptation: ControlAdaptation, theta: np.ndarray) -> tuple[np.ndarray, float]:
    """The largest residual scale ``s`` in [0, 1] whose iterate keeps every row (with margins); returns (theta_s, s)."""
    def safe(s: np.ndarray) -> np.ndarray:
        rows = adaptation.constraints(scale_residual(adaptation, theta, s))
        return np.all(rows + adaptation.margins[None, :] <= 0.0, axis=1)

    grid = np.linspace(0.0, 1.0, RETREAT_GRID)
    ok = safe(grid)
    if ok[-1]:
        return np.asarray(theta, dtype=float).copy(), 1.0
    # the first unsafe scale bounds the search: safety need not be monotone in s, keep the safe side
    first_bad = int(np.argmin(ok))
    lo, hi = grid[first_bad - 1] if first_bad > 0 else 0.0, grid[first_bad]
    for _ in range(RETREAT_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if safe(np.array([mid]))[0]:
            lo = mid
        else:
            hi = mid
    return scale_residual(adaptation, theta, np.array([lo]))[0], float(lo)


def _falsify(adaptation, theta, box, states, plant_worst, settings, seed) -> tuple[np.ndarray, bool]:
    """The falsifier's worst initial state per plant row and the reach row, and whether any is a violation."""
    model = adaptation.problem.model
    names = [row.name for row in model.rows] + [falsify.REACH]
    starts = {}
    for index, name in enumerate(names):
        order = np.argsort(-plant_worst[:, index], kind="stable")[: settings.falsify_starts]
        starts[name] = states[order]
    results = falsify.search(model, adaptation.policy, theta, adaptation.problem.spec.safety.horizon, box, starts,
                             random_starts=settings.falsify_starts, seed=seed,
                             max_iterations=settings.falsify_iterations)
    found = np.array([r.x0 for r in results])
    return found, any(r.value > 0.0 for r in results)


def _unproven_cells(adaptation, theta, box, settings) -> tuple[np.ndarray, float, int]:
    """The worst corner or centre of every cell reachability leaves unproven, the proven fraction,
    and the number of unproven cells."""
    spec = adaptation.problem.spec
    law = law_from_policy(adaptation.policy, theta, spec)
    cells = settings.reach_cells_per_axis or reach_cells_per_axis(law.nx)
    result = reach.analyse(law, adaptation.problem.model, box[:, 0], box[:, 1], spec.safety.horizon,
                           reach.ReachSettings(cells_per_axis=cells, max_depth=settings.reach_depth))
    volume = float(np.prod(box[:, 1] - box[:, 0]))
    proven = float(sum(np.prod(c.hi - c.lo) for c in result.cells if c.verified)) / volume
    if not result.target_invariant:
        proven = 0.0
    failing = [c for c in result.cells if not c.verified]
    if not failing:
        return np.zeros((0, box.shape[0])), proven, 0
    nx = box.shape[0]
    corners = np.array(np.meshgrid(*[[0.0, 1.0]] * nx, indexing="ij")).reshape(nx, -1).T
    offsets = np.concatenate([corners, np.full((1, nx), 0.5)])  # (2^nx + 1, nx)
    lo = np.array([c.lo for c in failing])
    hi = np.array([c.hi for c in failing])
    points = lo[:, None, :] + offsets[None, :, :] * (hi - lo)[:, None, :]  # (F, P, nx)
    flat = points.reshape(-1, nx)
    violation = adaptation.violations(flat, theta)[0].max(axis=1).reshape(len(failing), -1)
    worst = points[np.arange(len(failing)), np.argmax(violation, axis=1)]
    order = np.argsort(-violation.max(axis=1), kind="stable")
    return worst[order][: settings.add_per_round], proven, len(failing)
