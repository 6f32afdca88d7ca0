"""Verification: Monte Carlo throughput with the C in the loop, formal reachability time versus cells, tightness.

    .venv/bin/python benchmarks/verify_performance.py [--run runs/double_integrator]

RUN_DIR must hold an adapted and exported policy (`scpo-ctrl adapt`, `scpo-ctrl export`). Measured here:

* closed-loop steps per second of the Monte Carlo with the exported float32 C in the loop (ctypes batch
  call per step, plant by CasADi map), against the same loop with the numpy float64 reference law;
* reachability wall time, number of cells and verified fraction of the box for several grids, for the
  adapted law and for the backup alone (the network's output set to zero);
* tightness on the backup (which is proven): per cell and step, the computed bounding box's width over
  the spread of 400 sampled closed loops from that cell (1 = exact; the over-approximation factor).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.export.host_library import HostLaw  # noqa: E402
from scpo_ctrl.export.law import evaluate, law_from_run  # noqa: E402
from scpo_ctrl.plant.model import build_plant  # noqa: E402
from scpo_ctrl.verify import reach  # noqa: E402
from scpo_ctrl.sim.closed_loop import simulate  # noqa: E402


def backup_only(law):
    weights, biases = list(law.weights), list(law.biases)
    weights[-1], biases[-1] = np.zeros_like(weights[-1]), np.zeros_like(biases[-1])
    return replace(law, weights=tuple(weights), biases=tuple(biases))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(ROOT / "runs" / "double_integrator"))
    args = parser.parse_args()
    run = Path(args.run)
    law = law_from_run(run)
    spec = load_plant_spec(run / "plant.yaml")
    model = build_plant(spec)
    box = np.asarray(spec.safety.initial_states.box)
    H = spec.safety.horizon
    host = HostLaw(run / "export" / "host" / f"lib{law.name}_policy.so", law.name, law.nx, law.nu, "float32")
    X0 = np.random.default_rng(0).uniform(box[:, 0], box[:, 1], size=(14096, law.nx))
    print(f"plant {law.name}, horizon {H}, network {'-'.join(map(str, law.sizes))}")
    print()
    print("| closed loop | initial states | steps | wall s | steps/s |")
    print("|---|---|---|---|---|")
    for label, controller in (("exported float32 C in the loop", lambda X: host.evaluate(X).u),
                              ("numpy float64 reference law", lambda X: evaluate(law, X).u)):
        start = time.perf_counter()
        simulate(model, controller, X0, H, law.P, law.c, law.x_eq)
        seconds = time.perf_counter() - start
        print(f"| {label} | {len(X0)} | {len(X0) * H} | {seconds:.2f} | {len(X0) * H / seconds:.3g} |")
    print()
    print("| law | cells per axis | bisection depth | final cells | verified fraction of the box | wall s |")
    print("|---|---|---|---|---|---|")
    for label, subject in (("adapted", law), ("backup alone", backup_only(law))):
        for cells, depth in ((8, 0), (16, 0), (32, 0), (16, 2), (32, 2)):
            settings = reach.ReachSettings(cells_per_axis=cells, max_depth=depth)
            result = reach.analyse(subject, model, box[:, 0], box[:, 1], H, settings)
            fraction = sum(np.prod(c.hi - c.lo) for c in result.cells if c.verified) / np.prod(box[:, 1] - box[:, 0])
            print(f"| {label} | {cells} | {depth} | {len(result.cells)} | {fraction:.3f} | {result.seconds:.1f} |",
                  flush=True)
    print()
    # why cells of the adapted law stay unproven: time spent in the gate band, and entry into T
    result = reach.analyse(law, model, box[:, 0], box[:, 1], H, reach.ReachSettings(cells_per_axis=16, max_depth=2))
    lo = np.array([c.lo for c in result.cells])
    hi = np.array([c.hi for c in result.cells])
    proven = np.array([c.verified for c in result.cells])
    starts = np.random.default_rng(2).uniform(box[:, 0], box[:, 1], size=(20000, law.nx))
    cell = np.argmax(np.all((starts[:, None, :] >= lo[None]) & (starts[:, None, :] <= hi[None]), axis=2), axis=1)
    loop = simulate(model, lambda X: evaluate(law, X).u, starts, H, law.P, law.c, law.x_eq, rows=False)
    band = ((loop.level > 1.0) & (loop.level <= law.gate_ratio)).sum(axis=1)
    entry = np.argmax(loop.level <= 1.0, axis=1)
    good = proven[cell]
    print("adapted law, 16 x 16 cells bisected twice: closed loops from 20,000 uniform initial states")
    print("| cells | initial states | median steps in the gate band (1 < V/c <= gate_ratio) | median step of entry into T |")
    print("|---|---|---|---|")
    for label, mask in (("proven", good), ("not proven", ~good)):
        print(f"| {label} | {int(mask.sum())} | {np.median(band[mask]):.0f} | {np.median(entry[mask]):.0f} |")
    print()
    # tightness on the proven backup
    subject = backup_only(law)
    result = reach.analyse(subject, model, box[:, 0], box[:, 1], H, reach.ReachSettings(cells_per_axis=8, max_depth=3))
    pieces = result.pieces
    rng = np.random.default_rng(1)
    ratios = {t: [] for t in (1, 5, 10, 20, 40)}
    for j in range(0, len(result.cells), 7):
        cell = result.cells[j]
        samples = rng.uniform(cell.lo, cell.hi, size=(400, law.nx))
        loop = simulate(model, lambda X: evaluate(subject, X).u, samples, H, law.P, law.c, law.x_eq, rows=False)
        for t in ratios:
            record = (pieces["origin"] == j) & (pieces["step"] == t)
            if record.any():
                width = pieces["hi"][record][0] - pieces["lo"][record][0]
                spread = loop.x[:, t].max(axis=0) - loop.x[:, t].min(axis=0)
                ratios[t].append(width / np.maximum(spread, 1e-12))
    print(f"tightness on the backup ({len(result.cells)} cells, verified: {result.verified}); computed box width / "
          "sampled spread, median over cells [per state]:")
    print("| step | " + " | ".join(law.state_names) + " | cells still outside T |")
    print("|---|" + "---|" * law.nx + "---|")
    for t, values in ratios.items():
        if values:
            median = np.median(np.array(values), axis=0)
            print(f"| {t} | " + " | ".join(f"{v:.2f}" for v in median) + f" | {len(values)} |")


if __name__ == "__main__":
    main()
