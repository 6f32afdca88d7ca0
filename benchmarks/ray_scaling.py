"""Ray against in-process: per-task overhead, speed-up from 1 to 2 workers, and a projection to more cores.

    SCPO_CTRL_ACADOS_DIR=.vendor/acados .venv/bin/python benchmarks/ray_scaling.py [--iterations 2]
        [--projection-only]

Everything on a local Ray cluster of two one-CPU nodes (``ray.cluster_utils.Cluster``) on this machine:

* **Per-task overhead**: 200 one-closed-loop tasks of the double integrator's bank (a 2-state LQR loop, about a
  millisecond of work each) on one Ray worker, against the same tasks in this process; (Ray - local) / tasks.
* **Cart-pole MPC bank**: one SCPO bank evaluation of ``models/cartpole_mpc.yaml`` (9 parameter vectors from the
  64 validation states over the 100-step horizon, the acados MPC solved at every step), its blocks in this process
  (one thread: the reference), then through :class:`~scpo_ctrl.scpo.bank.DistributedBank` on 1 and 2 Ray workers.
* **10^5-state Monte Carlo**: verify's Monte Carlo closed loops (the exported float32 C in the loop of the plant
  model, :func:`~scpo_ctrl.verify.distributed.distributed_closed_loop`) from 100,000 uniform states of the double
  integrator's box, for a run adapted 3 iterations and exported here: blocks in this process vs 1 and 2 workers.
* **Projection** (a model, not a measurement): wall seconds of 200 cart-pole MPC iterations on p cores, from
  ``--iterations`` iterations of ``adapt`` in this process pinned to one core, split by the timing fields of
  training.jsonl into what runs on the workers and what stays in the driver::

      200 (T_driver + ceil(B_p / p) (T_bank / B_p + o) + ceil(C_p / p) (T_grad / C_p + o)
                    + L ceil(C_p / p) (T_loss / C_p + o))

  ``T_bank`` the bank evaluation and the validation, ``T_grad`` the loss's gradient pieces through the MPC
  closed loops, ``T_loss`` one loss evaluation (measured alone, one core) and ``L = T_line_search / T_loss``
  the loss evaluations of an iteration's line search, ``T_driver`` the rest of the iteration (the projection and
  the bank's construction: in the driver); ``B_p`` and ``C_p`` the blocks of the bank and of the 64 cost starts
  for p workers (:func:`~scpo_ctrl.scpo.bank.bank_blocks`, :func:`~scpo_ctrl.scpo.bank.cost_blocks`) and ``o``
  the measured per-task overhead. It ignores the network, stragglers and the workers' one-off build of the
  engine. ``--projection-only`` measures the overhead and the in-process adapt, and prints the projection alone.

The machine has 2 cores shared with other jobs: the load average is printed with the results and the speed-ups
are lower bounds of what two free cores give.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from scpo_ctrl.adapt import AdaptRequest, run_adapt  # noqa: E402
from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.execution import LocalExecutor, RayExecutor  # noqa: E402
from scpo_ctrl.export.run import ExportRequest, run_export  # noqa: E402
from scpo_ctrl.run_files import ExportManifest  # noqa: E402
from scpo_ctrl.verify.distributed import distributed_closed_loop, monte_carlo_recipe  # noqa: E402
from scpo_ctrl.problem import build_problem  # noqa: E402
from scpo_ctrl.scpo.bank import BankTask, DistributedBank, bank_blocks, cost_blocks, rollout_recipe  # noqa: E402
from scpo_ctrl.scpo.control import ControlAdaptation, residual_policy  # noqa: E402

BANK_THETAS = 9  # one SCPO iteration's bank with the default settings: theta, 4 gradient pieces, 2 random pairs


def parts(name: str, threads: int = 1):
    spec = load_plant_spec(ROOT / "models" / f"{name}.yaml")
    problem = build_problem(spec)
    policy = residual_policy(problem, spec.policy.hidden, spec.policy.activation)
    adaptation = ControlAdaptation(problem, policy)
    engine = problem.engine(adaptation.pi, jit=adaptation.jit, threads=threads)
    return spec, problem, adaptation, engine, rollout_recipe(spec, spec.policy.hidden, spec.policy.activation,
                                                             adaptation.jit)


def timed(call, *args):
    start = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - start


def bank_batch(recipe, x0, thetas):
    """``executor -> arrays`` of a bank evaluation, and its warm-up (the workers build the engine once)."""
    return (lambda executor: DistributedBank(executor, recipe).metrics_batch(x0, thetas),
            lambda executor: DistributedBank(executor, recipe).metrics_batch(x0[:2], thetas[:1]))


def monte_carlo_batch(recipe, x0):
    def run(executor):
        loops = distributed_closed_loop(executor, recipe)(x0, True)
        return loops.x, loops.g, loops.level

    return run, lambda executor: distributed_closed_loop(executor, recipe)(x0[:2], True)


def checked(batch, executor, reference) -> float:
    """Seconds of a batch after its warm-up; bit-identical to the in-process blocks or fail."""
    run, warm_up = batch
    warm_up(executor)
    result, seconds = timed(run, executor)
    assert all(np.array_equal(a, b) for a, b in zip(result, reference))
    return seconds


def exported_run(work: Path) -> Path:
    """The double integrator adapted 3 iterations and exported for the host."""
    run = work / "double_integrator"
    run_adapt(AdaptRequest(plant=str(ROOT / "models" / "double_integrator.yaml"), out=str(run), iterations=3,
                           progress=False, verify_loop=False))
    run_export(ExportRequest(run_dir=str(run)))
    return run


def on_one_core(call, *args):
    """``call(*args)`` with this process pinned to one CPU (the engines' threads and BLAS follow the affinity)."""
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        return call(*args)
    finally:
        os.sched_setaffinity(0, cpus)


def projection(iterations: int, overhead: float) -> list:
    """The projection's lines, from an in-process adapt of the cart-pole on one core (see the module docstring)."""
    def measure():
        with tempfile.TemporaryDirectory() as work:
            run_adapt(AdaptRequest(plant=str(ROOT / "models" / "cartpole_mpc.yaml"), out=work,
                                   iterations=iterations, progress=False, verify_loop=False))
            records = [json.loads(line) for line in Path(work, "training.jsonl").read_text().splitlines()]
        adaptation = parts("cartpole_mpc")[2]  # its engine on this process's one core
        adaptation.loss(np.zeros(adaptation.dimension))  # warm-up
        return records, adaptation, timed(adaptation.loss, np.zeros(adaptation.dimension))[1]

    records, adaptation, t_loss = on_one_core(measure)
    timing = {key: float(np.mean([r["timing"][key] for r in records]))
              for key in ("gradient", "bank_evaluation", "validation", "projection", "line_search")}
    seconds = float(np.mean([r["seconds"] for r in records]))
    t_bank = timing["bank_evaluation"] + timing["validation"]
    t_grad, t_ls = timing["gradient"], timing["line_search"]
    t_driver = seconds - t_bank - t_grad - t_ls
    evaluations = t_ls / t_loss
    bank_size = int(round(np.mean([r["bank_size"] for r in records])))
    states, starts = len(adaptation.x0), len(adaptation.cost_starts)
    lines = [
        "Projection, a model (not a measurement): `200 (T_driver + ceil(B_p / p) (T_bank / B_p + o) + ceil(C_p / p) "
        "(T_grad / C_p + o) + L ceil(C_p / p) (T_loss / C_p + o))`, from "
        f"{iterations} in-process iterations of cartpole_mpc pinned to one core ({seconds:.1f} s per iteration):",
        "",
        "| part of an iteration | where with --ray | seconds per iteration (one core) |", "|---|---|---|",
        f"| T_bank: bank ({bank_size} probes x {states} states) and validation | workers, B_p blocks | {t_bank:.1f} |",
        f"| T_grad: loss gradient pieces through the MPC closed loops ({starts} starts) | workers, C_p blocks "
        f"| {t_grad:.1f} |",
        f"| line search: L = {evaluations:.1f} loss evaluations of T_loss = {t_loss:.1f} s ({starts} closed loops) "
        f"| workers, C_p blocks each | {t_ls:.1f} |",
        f"| T_driver: projection ({timing['projection']:.2f} s) and the rest (bank construction, bookkeeping) "
        f"| driver | {t_driver:.1f} |",
        "",
        f"o = {1e3 * overhead:.2f} ms per task as measured above. It ignores the network, stragglers and the "
        f"workers' one-off build of the engine; T_driver, and the {starts} cost starts (at most {starts} blocks, so "
        "one start's closed loop per batch at best), bound the speed-up.", "",
        "| cores p | bank blocks B_p | cost blocks C_p | projected wall time of 200 iterations | vs in-process, one core "
        "|", "|---|---|---|---|---|"]
    base = 200 * seconds
    for p in (1, 8, 32, 128):
        b, c = len(bank_blocks(bank_size, states, p)), len(cost_blocks(starts, p))
        t = 200 * (t_driver + np.ceil(b / p) * (t_bank / b + overhead) + np.ceil(c / p) * (t_grad / c + overhead)
                   + evaluations * np.ceil(c / p) * (t_loss / c + overhead))
        lines.append(f"| {p} | {b} | {c} | {t / 3600:.2f} h ({t:.0f} s) | {base / t:.1f}x |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2, help="adapt iterations of cartpole_mpc for the projection")
    parser.add_argument("--projection-only", action="store_true",
                        help="measure the per-task overhead and the in-process adapt, print the projection alone")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = [f"Load average at start: {os.getloadavg()[0]:.1f} (2 cores).", ""]
    di = parts("double_integrator")
    work = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    batches = {}
    if not args.projection_only:
        cartpole = parts("cartpole_mpc")
        run = exported_run(work)
        manifest = ExportManifest.read(run / ExportManifest.RELATIVE_PATH)
        library = "host/libdouble_integrator_policy.so"
        mc_recipe = monte_carlo_recipe(run, run / "export" / library, manifest.artefacts[library], "float32",
                                       di[0].safety.horizon)
        box = di[0].safety.initial_states.box
        X0 = rng.uniform(box[:, 0], box[:, 1], size=(100_000, di[0].nx))
        thetas = rng.normal(scale=0.02, size=(BANK_THETAS, cartpole[2].dimension))
        batches = {
            "cart-pole MPC bank (9 x 64 closed loops, 100 steps)": bank_batch(cartpole[4], cartpole[2].x0, thetas),
            "verify's Monte Carlo, 100,000 double-integrator closed loops (float32 C)": monte_carlo_batch(mc_recipe,
                                                                                                        X0)}
    zero = np.zeros((1, di[2].dimension))
    # the references: the same blocks in this process (one thread), so the columns differ only in where they run
    times, references = {}, {}
    local = LocalExecutor()
    for label, (run_batch, _) in batches.items():
        references[label], seconds = timed(run_batch, local)
        times[label] = {0: seconds}
    tasks = [BankTask(zero, di[2].x0[i % len(di[2].x0)][None]) for i in range(200)]
    local.map(di[4], tasks[:1])
    _, t_local = timed(local.map, di[4], tasks)

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, log_to_driver=False, include_dashboard=False, configure_logging=False)
    try:
        for workers in (1, 2):
            executor = RayExecutor("auto", workers=workers)
            try:
                if workers == 1:
                    executor.map(di[4], tasks[:1])
                    _, t_ray = timed(executor.map, di[4], tasks)
                for label, batch in batches.items():
                    times[label][workers] = checked(batch, executor, references[label])
            finally:
                executor.close()
    finally:
        ray.shutdown()
        nodes.shutdown()
    overhead = (t_ray - t_local) / len(tasks)
    lines += ["| measurement | in-process | Ray | per task |", "|---|---|---|---|",
              f"| 200 one-loop tasks, 1 worker | {t_local:.3f} s | {t_ray:.3f} s | overhead {1e3 * overhead:.2f} ms"
              f" ({t_ray / t_local:.1f}x the in-process time) |", ""]
    if batches:
        lines += ["| batch (results bit-identical in every column) | in-process, 1 thread | Ray, 1 worker "
                  "| Ray, 2 workers | speed-up 1 -> 2 workers |", "|---|---|---|---|---|"]
        for label, t in times.items():
            lines.append(f"| {label} | {t[0]:.2f} s | {t[1]:.2f} s | {t[2]:.2f} s | {t[1] / t[2]:.2f}x |")
        lines.append("")
    lines += projection(args.iterations, overhead)
    lines += ["", f"Load average at the end: {os.getloadavg()[0]:.1f}."]
    shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    name = "ray_projection.md" if args.projection_only else "ray_scaling.md"
    (ROOT / "benchmarks" / "results" / name).write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
