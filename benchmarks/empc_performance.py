"""The embedded MPC (``solver: admm``): instructions per solve on the Cortex-M4F, flash and RAM, error against
the exact QP, and SCPO's throughput with it against the acados MPC on the same plant.

    .venv/bin/python benchmarks/empc_performance.py [--states 24] [--adapt-iterations 2]

Plants: models/pendulum_empc.yaml as shipped, and models/cartpole_mpc.yaml with ``solver: admm`` (horizon 40).

* Instructions: the float32 solver alone (``hil/firmware/empc_step.c`` in the vector runner, -O2) under
  ``qemu-system-arm -M mps2-an386 -icount shift=0``, one QEMU run per state (the runner times 32 calls of it), on
  ``--states`` states: half from the validation set, half up to 20 % beyond the state limits (soft constraints
  binding). QEMU counts instructions, not cycles of a real chip.
* Flash/RAM: ``arm-none-eabi-size`` of the solver object (text, rodata = flash; data, bss) and its stack frame
  (``-fstack-usage``); the solver keeps everything on the stack.
* Error: the host float32 C against Clarabel's exact solution of the same QP on every validation state.
* Throughput: closed-loop steps per second of the backup alone from the validation states over the safety
  horizon, the embedded MPC vs the acados MPC of the pendulum (pendulum_mpc.yaml, the same plant), same
  thread count; and the wall seconds per SCPO iteration of ``adapt`` (``--adapt-iterations``) on each. The
  machine has 2 cores shared with other jobs: timings are noisy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scpo_ctrl.adapt import AdaptRequest, run_adapt  # noqa: E402
from scpo_ctrl.backup.embedded_mpc_codegen import C_FLAGS, DATA_HEADER  # noqa: E402
from scpo_ctrl.backup.embedded_qp import exact_inputs  # noqa: E402
from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.export import build, empc_target  # noqa: E402
from scpo_ctrl.problem import build_problem  # noqa: E402
from scpo_ctrl.resources import resource_dir  # noqa: E402


def embedded_cartpole():
    spec = load_plant_spec(ROOT / "models" / "cartpole_mpc.yaml")
    return replace(spec, name="cartpole_empc", backup=replace(spec.backup, solver="admm", iterations=50))


def states(problem, count: int, seed: int = 0) -> np.ndarray:
    F = problem.mpc.formulation
    rng = np.random.default_rng(seed)
    low = np.array([s.min for s in problem.spec.states])
    high = np.array([s.max for s in problem.spec.states])
    far = F.x_eq + rng.uniform(-1.2, 1.2, size=(count - count // 2, F.nx)) * np.maximum(high - F.x_eq, F.x_eq - low)
    return np.vstack([problem.x0[: count // 2], far])


def sizes(files, work: Path) -> dict:
    """Sections of the solver object for the M4 and its stack frame."""
    work.mkdir(parents=True, exist_ok=True)
    empc_target.write_solver_binding(work)
    report = build.compile_object(
        build.ARM_COMPILER, str(resource_dir("hil") / "firmware" / "empc_step.c"), work, "empc_step.o",
        (*build.CORTEX_M4_FLAGS, *C_FLAGS, f'-DEMPC_DATA="{DATA_HEADER}"', f"-I{files.directory}",
         f"-I{files.source_dir}", f"-I{work}"))
    return {"sections": report.sections, "stack": report.stack.get("empc_solve_f32")}


def instructions(files, X: np.ndarray, nu: int, work: Path) -> np.ndarray:
    elf = empc_target.build_solver_elf(files, work)
    counts = []
    for x in X:
        _, timing = empc_target.solve_on_target(elf, x[None, :], nu, work)
        counts.append(timing.instructions_per_step)
    return np.array(counts)


def rollout_rate(problem, repeats: int = 3) -> tuple:
    engine = problem.engine(problem.backup_law())
    engine.rollout(problem.x0[:2])  # build and load once
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = engine.rollout(problem.x0)
        best = min(best, time.perf_counter() - start)
    steps = problem.x0.shape[0] * (problem.spec.safety.horizon + 1)
    return steps / best, float(np.median(result.stats.seconds) * 1e6), engine.threads


def adapt_seconds(plant: Path, iterations: int, out: Path) -> float:
    summary = run_adapt(AdaptRequest(plant=str(plant), out=str(out), iterations=iterations, progress=False,
                                     force=True)).summary.to_json()
    return summary["seconds"] / max(1, summary["iterations"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--states", type=int, default=24)
    parser.add_argument("--adapt-iterations", type=int, default=2)
    args = parser.parse_args()
    problems = [("pendulum_empc", build_problem(load_plant_spec(ROOT / "models" / "pendulum_empc.yaml"))),
                ("cartpole_mpc with solver: admm", build_problem(embedded_cartpole()))]
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        print("| plant | N | iterations | M4F instructions per solve, median | max | text B | rodata B | data B "
              "| bss B | stack B | worst error vs exact QP (abs) | relative to half-range |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for label, problem in problems:
            F, files = problem.mpc.formulation, problem.mpc.files
            work = root / label.split()[0]
            counts = instructions(files, states(problem, args.states), F.nu, work)
            size = sizes(files, work / "size")
            runner = empc_target.build_solver_host_runner(files, work)
            U = empc_target.solve_on_host(runner, problem.x0, F.nu, work)
            error = np.abs(U - exact_inputs(F, problem.x0))
            relative = np.max(error / (0.5 * (F.u_max - F.u_min)))
            s = size["sections"]
            print(f"| {label} | {F.N} | {F.iterations} | {np.median(counts):,.0f} | {np.max(counts):,.0f} "
                  f"| {s.get('text', 0)} | {s.get('rodata', 0)} | {s.get('data', 0)} | {s.get('bss', 0)} "
                  f"| {size['stack']} | {np.max(error):.2e} | {relative:.2e} |", flush=True)

        print()
        print("| pendulum backup | closed-loop steps/s (validation states, best of 3) | median solve us (host) "
              "| threads | adapt s per iteration |")
        print("|---|---|---|---|---|")
        rates = {}
        for label, plant in (("acados SQP (pendulum_mpc)", "pendulum_mpc"), ("embedded ADMM (pendulum_empc)",
                                                                               "pendulum_empc")):
            problem = build_problem(load_plant_spec(ROOT / "models" / f"{plant}.yaml"))
            rate, solve_us, threads = rollout_rate(problem)
            per_iteration = adapt_seconds(ROOT / "models" / f"{plant}.yaml", args.adapt_iterations,
                                          root / f"adapt-{plant}")
            rates[plant] = (rate, per_iteration)
            print(f"| {label} | {rate:,.0f} | {solve_us:.1f} | {threads} | {per_iteration:.1f} |", flush=True)
        print()
        print(f"ratio embedded / acados: rollout throughput {rates['pendulum_empc'][0] / rates['pendulum_mpc'][0]:.2f}x, "
              f"adapt seconds per iteration {rates['pendulum_empc'][1] / rates['pendulum_mpc'][1]:.2f}x")


if __name__ == "__main__":
    main()
