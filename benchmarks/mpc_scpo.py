"""SCPO with the acados MPC backup: safe at every iteration, and how far it improves on the MPC alone.

    .venv/bin/python benchmarks/mpc_scpo.py [--pendulum-iterations 40] [--cartpole-iterations 12]
                                            [--baseline-iterations 8] [--keep DIR]

For models/pendulum_mpc.yaml (imitation of a biased expert) and
models/cartpole_mpc.yaml (a closed-loop cost whose optimum tips the pole):
SCPO's violating iterations, worst validation value, the loss of the MPC
alone (iteration 0) and after adaptation, wall time and seconds per
iteration; then a short unconstrained run (gradient descent on the loss
alone, same settings) to show that the task pulls toward a limit with the
MPC backup too. The MPC is solved at every step of every rollout, so an
iteration costs seconds (pendulum) to tens of seconds (cart-pole, horizon 40).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scpo_ctrl.adapt import AdaptRequest, run_adapt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pendulum-iterations", type=int, default=40)
    parser.add_argument("--cartpole-iterations", type=int, default=12)
    parser.add_argument("--baseline-iterations", type=int, default=8)
    parser.add_argument("--keep", help="keep the run directories here")
    args = parser.parse_args()
    plans = [("pendulum_mpc", args.pendulum_iterations), ("cartpole_mpc", args.cartpole_iterations)]
    print("| plant | task | method | iterations | violating iterations | worst g | final safe | loss of the MPC alone "
          "| final loss | loss ratio | wall s | s per iteration |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(args.keep) if args.keep else Path(temporary)
        for name, iterations in plans:
            for method, count in (("scpo", iterations), ("unconstrained", args.baseline_iterations)):
                if count <= 0:
                    continue
                request = AdaptRequest(plant=str(ROOT / "models" / f"{name}.yaml"), out=str(root / f"{name}-{method}"),
                                       iterations=count, method=method, progress=False, force=True)
                start = time.perf_counter()
                s = run_adapt(request).summary.to_json()
                wall = time.perf_counter() - start
                print(f"| {name} | {s['task']} | {method} | {s['iterations']} | {s['violating_iterations']} "
                      f"| {s['worst_g']:.3g} | {'yes' if s['final_safe'] else 'no'} | {s['initial_loss']:.4g} "
                      f"| {s['final_loss']:.4g} | {s['loss_ratio']:.3f} | {wall:.0f} "
                      f"| {s['seconds'] / max(1, s['iterations']):.1f} |", flush=True)


if __name__ == "__main__":
    main()
