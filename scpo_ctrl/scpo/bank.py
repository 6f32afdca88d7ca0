"""SCPO's closed loops on an executor, in blocks: the bank, and the closed-loop cost on an MPC backup.

The bank evaluation (:meth:`RolloutEngine.metrics_batch` / :meth:`MpcRolloutEngine.metrics_batch`: every
candidate parameter vector from every validation state over the safety horizon) is the cost of an SCPO
iteration; with an MPC backup it is thousands of solves. Its blocks are independent, so they run on an
:class:`~scpo_ctrl.execution.Executor`. A worker rebuilds the rollout engine from content (the plant file's text
and the data files it names, the policy's widths, the JIT setting), so the engine it runs is the one SCPO built
here, and every block's rows are bit-identical to the in-process evaluation (each closed loop depends on its
parameter vector and initial state alone).

With an MPC backup and the closed-loop cost task, the loss, its gradient pieces and the line search's loss
evaluations run closed loops too (:class:`~scpo_ctrl.scpo.mpc_cost.MpcCostLoops`: one per start, with the
MPC's Jacobian at every step for the gradient). :class:`DistributedCostLoops` runs them in blocks of starts, and
the driver concatenates the blocks in start order before weighting and averaging them as in this process.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config.plant_content import plant_files, write_plant_files
from ..config.plant_spec import PlantSpec, load_plant_spec
from ..errors import UsageError
from ..execution import Executor, Progress, Recipe

#: a block of the bank: at most this many closed loops (candidates x states)
LOOPS_PER_TASK = 256
#: a block of the closed-loop cost: at most this many starts (with the gradient, each closed loop solves the MPC
#: 1 + nx times a step)
STARTS_PER_TASK = 32


@dataclass(frozen=True)
class BankTask:
    """One block of the bank.

    Attributes
    ----------
    thetas : ndarray, shape (n, d)
    x0 : ndarray, shape (N, nx)
    """

    thetas: np.ndarray
    x0: np.ndarray


def rollout_recipe(spec: PlantSpec, hidden: tuple, activation: str, jit: bool) -> Recipe:
    """What a worker needs to rebuild the closed-loop engine of ``spec`` with a residual policy of ``hidden``."""
    content = {"plant": plant_files(spec, Path(spec.source).name), "hidden": list(hidden), "activation": activation,
               "jit": bool(jit)}
    return Recipe(f"{__name__}:rollout_worker", json.dumps(content, sort_keys=True).encode())


def cost_recipe(spec: PlantSpec, hidden: tuple, activation: str, jit: bool) -> Recipe:
    """What a worker needs to rebuild the closed loops of the closed-loop cost (MPC backup): as
    :func:`rollout_recipe`, built by :func:`cost_worker`."""
    return Recipe(f"{__name__}:cost_worker", rollout_recipe(spec, hidden, activation, jit).content)


def _rebuild(content: bytes):
    """``(spec, policy, engine, jit)`` from a :func:`rollout_recipe`'s content, the engine on one thread."""
    from ..jit import compiler_available
    from ..problem import build_problem
    from .control import closed_loop_law, residual_policy

    recipe = json.loads(content)
    with tempfile.TemporaryDirectory(prefix="scpo-worker-") as work:
        spec = load_plant_spec(write_plant_files(recipe["plant"], Path(work)))
    if recipe["jit"] and not compiler_available():
        raise RuntimeError("the driver compiles its rollouts (JIT) and this worker has no C compiler: results "
                           "would not be bit-identical")
    problem = build_problem(spec)
    policy = residual_policy(problem, tuple(recipe["hidden"]), recipe["activation"])
    engine = problem.engine(closed_loop_law(problem, policy), jit=recipe["jit"], threads=1)
    return spec, policy, engine, recipe["jit"]


def rollout_worker(content: bytes):
    """Build the engine a :func:`rollout_recipe` describes; returns ``task -> (G, X)`` of ``metrics_batch``."""
    engine = _rebuild(content)[2]

    def run(task: BankTask):
        return engine.metrics_batch(task.x0, task.thetas)

    return run


@dataclass(frozen=True)
class CostTask:
    """One block of starts of the closed-loop cost.

    Attributes
    ----------
    theta : ndarray, shape (d,)
    starts : ndarray, shape (S, nx)
    gradient : bool
        Per-start ``(J_s (S,), grad J_s (d, S))``; else the trajectories ``(X (S, H+1, nx), U (S, H+1, nu))``.
    """

    theta: np.ndarray
    starts: np.ndarray
    gradient: bool


def cost_worker(content: bytes):
    """Build the cost's closed loops a :func:`cost_recipe` describes; returns ``task -> results`` of
    :class:`CostTask`."""
    from .mpc_cost import MpcCostLoops

    spec, policy, engine, jit = _rebuild(content)
    task_spec = spec.task
    loops = MpcCostLoops(engine, policy, np.array(task_spec.Q), np.array(task_spec.R), jit)

    def run(task: CostTask):
        if task.gradient:
            return loops.per_start(task.theta, task.starts)
        return loops.trajectories(task.theta, task.starts)

    return run


