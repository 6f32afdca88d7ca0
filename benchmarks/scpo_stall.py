"""Where SCPO stops on the double integrator, and why: the KKT residual at its last iterate, its
sensitivity to the settings, and the Lagrangian baseline's best iterate that keeps every row.

    .venv/bin/python benchmarks/scpo_stall.py [--iterations 100] [--lagrangian-iterations 200]

SCPO runs without the verification loop on the plant file's validation set. At its last iterate the
rows within 1e-3 of their margin are taken as active, their gradients are computed by CasADi AD (a
diagnostic only: SCPO itself never uses them) and the KKT residual
``min_{lambda >= 0} |grad L + sum_i lambda_i grad g_i|`` is printed relative to ``|grad L|``: a small
ratio says the iterate is (nearly) a stationary point of the constrained problem, so no certified
local step can lower the loss much, whatever the bank. Variants change one setting each (plant-file
variants are written to a temporary directory; models/ is not touched). The Lagrangian baseline runs
with and without the envelope rows; "best safe" is its lowest loss among iterates with every row
within its margin on the validation set.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scpo_ctrl.adapt import AdaptRequest, resolve_settings  # noqa: E402
from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.problem import build_problem  # noqa: E402
from scpo_ctrl.scpo.control import ControlAdaptation, residual_policy  # noqa: E402
from scpo_ctrl.scpo.optimizer import initial_state, step  # noqa: E402

PLANT = ROOT / "models" / "double_integrator.yaml"
ACTIVE = 1e-3  # a row this close to its margin counts as active
PATIENCE = 40


def plant_variant(directory: Path, name: str, safety_lines: str) -> Path:
    """A copy of the plant file with extra lines under ``safety:`` (empty: the file as shipped)."""
    text = PLANT.read_text()
    if safety_lines:
        text = text.replace("safety:\n", "safety:\n" + safety_lines, 1)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def run(plant: Path, method: str, iterations: int, overrides: dict) -> tuple:
    """``iterations`` of ``method`` (SCPO stops after PATIENCE iterations without a lower loss).

    Returns the adaptation, the last state, the backup's loss, the best loss among iterates
    that keep every row within its margin, the number of iterates breaking a row, and seconds.
    """
    spec = load_plant_spec(plant)
    settings, hidden, _ = resolve_settings(spec, AdaptRequest(plant=str(plant), method=method))
    settings = dataclasses.replace(settings, iterations=iterations, **overrides)
    problem = build_problem(spec)
    policy = residual_policy(problem, hidden, spec.policy.activation)
    adaptation = ControlAdaptation(problem, policy)
    start = time.perf_counter()
    state = initial_state(adaptation, policy.initial_theta(settings.seed), settings)
    loss0, best, violating, since_best = state.loss, state.loss, 0, 0
    for _ in range(iterations):
        state, _ = step(adaptation, state, settings)
        violating += bool(np.any(state.g > 0.0))
        if np.all(state.g + adaptation.margins <= 0.0) and state.loss < best - 1e-12:
            best, since_best = state.loss, 0
        else:
            since_best += 1
        if method == "scpo" and since_best >= PATIENCE:
            break
    return adaptation, state, loss0, best, violating, time.perf_counter() - start


def kkt_ratio(adaptation: ControlAdaptation, theta: np.ndarray) -> tuple[float, list]:
    """KKT residual over |grad L| at theta, and the groups of the active rows."""
    g = adaptation.constraints(theta[None, :])[0] + adaptation.margins
    active = np.flatnonzero(g > -ACTIVE)
    _, gradient = adaptation.loss_and_gradient(theta)
    J = []
    for row in active:
        weights = np.zeros(g.size)
        weights[row] = 1.0
        J.append(adaptation.weighted_constraint_gradient(theta, weights)[1])
    groups = sorted({adaptation.group_names[adaptation.row_groups[row]] for row in active})
    if not J:
        return 1.0, groups
    _, residual = nnls(np.array(J).T, -gradient)
    return residual / float(np.linalg.norm(gradient)), groups


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--lagrangian-iterations", type=int, default=200)
    args = parser.parse_args()
    print("| method | variant | iterations | loss ratio (best safe) | violating iterations "
          "| KKT residual / abs(grad L) | active row groups | s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        shipped = plant_variant(directory, "shipped", "")
        variants = [
            ("as shipped", shipped, {}),
            ("seed 1", shipped, {"seed": 1}),
            ("trust radius 0.1", shipped, {"trust_radius": 0.1}),
            ("step size 0.2", shipped, {"step_size": 0.2}),
            ("16 gradient pieces", shipped, {"gradient_pieces": 16}),
            ("envelope rate 0.99, gain 1.65", plant_variant(directory, "rate", "  envelope: {rate: 0.99, gain: 1.65}\n"),
             {}),
            ("envelope derived at rate_fraction 0.5",
             plant_variant(directory, "fraction", "  envelope: {rate_fraction: 0.5}\n"), {}),
            ("no final reach row", plant_variant(directory, "noreach", "  final_reach: false\n"), {}),
        ]
        for name, plant, overrides in variants:
            adaptation, state, loss0, best, violating, seconds = run(plant, "scpo", args.iterations, overrides)
            ratio, groups = kkt_ratio(adaptation, state.theta)
            print(f"| scpo | {name} | {state.iteration} | {best / loss0:.4f} | {violating} | {ratio:.3f} "
                  f"| {', '.join(groups)} | {seconds:.0f} |", flush=True)
        no_envelope = plant_variant(directory, "noenv", "  envelope: false\n")
        for name, plant in (("as shipped (envelope rows)", shipped), ("no envelope rows", no_envelope)):
            _, state, loss0, best, violating, seconds = run(plant, "lagrangian", args.lagrangian_iterations, {})
            print(f"| lagrangian | {name} | {state.iteration} | {best / loss0:.4f} | {violating} | - | - "
                  f"| {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
