"""SCPO performance: projection (QCQP) solve times, per-iteration breakdown, and scaling with the weights.

    .venv/bin/python benchmarks/scpo_performance.py [--widths 16,32,64,128] [--iterations 10]

(1) `project` on random instances shaped like SCPO's (unit-probe bank of m
columns, k rows, a few near-active), median and 90th percentile over 30 each.
(2) The double integrator's default adaptation for each hidden width (two
layers): mean seconds per iteration, split into gradient, bank evaluation
(the batched rollouts of every probe), projection, line search, validation,
after one warm-up iteration; and the ratio of time per iteration to the
number of weights d, normalised to the smallest width.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.problem import build_problem  # noqa: E402
from scpo_ctrl.scpo.control import ControlAdaptation, residual_policy  # noqa: E402
from scpo_ctrl.scpo.optimizer import OptimizerSettings, initial_state, step  # noqa: E402
from scpo_ctrl.scpo.projection import project  # noqa: E402


def projection_times() -> None:
    rng = np.random.default_rng(0)
    print("| m | k | median ms | p90 ms |\n|---|---|---|---|")
    for m in (6, 12):
        for k in (128, 1000, 10000):
            times = []
            for _ in range(30):
                D = rng.standard_normal((200, m))
                D *= 0.01 / np.linalg.norm(D, axis=0)
                raw = D[:, 0] * 25 + rng.standard_normal(200) * 0.002
                g0 = -rng.uniform(0.0, 0.5, size=k)
                g0[:4] = -rng.uniform(0, 1e-4, size=4)
                G = g0[:, None] + rng.standard_normal((k, m)) * 0.002
                l = np.full(k, 5.0)
                start = time.perf_counter()
                project(D, raw, g0, G, l, 0.3)
                times.append(time.perf_counter() - start)
            print(f"| {m} | {k} | {1e3 * np.median(times):.2f} | {1e3 * np.percentile(times, 90):.2f} |", flush=True)


def iteration_breakdown(widths: list, iterations: int) -> None:
    problem = build_problem(load_plant_spec(ROOT / "models" / "double_integrator.yaml"))
    print("\n| hidden | weights d | build s | s / iteration | gradient | bank evaluation | projection | line search "
          "| validation | (s/iter)/d vs smallest |\n|---|---|---|---|---|---|---|---|---|---|")
    base = None
    for width in widths:
        policy = residual_policy(problem, (width, width))
        start = time.perf_counter()
        adaptation = ControlAdaptation(problem, policy)
        settings = OptimizerSettings(iterations=iterations, step_size=1.0, trust_radius=0.5)
        state = initial_state(adaptation, policy.initial_theta(0), settings)
        state, _ = step(adaptation, state, settings)  # warm-up: maps are built on first use
        build = time.perf_counter() - start
        totals: dict[str, float] = {}
        start = time.perf_counter()
        for _ in range(iterations):
            state, record = step(adaptation, state, settings)
            for key, value in record.timing.items():
                totals[key] = totals.get(key, 0.0) + value
        per_iteration = (time.perf_counter() - start) / iterations
        d = policy.n_theta
        per_weight = per_iteration / d
        base = base or per_weight
        parts = " | ".join(f"{totals.get(key, 0.0) / iterations:.3f}" for key in
                           ("gradient", "bank_evaluation", "projection", "line_search", "validation"))
        print(f"| {width}x{width} | {d} | {build:.1f} | {per_iteration:.3f} | {parts} | {per_weight / base:.2f} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", default="16,32,64,128")
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    projection_times()
    iteration_breakdown([int(w) for w in args.widths.split(",")], args.iterations)


if __name__ == "__main__":
    main()
