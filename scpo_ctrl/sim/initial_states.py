"""The validation set: the initial states from which safety is certified."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.stats import qmc

from ..config.plant_spec import InitialStateSpec


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
    nx = box.shape[0]
    unit = qmc.Halton(d=nx, scramble=True, seed=initial.seed).random(initial.count)
    points = box[:, 0] + unit * (box[:, 1] - box[:, 0])
    if initial.corners:
        choice = np.array(list(itertools.product((0, 1), repeat=nx)))
        points = np.concatenate([points, box[np.arange(nx), choice]])
    return points


def initial_box(initial: InitialStateSpec) -> np.ndarray:
    """The initial-state box ``(nx, 2)``: the file's box, or the bounding box of its explicit points."""
    if initial.box is not None:
        return np.asarray(initial.box, dtype=float)
    points = np.asarray(initial.points, dtype=float)
    return np.stack([points.min(axis=0), points.max(axis=0)], axis=1)
