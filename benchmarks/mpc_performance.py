"""MPC backup performance: acados against IPOPT, solve times from C and from Python, SCPO closed-loop throughput.

    SCPO_CTRL_ACADOS_DIR=.vendor/acados .venv/bin/python benchmarks/mpc_performance.py [--quick] [--out FILE]

For models/pendulum_mpc.yaml and models/cartpole_mpc.yaml:

1. Accuracy. On the first ``--states`` points of the plant's seeded Halton sequence in its validation
   box (``safety.initial_states``: same box, seed and scrambling, so the first 64 points are the
   validation set itself), the first input of the acados solver (cold solves in C,
   ``MpcRolloutEngine.solve``) against CasADi/IPOPT on the same OCP (``ipopt_reference``): max and
   median ``|u0_acados - u0_ipopt|``, how many agree to 1e-5, how many converged (acados status 0,
   IPOPT success), and whether acados' own Python interface gives the C engine's inputs.
2. Solve times, median and p99, single thread, with iteration counts:
   * from C (timed in C around the acados call): cold solves of independent states, and warm-started
     solves inside closed-loop rollouts of the backup (the previous plan shifted by one stage);
   * from Python, ``time.perf_counter`` around ``AcadosOcpSolver.solve_for_x0`` (ctypes overhead
     included; acados' own ``time_tot`` beside it): cold, after ``solver.reset()`` with acados' zero
     guess and with the C engine's cold guess; warm, along the C rollouts' trajectories (the same
     states in the same order), with acados' default guess (the previous solution as it is) and with
     the C engine's shifted guess (set outside the timed call);
   * IPOPT's time per solve from Python (``IpoptReference.solve``), for reference.
3. SCPO throughput: closed-loop steps per second of ``ControlAdaptation.constraints`` (the batched
   rollouts of the validation set SCPO's bank evaluates) for the residual policy at
   ``initial_theta(seed)`` plus random perturbations of the bank's probe norm (trust radius / 30),
   with 1 and 2 threads, against the LQR versions of the same plants (models/pendulum.yaml,
   models/cartpole.yaml: the same adaptation on CasADi's JIT-compiled rollouts). For the cart-pole's
   closed-loop cost task, the time of ``loss``, ``loss_and_gradient`` and ``gradient_pieces`` (the MPC
   version differentiates the MPC by forward differences: 1 + nx solves per step).

A machine probe first measures how much two CPU-bound processes slow each other down, since the thread
results depend on it. ``--quick`` runs fewer states, trajectories and parameter vectors and skips
``gradient_pieces`` (about a third of the time) and writes no file unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import casadi as ca
import numpy as np
from scipy.stats import qmc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scpo_ctrl.backup.acados_env import c_output_to_log, vendor_dir  # noqa: E402
from scpo_ctrl.backup.mpc import SOLVER_OPTIONS, ipopt_reference, python_solver  # noqa: E402
from scpo_ctrl.config.plant_spec import load_plant_spec  # noqa: E402
from scpo_ctrl.problem import build_problem  # noqa: E402
from scpo_ctrl.scpo.control import ControlAdaptation, residual_policy  # noqa: E402

log = logging.getLogger("mpc_performance")

MATCH_TOLERANCE = 1e-5
PLANTS = (("pendulum_mpc", "pendulum"), ("cartpole_mpc", "cartpole"))
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "mpc_performance.md"
#: a pure-Python busy loop for the machine probe (about a second)
SPIN = "import time; t = time.perf_counter(); s = 0\nfor i in range(12_000_000): s += i\nprint(time.perf_counter() - t)"


@dataclass
class Settings:
    """Sizes of a run.

    Attributes
    ----------
    states : int
        Halton states for the accuracy check and the cold solves.
    cold_passes : int
        Passes over those states for the cold solve times.
    warm : dict
        Closed-loop rollouts (from the first states) for the warm solve times in C, per plant.
    trajectories : int
        Of those, how many are re-solved from Python.
    thetas : dict
        Candidates per ``constraints`` call, per plant.
    gradient_pieces : bool
        Also time ``gradient_pieces`` (as long as ``loss_and_gradient`` with the MPC).
    """

    states: int
    cold_passes: int
    warm: dict
    trajectories: int
    thetas: dict
    gradient_pieces: bool


FULL = Settings(states=100, cold_passes=5, warm={"pendulum_mpc": 64, "cartpole_mpc": 16}, trajectories=16,
                thetas={"pendulum": 8, "cartpole": 2}, gradient_pieces=True)
QUICK = Settings(states=30, cold_passes=2, warm={"pendulum_mpc": 16, "cartpole_mpc": 4}, trajectories=4,
                 thetas={"pendulum": 2, "cartpole": 1}, gradient_pieces=False)


@dataclass
class Report:
    """Markdown lines, printed as they come and written at the end."""

    lines: list = field(default_factory=list)
    echo: bool = True

    def add(self, *lines: str) -> None:
        for line in lines:
            if self.echo:
                print(line, flush=True)
            self.lines.append(line)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def silenced():
    """acados prints from C (solver notices) and from Python (``solve_for_x0``'s warnings): off stdout."""
    with c_output_to_log(log), contextlib.redirect_stdout(io.StringIO()):
        yield


def ms(values) -> str:
    return f"{1e3 * float(values):.3f}"


def halton_states(problem, count: int) -> np.ndarray:
    """The first ``count`` points of the validation set's Halton sequence (its first points are the set)."""
    initial = problem.spec.safety.initial_states
    box = np.asarray(initial.box, dtype=float)
    unit = qmc.Halton(d=problem.spec.nx, scramble=True, seed=initial.seed).random(count)
    return box[:, 0] + unit * (box[:, 1] - box[:, 0])


# -- machine ------------------------------------------------------------------------------------------
def machine_probe() -> tuple[float, float]:
    """Seconds of one CPU-bound Python process alone, and the mean of two run at once."""
    def spin(count: int) -> list:
        processes = [subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True)
                     for _ in range(count)]
        return [float(p.communicate()[0]) for p in processes]

    alone = min(spin(1)[0] for _ in range(2))
    together = float(np.mean(spin(2)))
    return alone, together


