"""Reachability: interval bounds of the residual against affine ones, on the same law and box.

    .venv/bin/python benchmarks/reach_bounds.py --run RUN_DIR [--cells 16] [--depths 2 4] [--variants affine:sensitive]

RUN_DIR: an adapted run of an affine plant (`scpo-ctrl adapt models/double_integrator.yaml --out RUN_DIR`;
no export needed: the analysis reads policy.npz and plant.yaml). For each bisection depth, the analysis
runs with

* ``interval``, ``widest``: the residual bounded over each set's bounding box (interval propagation and
  the mean-value form), failing cells halved along their widest side: the method before affine bounds;
* ``interval``, ``sensitive``: the same bounds, cells halved along the axis that drives the failing row;
* ``affine``, ``widest``: the residual as an affine form in the zonotope's noise symbols;
* ``affine``, ``sensitive``: both (the default).

Printed per variant: verified fraction of the box, final cells, wall seconds, seconds per final cell.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.export.law import law_from_run  # noqa: E402
from scpo_ctrl.plant.model import build_plant  # noqa: E402
from scpo_ctrl.verify import reach  # noqa: E402

VARIANTS = (("interval", "widest"), ("interval", "sensitive"), ("affine", "widest"), ("affine", "sensitive"))


def verified_fraction(result: reach.ReachResult, box: np.ndarray) -> float:
    """Volume of the verified cells over the box's."""
    volume = sum(float(np.prod(c.hi - c.lo)) for c in result.cells if c.verified)
    return volume / float(np.prod(box[:, 1] - box[:, 0]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="adapted run directory (affine plant)")
    parser.add_argument("--cells", type=int, default=16, help="cells per axis (verify's default for nx = 2: 16)")
    parser.add_argument("--depths", type=int, nargs="+", default=[2], help="bisection depths (verify's default: 2)")
    parser.add_argument("--variants", nargs="+", default=[f"{b}:{s}" for b, s in VARIANTS],
                        help="network_bounds:bisect pairs to run (default: all four)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    spec = load_plant_spec(run / "plant.yaml")
    law, model = law_from_run(run), build_plant(spec)
    box = np.asarray(spec.safety.initial_states.box, dtype=float)
    print(f"run {run}: {spec.name}, box {box.tolist()}, horizon {spec.safety.horizon}")
    print("| network bounds | bisection | cells per axis | depth | verified fraction of the box | final cells "
          "| wall s | s per cell |")
    print("|---|---|---|---|---|---|---|---|")
    for depth in args.depths:
        for bounds, bisect in (variant.split(":") for variant in args.variants):
            settings = reach.ReachSettings(cells_per_axis=args.cells, max_depth=depth, network_bounds=bounds,
                                           bisect=bisect)
            start = time.perf_counter()
            result = reach.analyse(law, model, box[:, 0], box[:, 1], spec.safety.horizon, settings)
            seconds = time.perf_counter() - start
            print(f"| {bounds} | {bisect} | {args.cells} | {depth} | {verified_fraction(result, box):.4f} "
                  f"| {len(result.cells)} | {seconds:.1f} | {seconds / len(result.cells):.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
