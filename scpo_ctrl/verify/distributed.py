"""verify's Monte Carlo closed loops and reachability cells on an executor (Ray), in blocks.

Monte Carlo: a worker rebuilds the closed loop from content: the run's plant file (and the data files it names),
its ``policy.npz`` (the float64 reference law) and the exported host library's bytes, whose sha256 it checks
against the export manifest before loading it, so every worker runs the certified artefact and nothing else.
Blocks of initial states are concatenated in order: the batch is bit-identical to the in-process one (each
closed loop depends on its initial state alone).

Reachability: a worker rebuilds the deployed law and the plant model from the same plant file and
``policy.npz`` (checking the law's digest against the driver's) and runs blocks of a bisection pass's cells: the
blocks the in-process analysis runs (:func:`~scpo_ctrl.verify.reach.cell_blocks`; numpy's rounding for a cell
depends on how many cells share its batch, so the blocks are fixed by the cell count, not by the workers), merged
as it merges them: the sets are the in-process ones, bit for bit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config.plant_content import plant_files, write_plant_files
from ..config.plant_spec import load_plant_spec
from ..execution import Executor, Progress, Recipe
from ..export.host_library import HostLaw
from ..export.law import evaluate, law_digest, law_from_run
from ..plant.model import build_plant
from ..sim.closed_loop import ClosedLoopBatch, simulate
from .reach import ReachSettings, cell_blocks, cell_propagation, merge_cell_blocks

#: initial states per task
STATES_PER_TASK = 2_000


@dataclass(frozen=True)
class LoopTask:
    """A block of Monte Carlo initial states ``x0 (N, nx)``; ``exported``: the host C in the loop, else the
    float64 reference law."""

    x0: np.ndarray
    exported: bool


def monte_carlo_recipe(run_dir: Path, library: Path, library_sha256: str, precision: str, horizon: int) -> Recipe:
    """What a worker needs to run the run's closed loops: plant, policy, the exported host library (bytes and
    the manifest's sha256 of them), precision and horizon."""
    content = {**_run_content(Path(run_dir)), "library": base64.b64encode(Path(library).read_bytes()).decode(),
               "library_sha256": library_sha256, "precision": precision, "horizon": int(horizon)}
    return Recipe(f"{__name__}:closed_loop_worker", json.dumps(content, sort_keys=True).encode())


def _run_content(run_dir: Path) -> dict:
    """The run's plant file (and the data files it names) and ``policy.npz``, as recipe content."""
    spec = load_plant_spec(run_dir / "plant.yaml")
    return {"plant": plant_files(spec), "policy": base64.b64encode((run_dir / "policy.npz").read_bytes()).decode()}


def _law_and_model(recipe: dict, work: Path) -> tuple:
    """``(law, model)`` rebuilt in the directory ``work`` from :func:`_run_content`'s part of ``recipe``."""
    plant_path = write_plant_files(recipe["plant"], work)
    (plant_path.parent / "policy.npz").write_bytes(base64.b64decode(recipe["policy"]))
    return law_from_run(plant_path.parent), build_plant(load_plant_spec(plant_path))


def closed_loop_worker(content: bytes):
    """Build what a :func:`monte_carlo_recipe` describes; returns ``task -> ClosedLoopBatch``."""
    recipe = json.loads(content)
    library_bytes = base64.b64decode(recipe["library"])
    if hashlib.sha256(library_bytes).hexdigest() != recipe["library_sha256"]:
        raise ValueError("the host library sent to this worker is not the exported one (sha256 differs)")
    work = Path(tempfile.mkdtemp(prefix="scpo-verify-worker-"))  # holds the loaded library while ``run`` lives
    law, model = _law_and_model(recipe, work)
    library = work / "policy.so"
    library.write_bytes(library_bytes)
    host = HostLaw(library, law.name, law.nx, law.nu, recipe["precision"])
    horizon = recipe["horizon"]

    def run(task: LoopTask) -> ClosedLoopBatch:
        controller = (lambda X: host.evaluate(X).u) if task.exported else (lambda X: evaluate(law, X).u)
        return simulate(model, controller, task.x0, horizon, law.P, law.c, law.x_eq)

    weakref.finalize(run, shutil.rmtree, work, True)
    return run