def machine_lines() -> list:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    acados = sorted(p.name for p in vendor_dir().glob("*.dist-info"))
    load = os.getloadavg()
    alone, together = machine_probe()
    autogroup = ""
    with contextlib.suppress(OSError):
        if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1":
            autogroup = (" The kernel schedules by autogroup (one group per session): with k other busy sessions this "
                         "process gets about 2 / (k + 1) cores whatever its thread count (CPU / wall columns below).")
    return [
        f"Machine: {len(os.sched_getaffinity(0))} usable cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, CasADi {ca.__version__} (IPOPT through CasADi), acados from "
        f"{acados[0].removesuffix('.dist-info') if acados else 'the vendored wheel'}. Everything runs natively on this "
        "machine, in this process and the C libraries it loads: no QEMU and no HIL host link are involved.",
        "",
        f"Machine probe: one CPU-bound Python process alone takes {alone:.2f} s; two started together take "
        f"{together:.2f} s each, so two processes get {2 * alone / together:.2f}x the throughput of one (2.00x on two "
        "free cores). Thread speed-ups below are bounded by this. Load average at the start "
        f"(1, 5, 15 min): {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}; anything above 0 is other work sharing the cores."
        + autogroup,
    ]


# -- acados' Python interface -----------------------------------------------------------------------------
class PythonSolver:
    """acados' ``AcadosOcpSolver`` for the plant's MPC, timed per ``solve_for_x0`` call."""

    def __init__(self, problem):
        formulation = problem.mpc.formulation
        with silenced():
            self.solver = python_solver(formulation, problem.model, problem.mpc.files)
        self.N = formulation.N
        self.u_eq = formulation.u_eq

    def cold_plan(self, x: np.ndarray) -> None:
        """The C engine's cold guess: every predicted state x, every input u_eq."""
        for i in range(self.N + 1):
            self.solver.set(i, "x", x)
        for i in range(self.N):
            self.solver.set(i, "u", self.u_eq)

    def shift(self) -> None:
        """The C engine's warm start: the solution shifted by one stage, last stage repeated."""
        xs = [self.solver.get(i, "x") for i in range(1, self.N + 1)]
        us = [self.solver.get(i, "u") for i in range(1, self.N)]
        xs.append(xs[-1])
        us.append(us[-1] if us else self.solver.get(0, "u"))
        for i, x in enumerate(xs):
            self.solver.set(i, "x", x)
        for i, u in enumerate(us):
            self.solver.set(i, "u", u)

    def solve(self, x: np.ndarray) -> tuple:
        """``(u0, status, SQP iterations, seconds around solve_for_x0, acados' time_tot)``."""
        start = time.perf_counter()
        try:
            u = self.solver.solve_for_x0(x)
        except Exception:  # acados raises a bare Exception for a status other than 0 and 2
            u = None
        seconds = time.perf_counter() - start
        if u is None:
            u = self.solver.get(0, "u")
        return (np.asarray(u, dtype=float), int(self.solver.status), int(np.ravel(self.solver.get_stats("sqp_iter"))[0]),
                seconds, float(np.ravel(self.solver.get_stats("time_tot"))[0]))


