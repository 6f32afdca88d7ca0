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