@dataclass(frozen=True)
class DistributedCostLoops:
    """:class:`~scpo_ctrl.scpo.mpc_cost.MpcCostLoops` in blocks of starts on an executor.

    Parameters
    ----------
    executor : Executor
    recipe : Recipe
        From :func:`cost_recipe`, describing the same engine and policy as the caller's.
    progress : callable, optional
        ``progress(done, total)`` while a batch runs.
    """

    executor: Executor
    recipe: Recipe
    progress: Progress | None = None

    def _run(self, theta: np.ndarray, starts: np.ndarray, gradient: bool) -> list:
        theta = np.asarray(theta, dtype=float)
        blocks = cost_blocks(starts.shape[0], self.executor.workers)
        return self.executor.map(self.recipe, [CostTask(theta, starts[j0:j1], gradient) for j0, j1 in blocks],
                                 self.progress)

    def trajectories(self, theta: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`MpcCostLoops.trajectories`: ``X (S, H+1, nx)``, ``U (S, H+1, nu)``."""
        results = self._run(theta, starts, gradient=False)
        return np.concatenate([X for X, _ in results]), np.concatenate([U for _, U in results])

    def per_start(self, theta: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`MpcCostLoops.per_start`: ``J_s (S,)``, ``grad J_s (d, S)``."""
        results = self._run(theta, starts, gradient=True)
        return np.concatenate([J for J, _ in results]), np.concatenate([g for _, g in results], axis=1)


@dataclass(frozen=True)
class DistributedBank:
    """``metrics_batch`` of an engine, in blocks on an executor.

    Parameters
    ----------
    executor : Executor
    recipe : Recipe
        From :func:`rollout_recipe`, describing the same engine as the caller's.
    progress : callable, optional
        ``progress(done, total)`` while a batch runs.
    """

    executor: Executor
    recipe: Recipe
    progress: Progress | None = None

    def metrics_batch(self, x0: np.ndarray, thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`RolloutEngine.metrics_batch`: ``G (n, N, H+1, ng)``, ``X (n, N, H+1, nx)``."""
        x0 = np.atleast_2d(np.asarray(x0, dtype=float))
        thetas = np.atleast_2d(np.asarray(thetas, dtype=float))
        blocks = bank_blocks(thetas.shape[0], x0.shape[0], self.executor.workers)
        tasks = [BankTask(thetas[i0:i1], x0[j0:j1]) for (i0, i1), (j0, j1) in blocks]
        results = self.executor.map(self.recipe, tasks, self.progress)
        G = np.empty((thetas.shape[0], x0.shape[0]) + results[0][0].shape[2:])
        X = np.empty((thetas.shape[0], x0.shape[0]) + results[0][1].shape[2:])
        for ((i0, i1), (j0, j1)), (g, x) in zip(blocks, results):
            G[i0:i1, j0:j1], X[i0:i1, j0:j1] = g, x
        return G, X


def check_workers_rebuild(engine, bank: DistributedBank, x0: np.ndarray, dimension: int) -> None:
    """Raise :class:`~scpo_ctrl.errors.UsageError` unless the workers' closed loops of the backup from ``x0 (N,
    nx)`` are bit for bit this process's: they rebuild the engine from the plant file's text, so a spec changed
    after it was read, or a worker on another architecture or compiler, would silently simulate something else."""
    theta = np.zeros((1, dimension))
    here, there = engine.metrics_batch(x0, theta), bank.metrics_batch(x0, theta)
    if not all(np.array_equal(a, b, equal_nan=True) for a, b in zip(here, there)):
        raise UsageError("--ray: the workers' closed loops differ from this process's (a plant spec changed after "
                         "it was read from its text, or workers on another architecture or compiler); run without "
                         "--ray")


def bank_blocks(n: int, N: int, workers: int) -> list:
    """Blocks ``((i0, i1), (j0, j1))`` of candidates x states: at most :data:`LOOPS_PER_TASK` loops each, and at
    least two blocks per worker when the bank is large enough to share."""
    per_task = max(1, min(LOOPS_PER_TASK, (n * N) // max(1, 2 * workers)))
    states_per = min(N, per_task)
    thetas_per = max(1, per_task // states_per)
    return [((i, min(n, i + thetas_per)), (j, min(N, j + states_per)))
            for i in range(0, n, thetas_per) for j in range(0, N, states_per)]


def cost_blocks(S: int, workers: int) -> list:
    """Blocks ``(j0, j1)`` of the cost's starts, in order: at most :data:`STARTS_PER_TASK` each, and at least two
    per worker when there are enough starts."""
    per_task = max(1, min(STARTS_PER_TASK, S // max(1, 2 * workers)))
    return [(j, min(S, j + per_task)) for j in range(0, S, per_task)]