@dataclass
class Timing:
    """One row of the solve-time table."""

    name: str
    seconds: np.ndarray
    status: np.ndarray
    iterations: np.ndarray
    inner: np.ndarray | None = None  # acados' time_tot for the Python rows
    note: str = ""

    def row(self, plant: str) -> str:
        seconds, iterations = np.ravel(self.seconds), np.ravel(self.iterations)
        inner = overhead = ""
        if self.inner is not None:
            inner, overhead = ms(np.median(self.inner)), ms(np.median(seconds - np.ravel(self.inner)))
        return (f"| {plant} | {self.name} | {seconds.size} | {int(np.sum(np.ravel(self.status) == 0))} | "
                f"{ms(np.median(seconds))} | {ms(np.percentile(seconds, 99))} | {inner} | {overhead} | "
                f"{iterations.mean():.2f} / {int(np.median(iterations))} / {iterations.max()} | {self.note} |")


def run_python(solver: PythonSolver, states, prepare, after=None) -> tuple:
    """Solve each state in order; ``prepare(x)`` before each timed call, ``after()`` after it."""
    out = []
    with silenced():
        for x in states:
            prepare(x)
            out.append(solver.solve(x))
            if after is not None:
                after()
    u = np.array([r[0] for r in out])
    status, iterations, seconds, inner = (np.array([r[k] for r in out]) for k in (1, 2, 3, 4))
    return u, status, iterations, seconds, inner


