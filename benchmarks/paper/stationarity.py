"""Is SCPO's last regression iterate a stationary point of the constrained problem?

    .venv/bin/python benchmarks/paper/stationarity.py [--iterations 500]

Runs SCPO on the paper's regression task with the settings of ``run.py`` (raw = -0.05 grad L
clipped to r = 0.3, probes 0.01, 8 gradient pieces, 4 random pairs), prints the loss every 50
iterations, then, at the last iterate, takes the rows within 1e-3 of 0 as active, computes their
gradients (``weighted_constraint_gradient`` with a unit weight: a diagnostic, SCPO never uses
them) and prints the KKT residual ``min_{lambda >= 0} |grad L + sum_i lambda_i grad g_i|`` relative
to ``|grad L|``. A small ratio says no local step, certified or not, can lower the loss much from
there: a better final loss needs another basin, not a better step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scpo_ctrl.scpo.optimizer import OptimizerSettings, initial_state, step  # noqa: E402
from scpo_ctrl.scpo.regression import RegressionProblem  # noqa: E402

ACTIVE = 1e-3


def kkt_ratio(problem: RegressionProblem, theta: np.ndarray) -> tuple[float, int]:
    """KKT residual over |grad L| at theta, and the number of active rows."""
    g = problem.constraints(theta[None, :])[0]
    active = np.flatnonzero(g > -ACTIVE)
    _, gradient = problem.loss_and_gradient(theta)
    if active.size == 0:
        return 1.0, 0
    J = []
    for row in active:
        weights = np.zeros(g.size)
        weights[row] = 1.0
        J.append(problem.weighted_constraint_gradient(theta, weights)[1])
    _, residual = nnls(np.array(J).T, -gradient)
    return residual / float(np.linalg.norm(gradient)), int(active.size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=500)
    args = parser.parse_args()
    problem = RegressionProblem()
    settings = OptimizerSettings(iterations=args.iterations, step_size=0.05, trust_radius=0.3, probe_norm=0.01,
                                 gradient_pieces=8, random_pairs=4, seed=0)
    state = initial_state(problem, problem.initial_theta(0), settings)
    start = time.perf_counter()
    violating = 0
    print("| iteration | loss | step norm | active rows |\n|---|---|---|---|")
    for _ in range(args.iterations):
        state, record = step(problem, state, settings)
        violating += record.g_max > 0.0
        if state.iteration % 50 == 0 or state.iteration == args.iterations:
            print(f"| {state.iteration} | {state.loss:.4f} | {record.step_norm:.2g} "
                  f"| {int(np.sum(state.g > -ACTIVE))} |", flush=True)
    seconds = time.perf_counter() - start
    ratio, active = kkt_ratio(problem, state.theta)
    print(f"\nfinal loss {state.loss:.4f}, violating iterations {violating}, KKT residual / |grad L| {ratio:.4f} "
          f"with {active} active rows, {seconds:.0f} s")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
