"""The validation set: the initial states from which safety is certified."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.stats import qmc

from ..config.plant_spec import InitialStateSpec

#: searches of the initial box (check's backup search, the verification loop) add its 2^nx corners up to this nx,
#: and only when they are no more than the search's own sample (see :func:`search_corners`)
MAX_CORNER_DIMENSION = 12


def validation_states(initial: InitialStateSpec) -> np.ndarray:
    """Initial states, shape ``(N, nx)``.

    Explicit points are returned as given. A box gives ``count`` points of a
    scrambled Halton sequence (scipy.stats.qmc) seeded with ``seed``, so the
    same file always gives the same set, followed by the box's ``2^nx`` corners
    when ``corners`` is set (for many plants the extreme trajectories start there).
    """
    if initial.points is not None:
        return np.array(initial.points, dtype=float)
    box = np.asarray(initial.box, dtype=float)
    unit = qmc.Halton(d=box.shape[0], scramble=True, seed=initial.seed).random(initial.count)
    points = box[:, 0] + unit * (box[:, 1] - box[:, 0])
    if initial.corners:
        points = np.concatenate([points, box_corners(box)])
    return points


def box_corners(box: np.ndarray) -> np.ndarray:
    """The ``2^nx`` corners ``(2^nx, nx)`` of ``box (nx, 2)``, the first coordinate varying slowest."""
    box = np.asarray(box, dtype=float)
    choice = np.array(list(itertools.product((0, 1), repeat=box.shape[0])))
    return box[np.arange(box.shape[0]), choice]


def initial_box(initial: InitialStateSpec) -> np.ndarray:
    """The initial-state box ``(nx, 2)``: the file's box, or the bounding box of its explicit points."""
    if initial.box is not None:
        return np.asarray(initial.box, dtype=float)
    points = np.asarray(initial.points, dtype=float)
    return np.stack([points.min(axis=0), points.max(axis=0)], axis=1)


def search_corners(box: np.ndarray, samples: int) -> np.ndarray:
    """The corners a search of ``box (nx, 2)`` with ``samples`` other states adds: all ``2^nx`` when
    ``nx <= MAX_CORNER_DIMENSION`` and ``2^nx <= samples`` (so corners never dominate its cost), else none."""
    nx = np.asarray(box).shape[0]
    if nx > MAX_CORNER_DIMENSION or 2 ** nx > samples:
        return np.zeros((0, nx))
    return box_corners(box)
