"""Reachability of nonlinear plants: proven fraction, cells and time of the first-order model with interval remainder.

    .venv/bin/python benchmarks/reach_nonlinear.py --run RUN_DIR [--settings 16:2 16:4] [--soundness 20000]

RUN_DIR: an adapted run of a nonlinear plant (`scpo-ctrl adapt models/pendulum.yaml --out RUN_DIR`; the
analysis reads policy.npz and plant.yaml, no export needed). ``--settings CELLS:DEPTH ...`` are the grids
and bisection depths to run (default: `verify`'s grid for the plant's dimension at depths 0 and 2), with
`verify`'s zonotope order limit for the dimension.

Printed per setting: the argument, the target level c_T / c whose robust invariance is proven, the verified
fraction of the box, final cells, wall seconds, seconds per final cell, and the failing cells' reasons.
With ``--soundness N``: N random closed loops with the float64 law are checked against the sets of the last
setting (the slow test does 100,000 with the exported float32 C).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.reach_bounds import verified_fraction  # noqa: E402
from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.export.law import evaluate, law_from_run  # noqa: E402
from scpo_ctrl.plant.model import build_plant  # noqa: E402
from scpo_ctrl.verify import reach  # noqa: E402
from scpo_ctrl.verify.run import max_generators  # noqa: E402

VERIFY_CELLS = {1: 64, 2: 16, 3: 6, 4: 4}  # verify's default grid per state dimension


def failure_summary(result: reach.ReachResult, top: int = 3) -> str:
    """The most common (reason, step) of the failing cells."""
    counts = collections.Counter(c.failed_because for c in result.cells if not c.verified)
    return ", ".join(f"{reason}: {n}" for reason, n in counts.most_common(top)) or "none"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="adapted run directory (nonlinear plant)")
    parser.add_argument("--settings", nargs="+", default=None, help="CELLS:DEPTH pairs")
    parser.add_argument("--soundness", type=int, default=0, help="closed loops to check against the last sets")
    args = parser.parse_args(argv)
    run = Path(args.run)
    spec = load_plant_spec(run / "plant.yaml")
    law, model = law_from_run(run), build_plant(spec)
    box = np.asarray(spec.safety.initial_states.box, dtype=float)
    cells = VERIFY_CELLS.get(law.nx, 2)
    settings = args.settings or [f"{cells}:0", f"{cells}:2"]
    print(f"run {run}: {spec.name}, box {box.tolist()}, horizon {spec.safety.horizon}")
    print("| cells per axis | depth | argument | c_T / c | verified fraction of the box | final cells | wall s "
          "| s per cell | failing cells |")
    print("|---|---|---|---|---|---|---|---|---|")
    result = None
    for setting in settings:
        n, depth = (int(v) for v in setting.split(":"))
        start = time.perf_counter()
        result = reach.analyse(law, model, box[:, 0], box[:, 1], spec.safety.horizon,
                               reach.ReachSettings(cells_per_axis=n, max_depth=depth,
                                                   max_generators=max_generators(law.nx)))
        seconds = time.perf_counter() - start
        print(f"| {n} | {depth} | {result.argument} | {result.target_level / law.c:.3g} "
              f"| {verified_fraction(result, box):.4f} | {len(result.cells)} | {seconds:.1f} "
              f"| {seconds / len(result.cells):.4f} | {failure_summary(result)} |", flush=True)
    if args.soundness and result is not None:
        sys.path.insert(0, str(ROOT / "tests"))
        from tests.test_verify import _assert_closed_loops_inside_sets

        start = time.perf_counter()
        _assert_closed_loops_inside_sets(result, model, law, lambda X: evaluate(law, X).u, box,
                                         spec.safety.horizon, args.soundness)
        print(f"{args.soundness} float64-law closed loops inside the sets ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
