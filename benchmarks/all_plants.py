"""SCPO vs the unconstrained baseline on every plant in models/, short runs.

    .venv/bin/python benchmarks/all_plants.py [--iterations 60]

SCPO without the verification loop (the optimizer alone, on the file's validation set; the loop
is measured by benchmarks/adapt_until_verified.py). For each plant: violating iterations, final loss and its ratio to the backup's,
whether the final iterate is safe on the validation set, wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def lqr_models() -> list:
    """The shipped plant files with an LQR backup (the *_mpc files are measured by benchmarks/mpc_*.py)."""
    return [path for path in sorted((ROOT / "models").glob("*.yaml"))
            if yaml.safe_load(path.read_text())["backup"]["type"] == "lqr"]


sys.path.insert(0, str(ROOT))

from scpo_ctrl.adapt import AdaptRequest, run_adapt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=60)
    args = parser.parse_args()
    print("| plant | task | method | iterations | violating iterations | worst g | final safe | loss ratio | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        for plant in lqr_models():
            for method in ("scpo", "unconstrained"):
                request = AdaptRequest(plant=str(plant), out=f"{directory}/{plant.stem}-{method}",
                                       iterations=args.iterations, method=method, progress=False,
                                       verify_loop=False)
                start = time.perf_counter()
                s = run_adapt(request).summary.to_json()
                print(f"| {plant.stem} | {s['task']} | {method} | {s['iterations']} | {s['violating_iterations']} "
                      f"| {s['worst_g']:.3g} | {'yes' if s['final_safe'] else 'no'} | {s['loss_ratio']:.3f} "
                      f"| {time.perf_counter() - start:.1f} |", flush=True)


if __name__ == "__main__":
    main()
