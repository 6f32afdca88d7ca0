"""Reproduce the SCPO paper's two experiments and print the comparison table.

    .venv/bin/python benchmarks/paper/run.py [--regression-iterations 500] [--di-iterations 200]

(1) Regression with harmful supervision: fit 2 sin x + 0.3 x on [-3, 3] with an
MLP 1-32-32-1 under |f| <= 1.4 on a 64-point grid (the clipped target's MSE is
about 0.417). SCPO vs soft penalty (lambda = 1) vs Lagrangian vs unconstrained.
(2) The double integrator imitating its malicious expert (models/double_integrator.yaml), without the
verification loop (the optimizers alone, on the file's validation set),
through `scpo-ctrl adapt`'s library entry point, every method with the file's settings.

Columns: iterations whose iterate violates any constraint row, worst row value
over all iterates, final loss, accepted / rejected / zero steps, wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scpo_ctrl.adapt import AdaptRequest, run_adapt  # noqa: E402
from scpo_ctrl.scpo.optimizer import OptimizerSettings, initial_state, step  # noqa: E402
from scpo_ctrl.scpo.regression import RegressionProblem  # noqa: E402

HEADER = ("| task | method | iterations | violating iterations | worst g | final iterate safe | final loss "
          "| accepted / rejected / zero | wall s |\n|---|---|---|---|---|---|---|---|---|")


def regression(iterations: int) -> list[str]:
    problem = RegressionProblem()
    rows = []
    for method in ("scpo", "penalty", "lagrangian", "unconstrained"):
        settings = OptimizerSettings(iterations=iterations, step_size=0.05, trust_radius=0.3, probe_norm=0.01,
                                     gradient_pieces=8, random_pairs=4, method=method, penalty_weight=1.0,
                                     dual_step=0.05, seed=0)
        state = initial_state(problem, problem.initial_theta(0), settings)
        start = time.perf_counter()
        g_max, accepted, zero = [], 0, 0
        for _ in range(iterations):
            state, record = step(problem, state, settings)
            g_max.append(record.g_max)
            accepted += record.accepted
            zero += record.reason.startswith("zero")
        seconds = time.perf_counter() - start
        violating = sum(g > 0 for g in g_max)
        safe = "yes" if np.all(state.g <= 0) else "no"
        rows.append(f"| regression | {method} | {iterations} | {violating} | {max(g_max):.3g} | {safe} | {state.loss:.4f} "
                    f"| {accepted} / {iterations - accepted - zero} / {zero} | {seconds:.1f} |")
    return rows


def double_integrator(iterations: int) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for method in ("scpo", "penalty", "lagrangian", "unconstrained"):
            request = AdaptRequest(plant=str(ROOT / "models" / "double_integrator.yaml"), out=f"{directory}/{method}",
                                   iterations=iterations, method=method, progress=False,
                                   verify_loop=False)
            start = time.perf_counter()
            summary = run_adapt(request).summary.to_json()
            seconds = time.perf_counter() - start
            rows.append(
                f"| double integrator, malicious expert | {method} | {summary['iterations']} "
                f"| {summary['violating_iterations']} | {summary['worst_g']:.3g} "
                f"| {'yes' if summary['final_safe'] else 'no'} | {summary['final_loss']:.4f} "
                f"(backup {summary['initial_loss']:.4f}, ratio {summary['loss_ratio']:.3f}) "
                f"| {summary['accepted']} / {summary['rejected']} / {summary['zero_steps']} | {seconds:.1f} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--regression-iterations", type=int, default=500)
    parser.add_argument("--di-iterations", type=int, default=200)
    args = parser.parse_args()
    print(HEADER)
    for row in regression(args.regression_iterations) + double_integrator(args.di_iterations):
        print(row, flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
