"""Why SCPO stalls on the double integrator: how steep is the active reach row?

    .venv/bin/python benchmarks/reach_row_sensitivity.py [--iterations 30]

Runs SCPO on models/double_integrator.yaml for a few iterations (to where it
stalls), then, at the last iterate and along the normalised negative loss
gradient d, prints for probe sizes h the largest second difference
``|g(theta + h d) + g(theta - h d) - 2 g(theta)| / h^2`` of the reach rows and
of the other rows, and the central slope of the most curved reach row. A
smooth row gives second differences that settle as h shrinks; a row that
behaves like a switch gives values growing like 1/h^2. Last, the trajectory
of the most active reach row: V/c every 5 steps (1 is the target set's
boundary, 2 the end of the gate band).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scpo_ctrl.adapt import AdaptRequest, run_adapt  # noqa: E402
from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.policy.residual import ResidualPolicy  # noqa: E402
from scpo_ctrl.problem import build_problem  # noqa: E402
from scpo_ctrl.scpo.control import ControlAdaptation  # noqa: E402

PLANT = ROOT / "models" / "double_integrator.yaml"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        summary = run_adapt(AdaptRequest(plant=str(PLANT), out=directory, iterations=args.iterations,
                                         progress=False)).summary
        policy, theta, _ = ResidualPolicy.load(Path(directory) / "policy.npz")
    problem = build_problem(load_plant_spec(PLANT))
    adaptation = ControlAdaptation(problem, policy)
    reach = adaptation.row_groups == len(adaptation.group_names) - 1
    g0 = adaptation.constraints(theta[None, :])[0]
    _, gradient = adaptation.loss_and_gradient(theta)
    d = -gradient / np.linalg.norm(gradient)
    print(f"after {summary['iterations']} SCPO iterations: loss ratio {summary['loss_ratio']:.3f}, "
          f"l(target.reach) = {summary['l_final']['target.reach']:.3g}, largest reach row {g0[reach].max():.3g}\n")
    print("| h | max second difference, reach rows | central slope of that row | max second difference, other rows |")
    print("|---|---|---|---|")
    for h in (1e-2, 1e-3, 1e-4, 1e-5):
        G = adaptation.constraints(np.stack([theta + h * d, theta - h * d]))
        second = np.abs(G[0] + G[1] - 2.0 * g0) / h**2
        row = int(np.argmax(np.where(reach, second, -np.inf)))
        slope = (G[0, row] - G[1, row]) / (2.0 * h)
        print(f"| {h:.0e} | {second[reach].max():.3g} | {slope:.3g} | {second[~reach].max():.3g} |")
    state = int(np.argmax(np.where(reach, g0, -np.inf))) // (adaptation.row_groups.size // adaptation.n_states)
    x = adaptation.engine.simulate(problem.x0[state:state + 1], theta).x[0]
    ratio = problem.target.value(x) / problem.target.c
    print(f"\nmost active reach row: initial state {np.round(problem.x0[state], 3).tolist()}; V/c every 5 steps: "
          f"{np.round(ratio[::5], 2).tolist()}")


if __name__ == "__main__":
    main()