def solver_benchmark(name: str, settings: Settings, accuracy: Report, timing: Report) -> None:
    problem = build_problem(load_plant_spec(ROOT / "models" / f"{name}.yaml"))
    formulation, model = problem.mpc.formulation, problem.model
    nx, nu, H = model.nx, model.nu, problem.spec.safety.horizon
    X = halton_states(problem, settings.states)
    engine = problem.engine(problem.backup_law(), threads=1)

    python = PythonSolver(problem)

    def reset_only(x):
        python.solver.reset()

    def reset_c_guess(x):
        python.solver.reset()
        python.cold_plan(x)

    # cold solves: C, then acados' Python interface after reset() (its zero guess, and the C engine's cold
    # guess), pass after pass, so that the machine's drifts in speed hit every row alike
    c_runs, zero_runs, guess_runs = [], [], []
    for _ in range(settings.cold_passes):
        u_c, stats = engine.solve(X)
        c_runs.append(stats)
        zero_runs.append(run_python(python, X, reset_only))
        guess_runs.append(run_python(python, X, reset_c_guess))
    cold = c_runs[0]
    c_cold = Timing("C, cold (engine.solve)", np.concatenate([r.seconds for r in c_runs]),
                    np.concatenate([r.status for r in c_runs]), np.concatenate([r.iterations for r in c_runs]))
    u_zero, u_guess = zero_runs[0][0], guess_runs[0][0]

    def merged(runs, label, note):
        return Timing(label, np.concatenate([r[3] for r in runs]), np.concatenate([r[1] for r in runs]),
                      np.concatenate([r[2] for r in runs]), np.concatenate([r[4] for r in runs]), note)

    py_zero = merged(zero_runs, "Python, cold: reset(), acados' zero guess",
                     f"max abs u0 diff vs C cold {np.abs(u_zero - u_c).max():.1e}")
    py_guess = merged(guess_runs, "Python, cold: reset() + C's cold guess",
                      f"max abs u0 diff vs C cold {np.abs(u_guess - u_c).max():.1e}")

    # IPOPT, one pass
    reference = ipopt_reference(formulation, model)
    u_i, success, ip_seconds, ip_iterations = np.zeros((X.shape[0], nu)), [], [], []
    with silenced():
        for j, x in enumerate(X):
            start = time.perf_counter()
            u_i[j], ok = reference.solve(x)
            ip_seconds.append(time.perf_counter() - start)
            success.append(ok)
            ip_iterations.append(reference.solver.stats()["iter_count"])
    ipopt = Timing("IPOPT (CasADi, from Python)", np.array(ip_seconds), np.where(success, 0, 1), np.array(ip_iterations),
                   note="status column: IPOPT successes")

    # warm: closed-loop rollouts of the backup in C, one trajectory at a time; the first ones re-solved from
    # Python right after, the same states in the same order
    warm_runs, default_runs, shifted_runs = [], [], []
    for b, x0 in enumerate(X[: settings.warm[name]]):
        warm = engine.rollout(x0[None, :])
        warm_runs.append(warm)
        if b >= settings.trajectories:
            continue
        trajectory = warm.rollouts.x[0]
        python.solver.reset()
        default_runs.append(run_python(python, trajectory, lambda x: None) + (warm.u_backup[0],))
        python.solver.reset()
        python.cold_plan(trajectory[0])
        shifted_runs.append(run_python(python, trajectory, lambda x: None, python.shift) + (warm.u_backup[0],))
    c_warm = Timing(f"C, warm (rollouts, {len(warm_runs)} x {H + 1} steps)",
                    np.concatenate([w.stats.seconds.ravel() for w in warm_runs]),
                    np.concatenate([w.stats.status.ravel() for w in warm_runs]),
                    np.concatenate([w.stats.iterations.ravel() for w in warm_runs]))
    steps = f"{len(default_runs)} x {H + 1} steps"
    differences = {key: max(np.abs(r[0] - r[5]).max() for r in runs)
                   for key, runs in (("default", default_runs), ("shifted", shifted_runs))}
    py_default = merged(default_runs, f"Python, warm: previous solution as is ({steps})",
                        f"max abs u0 diff vs C warm {differences['default']:.1e}")
    py_shifted = merged(shifted_runs, f"Python, warm: C's shifted guess ({steps})",
                        f"max abs u0 diff vs C warm {differences['shifted']:.1e}")

    # accuracy table
    d = np.abs(u_c - u_i).max(axis=1)
    worst = int(np.argmax(d))
    accuracy.add(
        f"| {name} | N = {formulation.N}, nx = {nx} | {X.shape[0]} | {int(np.sum(cold.status == 0))} | "
        f"{int(np.sum(success))} | {d.max():.2e} | {np.median(d):.2e} | {int(np.sum(d <= MATCH_TOLERANCE))} | "
        f"{np.abs(u_guess - u_c).max():.1e} | #{worst}: x = {np.array2string(X[worst], precision=3)}, "
        f"u acados {u_c[worst, 0]:.7f}, IPOPT {u_i[worst, 0]:.7f} |"
    )
    for row in (c_cold, c_warm, py_zero, py_guess, py_default, py_shifted, ipopt):
        timing.add(row.row(name))


# -- SCPO throughput ----------------------------------------------------------------------------------------
def perturbed_thetas(problem, policy, count: int) -> np.ndarray:
    """``initial_theta(seed)`` and ``count - 1`` perturbations of it of the bank's probe norm (r / 30)."""
    scpo = problem.spec.scpo
    theta0 = policy.initial_theta(scpo.seed)
    rng = np.random.default_rng(scpo.seed + 1)
    directions = rng.standard_normal((count - 1, theta0.size))
    directions *= (scpo.trust_radius / 30.0) / np.linalg.norm(directions, axis=1, keepdims=True)
    return np.vstack([theta0, theta0 + directions])


def timed(call, minimum: float) -> tuple[float, float, int]:
    """Wall and process CPU seconds per call of ``call()``, repeated until ``minimum`` wall seconds have
    passed (at least once)."""
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= minimum:
            return elapsed / calls, (time.process_time() - cpu) / calls, calls


def adaptation_for(name: str):
    problem = build_problem(load_plant_spec(ROOT / "models" / f"{name}.yaml"))
    policy = residual_policy(problem, tuple(problem.spec.policy.hidden), problem.spec.policy.activation)
    start = time.perf_counter()
    adaptation = ControlAdaptation(problem, policy)
    return problem, policy, adaptation, time.perf_counter() - start


