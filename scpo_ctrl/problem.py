"""The control problem assembled from a plant file: model, backup, target set, validation set."""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np

from .backup.kinds import Backup, MpcBackup, backup_for
from .backup.lqr import LqrBackup, design_lqr
from .backup.target_set import TargetSet, compute_target_set
from .config.plant_spec import PlantSpec
from .errors import SpecError
from .plant.model import PlantModel, build_plant
from .sim.initial_states import validation_states
from .sim.rollout import Rollouts, RolloutEngine, SafetyEvaluation


@dataclass(frozen=True)
class ControlProblem:
    """Everything SCPO and the checks start from.

    Attributes
    ----------
    spec : PlantSpec
    model : PlantModel
    backup : LqrBackup
        The LQR: the backup itself, or, with an MPC backup, the source of its terminal cost and set.
    target : TargetSet
    x0 : ndarray, shape (N, nx)
        The validation initial states.
    mpc : MpcBackup or None
        The MPC backup when the plant file asks for one.
    """

    spec: PlantSpec
    model: PlantModel
    backup: LqrBackup
    target: TargetSet
    x0: np.ndarray
    mpc: MpcBackup | None = None

    @property
    def backup_kind(self) -> Backup:
        """Which backup the plant file asks for (see :mod:`scpo_ctrl.backup.kinds`)."""
        return backup_for(self.spec.backup.type, self.spec.backup.solver)

    def backup_law(self) -> ca.Function:
        """The backup alone as a law: ``(x, theta (0,)) -> u`` for the LQR, ``(x, theta (0,), u_backup) -> u_backup``
        for the MPC (a law with a third input runs on top of the MPC, see :meth:`engine`)."""
        if self.backup_kind.in_closed_form:
            return self.backup.function()
        x, theta, u_backup = ca.SX.sym("x", self.spec.nx), ca.SX.sym("theta", 0), ca.SX.sym("u_backup", self.spec.nu)
        return ca.Function("backup", [x, theta, u_backup], [u_backup], ["x", "theta", "u_backup"], ["u"])

    def engine(self, law: ca.Function, horizon: int | None = None, jit: bool | None = None,
               threads: int | None = None):
        """A rollout engine for ``law``: :class:`RolloutEngine` for ``(x, theta) -> u``, :class:`MpcRolloutEngine`
        for ``(x, theta, u_backup) -> u`` (needs the MPC backup)."""
        horizon = self.spec.safety.horizon if horizon is None else horizon
        if law.n_in() == 3:
            if self.backup_kind.in_closed_form:
                raise ValueError(f"law {law.name()} runs on top of an MPC backup, and {self.spec.name} has none")
            from .sim.mpc_rollout import MpcRolloutEngine

            return MpcRolloutEngine(self.model, self.mpc.formulation, self.mpc.files, law, horizon, threads)
        return RolloutEngine(self.model, law, horizon, jit=jit, threads=threads)

    def closed_loop(self, law, theta: np.ndarray | None = None) -> tuple[Rollouts, SafetyEvaluation]:
        """Roll ``law`` out from the validation states over the safety horizon (see :meth:`engine`).

        Uses CasADi's virtual machine for CasADi-only loops: for a few dozen states a JIT compile costs more
        than it saves.
        """
        engine = self.engine(law, jit=False)
        return engine.evaluate(self.x0, self.target.c, self.target.P, self.target.x_eq, theta)


def build_problem(spec: PlantSpec) -> ControlProblem:
    """Build the model, design the backup and its target set, draw the validation set."""
    model = build_plant(spec)
    try:
        kind = backup_for(spec.backup.type, spec.backup.solver)
    except ValueError as exc:
        raise SpecError(spec.source, "backup.type", str(exc)) from None
    backup = design_lqr(model)
    target = compute_target_set(model, backup, seed=spec.safety.initial_states.seed)
    mpc = kind.solver(model, backup, target.c)
    return ControlProblem(spec, model, backup, target, validation_states(spec.safety.initial_states), mpc)
