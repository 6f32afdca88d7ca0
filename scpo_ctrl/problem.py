"""The control problem assembled from a plant file: model, backup, target set, validation set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backup.lqr import LqrBackup, design_lqr
from .backup.target_set import TargetSet, compute_target_set
from .config.plant_spec import PlantSpec
from .errors import SpecError
from .plant.model import PlantModel, build_plant
from .sim.initial_states import validation_states
from .sim.rollout import Rollouts, RolloutEngine, SafetyEvaluation

BACKUPS = {"lqr": design_lqr}


@dataclass(frozen=True)
class ControlProblem:
    """Everything SCPO and the checks start from.

    Attributes
    ----------
    spec : PlantSpec
    model : PlantModel
    backup : LqrBackup
    target : TargetSet
    x0 : ndarray, shape (N, nx)
        The validation initial states.
    """

    spec: PlantSpec
    model: PlantModel
    backup: LqrBackup
    target: TargetSet
    x0: np.ndarray

    def closed_loop(self, policy, theta: np.ndarray | None = None) -> tuple[Rollouts, SafetyEvaluation]:
        """Roll ``policy (x, theta) -> u`` out from the validation states over the safety horizon.

        Uses CasADi's virtual machine: for a few dozen states a JIT compile costs more than it saves.
        """
        engine = RolloutEngine(self.model, policy, self.spec.safety.horizon, jit=False)
        return engine.evaluate(self.x0, self.target.c, self.target.P, self.target.x_eq, theta)


def build_problem(spec: PlantSpec) -> ControlProblem:
    """Build the model, design the backup and its target set, draw the validation set."""
    model = build_plant(spec)
    design = BACKUPS.get(spec.backup.type)
    if design is None:
        available = ", ".join(sorted(BACKUPS))
        raise SpecError(
            spec.source, "backup.type",
            f"backup type {spec.backup.type!r} is not available in this version (available: {available})",
        )
    backup = design(model)
    target = compute_target_set(model, backup, seed=spec.safety.initial_states.seed)
    return ControlProblem(spec, model, backup, target, validation_states(spec.safety.initial_states))