def scpo_benchmark(mpc_name: str, lqr_name: str, count: int, gradient_pieces: bool, throughput: Report,
                   gradients: Report) -> None:
    rates, gradient_rows = {}, []
    for name in (lqr_name, mpc_name):
        problem, policy, adaptation, build = adaptation_for(name)
        thetas = perturbed_thetas(problem, policy, count)
        N, H = problem.x0.shape[0], problem.spec.safety.horizon
        default_engine = adaptation.engine
        for threads in (1, 2):
            engine = (default_engine if default_engine.threads == threads
                      else problem.engine(adaptation.pi, jit=adaptation.jit, threads=threads))
            adaptation.engine = engine
            if adaptation.closed_form:
                adaptation.constraints(thetas)  # builds and compiles the batched maps
            seconds, cpu, calls = timed(lambda: adaptation.constraints(thetas), 1.0 if adaptation.closed_form else 0.0)
            steps = count * N * H
            rates[name, threads] = steps / seconds
            backup = "LQR (CasADi JIT)" if adaptation.closed_form else "MPC (acados, C)"
            reference = rates.get((lqr_name, threads))
            ratio = f"{reference / rates[name, threads]:.0f}x" if not adaptation.closed_form and reference else ""
            throughput.add(
                f"| {name} | {backup} | {threads} | {count} x {N} x {H} | {calls} | {seconds:.3f} | {cpu / seconds:.2f} | "
                f"{rates[name, threads]:,.0f} | {8 * N * H / rates[name, threads]:.2f} | {ratio} | {build:.1f} |"
            )
        adaptation.engine = default_engine
        if problem.spec.task.type != "closed_loop_cost":
            continue
        theta = thetas[min(1, count - 1)]
        calls = [("loss", lambda: adaptation.loss(theta)), ("loss_and_gradient", lambda: adaptation.loss_and_gradient(theta))]
        if gradient_pieces:
            calls.append(("gradient_pieces(4)", lambda: adaptation.gradient_pieces(theta, 4)))
        S, nx = adaptation.cost_starts.shape[0], problem.spec.nx
        for label, call in calls:
            if adaptation.closed_form:
                call()  # first call builds the maps
            seconds, cpu, repeats = timed(call, 1.0 if adaptation.closed_form else 0.0)
            solves = ""
            if not adaptation.closed_form:
                per_step = 1 if label == "loss" else 1 + nx
                solves = f"{S} x {H + 1} x {per_step} = {S * (H + 1) * per_step:,}"
            gradient_rows.append((name, label, default_engine.threads, seconds, cpu, repeats, solves, not adaptation.closed_form))
    lqr_seconds = {row[1]: row[3] for row in gradient_rows if not row[-1]}
    for name, label, threads, seconds, cpu, repeats, solves, mpc in gradient_rows:
        ratio = f"{seconds / lqr_seconds[label]:.0f}x" if mpc and label in lqr_seconds else ""
        gradients.add(f"| {name} | {label} | {threads} | {repeats} | {seconds:.3f} | {cpu / seconds:.2f} | {solves} "
                      f"| {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer states, trajectories and candidates (~2 min)")
    parser.add_argument("--out", default=None, help=f"markdown file to write (default: {DEFAULT_OUT.relative_to(ROOT)}; "
                                                    "none with --quick)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = QUICK if args.quick else FULL
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_OUT)
    started = time.perf_counter()
    command = "SCPO_CTRL_ACADOS_DIR=.vendor/acados .venv/bin/python benchmarks/mpc_performance.py" + (
        " --quick" if args.quick else "")

    report = Report()
    report.add("## MPC backup: acados against IPOPT, solve times, SCPO throughput", "",
               f"Command: `{command}`", "", f"Run of {datetime.date.today().isoformat()}.", "")
    progress("machine probe")
    report.add(*machine_lines(), "")
    report.add("acados settings (scpo_ctrl/backup/mpc.py SOLVER_OPTIONS): SQP with exact Hessian, HPIPM "
               f"({SOLVER_OPTIONS['hpipm_mode']}, partial condensing), NLP tolerances stat/eq/ineq "
               f"{SOLVER_OPTIONS['nlp_solver_tol_stat']:g}, comp {SOLVER_OPTIONS['nlp_solver_tol_comp']:g}; QP tolerances "
               f"stat/eq/ineq {SOLVER_OPTIONS['qp_solver_tol_stat']:g}, comp {SOLVER_OPTIONS['qp_solver_tol_comp']:g}. "
               "IPOPT: tol 1e-12 (its default bound_relax_factor 1e-8 lets bounded inputs pass their bound by ~1e-8).", "")

    accuracy, timing = Report(echo=False), Report(echo=False)
    accuracy.add(f"### 1. acados against IPOPT (first input, {settings.states} states)", "",
                 "States: the first points of the plant's seeded Halton sequence in its validation box (the first 64 "
                 "are the validation set). acados: cold solves in C. Python vs C: acados' Python interface after "
                 "reset() with the C engine's cold guess, against the C engine.", "",
                 "| plant | OCP | states | acados status 0 | IPOPT success | max abs du0 | median abs du0 "
                 f"| match to {MATCH_TOLERANCE:g} | Python vs C max abs du0 | worst state |",
                 "|---|---|---|---|---|---|---|---|---|---|")
    timing.add("### 2. Solve time per MPC solve, single thread", "",
               "Median and p99 [ms]; C rows timed in C around the acados call, Python rows with time.perf_counter "
               "around solve_for_x0 (the acados time_tot column is acados' own timer inside the same call, the overhead column "
               "the median over calls of the difference); C and Python cold solves alternate pass by pass, and each "
               "warm C trajectory is re-solved from Python right after it, since this machine's speed drifts; "
               "iterations are SQP iterations (IPOPT: its iterations) as mean / median / max.", "",
               "| plant | solves | count | status 0 | median ms | p99 ms | acados time_tot median ms "
               "| Python overhead median ms | iterations mean / median / max | note |",
               "|---|---|---|---|---|---|---|---|---|---|")
    for name, _ in PLANTS:
        progress(f"{name}: acados against IPOPT, solve times")
        solver_benchmark(name, settings, accuracy, timing)
    report.add(*accuracy.lines, "", *timing.lines, "")

    throughput, gradients = Report(echo=False), Report(echo=False)
    throughput.add("### 3. SCPO: closed-loop steps per second of ControlAdaptation.constraints", "",
                   "Candidates: initial_theta(seed) and perturbations of norm trust radius / 30 (SCPO's probe norm); "
                   "steps = candidates x validation states x horizon. `s per bank` extrapolates to SCPO's bank of 8 "
                   "candidates (raw step, previous step, 4 gradient pieces, 2 random pairs). The ratio is LQR steps/s "
                   "over MPC steps/s at the same thread count. CPU / wall: the process's CPU seconds over wall seconds during "
                   "the calls (the cores it actually got: up to 1 with one thread, 2 with two). Build s: ControlAdaptation's constructor (JIT compiles; "
                   "for the MPC also the backup's training trajectories or the cost's compiled gradient).", "",
                   "| plant | backup | threads | candidates x states x steps | calls | s per call | CPU / wall | steps/s "
                   "| s per bank of 8 | LQR / MPC | build s |", "|---|---|---|---|---|---|---|---|---|---|---|")
    gradients.add("### 3b. Cart-pole closed-loop cost task: loss and gradient", "",
                  "The MPC version runs the C rollouts with forward-difference Jacobians of the MPC (1 + nx warm "
                  "solves per step) and differentiates the rollout through that local model; the LQR version is "
                  "CasADi AD through the JIT-compiled rollout. Threads: the adaptation's engine (the usable cores).", "",
                  "| plant | call | threads | calls | s per call | CPU / wall | MPC solves per call | MPC / LQR |",
                  "|---|---|---|---|---|---|---|---|")
    for mpc_name, lqr_name in PLANTS:
        progress(f"{lqr_name}, {mpc_name}: SCPO throughput")
        scpo_benchmark(mpc_name, lqr_name, settings.thetas[lqr_name], settings.gradient_pieces, throughput, gradients)
    report.add(*throughput.lines, "", *gradients.lines, "")

    elapsed = time.perf_counter() - started
    load = os.getloadavg()
    report.add(f"Wall time of the run: {elapsed:.0f} s. Load average at the end (1, 5, 15 min): "
               f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}.")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(report.lines) + "\n")
        print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
