"""Closed-loop steps per second: batched engine vs the per-step reference loop.

    .venv/bin/python benchmarks/rollout_throughput.py [--batch 1024] [--horizon 200] [--reference-states 64]

The batched engine runs all ``batch`` initial states for ``horizon`` steps in
one call; the reference loop (one CasADi call per step, as
``scpo_ctrl.sim.reference``) runs ``reference-states`` of them, and its rate
is steps per second over those (it is linear in the number of states). The
ratio is batched rate / reference rate, measured in this process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import casadi as ca
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.policy.mlp import MlpLayout  # noqa: E402
from scpo_ctrl.problem import build_problem  # noqa: E402
from scpo_ctrl.sim.reference import reference_rollouts  # noqa: E402
from scpo_ctrl.sim.rollout import RolloutEngine, default_threads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def network_policy(problem, hidden):
    layout = MlpLayout((problem.model.nx, *hidden, problem.model.nu))
    x = ca.SX.sym("x", problem.model.nx)
    theta = ca.SX.sym("theta", layout.n_theta)
    backup = problem.backup
    u = ca.fmin(ca.fmax(backup.control_unsaturated(x) + layout.forward(x, theta), ca.DM(backup.u_min)), ca.DM(backup.u_max))
    return ca.Function("policy", [x, theta], [u]), layout


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plant", default=str(ROOT / "models" / "double_integrator.yaml"))
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--reference-states", type=int, default=64)
    args = parser.parse_args()

    problem = build_problem(load_plant_spec(args.plant))
    rng = np.random.default_rng(0)
    lo, hi = np.asarray(problem.spec.safety.initial_states.box).T
    x0 = lo + rng.random((args.batch, problem.model.nx)) * (hi - lo)

    policies = [("LQR backup", problem.backup.function(), np.zeros(0))]
    net, layout = network_policy(problem, (32, 32))
    policies.append((f"backup + 2x32 tanh network ({layout.n_theta} weights)", net,
                     layout.initial_theta(rng, zero_last_layer=False) * 0.1))

    steps = args.batch * args.horizon
    print(f"plant {problem.spec.name}, {args.batch} initial states x {args.horizon} steps = {steps} closed-loop steps, "
          f"{default_threads()} threads")
    print("| policy | engine | compile s | batch s | steps/s | reference steps/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for label, policy, theta in policies:
        n_ref = args.reference_states
        t_ref = best_of(1, lambda: reference_rollouts(problem.model, policy, x0[:n_ref], args.horizon, theta))
        ref_rate = n_ref * args.horizon / t_ref
        for jit in (True, False):
            start = time.perf_counter()
            engine = RolloutEngine(problem.model, policy, args.horizon, jit=jit)
            engine.simulate(x0[:2], theta)
            compile_s = time.perf_counter() - start
            engine.simulate(x0, theta)  # warm the mapped function
            t = best_of(5, lambda: engine.simulate(x0, theta))
            rate = steps / t
            name = "JIT C, threads" if jit else "CasADi VM, threads"
            print(f"| {label} | {name} | {compile_s:.2f} | {t:.3f} | {rate:,.0f} | {ref_rate:,.0f} | {rate / ref_rate:.1f}x |")


if __name__ == "__main__":
    main()
