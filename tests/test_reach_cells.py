"""Reachability starts each cell from a set that contains the whole cell, rounding included."""

from __future__ import annotations

import numpy as np

from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.export.law import law_from_run
from scpo_ctrl.plant.model import build_plant
from scpo_ctrl.verify import reach


def test_every_cell_lies_inside_its_own_starting_set(adapted_runs):
    """Cell edges like 0.1 and 0.7 make ``(lo + hi) / 2 -+ (hi - lo) / 2`` land an ulp inside the cell; the
    starting set is widened so that no corner of a cell (where closed loops start) is left out of the proof."""
    run = adapted_runs["double_integrator"]
    spec = load_plant_spec(run / "plant.yaml")
    box = np.asarray(spec.safety.initial_states.box)
    lo, hi = box[:, 0] + 0.1 * (box[:, 1] - box[:, 0]), box[:, 0] + 0.7 * (box[:, 1] - box[:, 0])
    result = reach.analyse(law_from_run(run), build_plant(spec), lo, hi, spec.safety.horizon,
                           reach.ReachSettings(cells_per_axis=7, max_depth=0))
    pieces = result.pieces
    start = pieces["step"] == 0
    assert np.sum(start) == len(result.cells) == 49
    for index, cell in enumerate(result.cells):
        first = start & (pieces["origin"] == index)
        assert np.all(pieces["lo"][first] <= cell.lo) and np.all(pieces["hi"][first] >= cell.hi), index