def distributed_closed_loop(executor: Executor, recipe: Recipe, progress: Progress | None = None):
    """``closed_loop(X0, exported) -> ClosedLoopBatch`` for :func:`~scpo_ctrl.verify.sampled.monte_carlo_checks`,
    in blocks of :data:`STATES_PER_TASK` on ``executor``."""

    def closed_loop(X0: np.ndarray, exported: bool) -> ClosedLoopBatch:
        blocks = [X0[i:i + STATES_PER_TASK] for i in range(0, len(X0), STATES_PER_TASK)]
        parts = executor.map(recipe, [LoopTask(block, exported) for block in blocks], progress)
        first = parts[0]
        return ClosedLoopBatch(
            x=np.concatenate([p.x for p in parts]), u=np.concatenate([p.u for p in parts]),
            g=np.concatenate([p.g for p in parts]), g_input=np.concatenate([p.g_input for p in parts]),
            level=np.concatenate([p.level for p in parts]), row_names=first.row_names,
            input_row_names=first.input_row_names)

    return closed_loop


# -- reachability cells --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellTask:
    """A block of reachability cells ``[lo, hi]``, each ``(M, nx)``, and the target level ``c_T`` the driver's
    analysis fixed."""

    lo: np.ndarray
    hi: np.ndarray
    target_level: float


def reach_recipe(run_dir: Path, law, horizon: int, settings: ReachSettings) -> Recipe:
    """What a worker needs to run reachability cells: the run's plant file (and data files), ``policy.npz``, the
    digest of the driver's law (the worker checks it rebuilt the same one), the horizon and the settings."""
    content = {**_run_content(Path(run_dir)), "law_sha256": law_digest(law), "horizon": int(horizon),
               "settings": asdict(settings)}
    return Recipe(f"{__name__}:reach_worker", json.dumps(content, sort_keys=True).encode())


def reach_worker(content: bytes):
    """Build what a :func:`reach_recipe` describes; returns ``task -> (entered, failed, because, records,
    sensitivity)`` of :func:`~scpo_ctrl.verify.reach.cell_propagation` on the task's cells."""
    recipe = json.loads(content)
    work = Path(tempfile.mkdtemp(prefix="scpo-reach-worker-"))
    try:
        law, model = _law_and_model(recipe, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if law_digest(law) != recipe["law_sha256"]:
        raise ValueError("the law rebuilt from the run's plant.yaml and policy.npz is not the driver's (digest "
                         "differs)")
    propagate = cell_propagation(law, model, recipe["horizon"], ReachSettings(**recipe["settings"]))

    def run(task: CellTask) -> tuple:
        return propagate(task.lo, task.hi, task.target_level)

    return run


def distributed_propagate(executor: Executor, recipe: Recipe, progress: Progress | None = None) -> Callable:
    """``propagate(lo, hi, target_level)`` for :func:`~scpo_ctrl.verify.reach.analyse`: the pass's blocks
    (:func:`~scpo_ctrl.verify.reach.cell_blocks`, the ones the in-process pass runs) as tasks on ``executor``,
    merged as in-process (:func:`~scpo_ctrl.verify.reach.merge_cell_blocks`)."""

    def propagate(lo: np.ndarray, hi: np.ndarray, target_level: float) -> tuple:
        blocks = cell_blocks(len(lo))
        parts = executor.map(recipe, [CellTask(lo[i:j], hi[i:j], target_level) for i, j in blocks], progress)
        return merge_cell_blocks(parts, [i for i, _ in blocks])

    return propagate
