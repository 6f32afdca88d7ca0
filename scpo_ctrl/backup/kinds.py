"""The three backups as one interface: what the rest of scpo-ctrl asks of a backup, answered per backup.

* ``lqr``: ``u_b = u_eq - K (x - x_eq)``, computed inside the deployed law (C, ONNX, reference);
* ``mpc``: the acados MPC (``backup.type: mpc``, solver ``sqp`` or ``sqp_rti``); its input is solved outside
  the law and given to it; x86-64 only, so the Cortex-M4 build carries the LQR fallback instead;
* ``admm``: the embedded float32 ADMM MPC (``backup.type: mpc``, ``solver: admm``); its input is given to the
  law too, and its C runs on the Cortex-M4F with the law on top: that build is the certified law.

Modules outside :mod:`scpo_ctrl.backup` never test which backup they have; they ask one of these objects
(``tests/test_structure.py`` holds them to it). The deployed law and the policy record the backup's
:attr:`Backup.type` only (``lqr`` or ``mpc``): :func:`backup_for` of a type alone answers for every backup
of that type, which is all the law-level questions need (both MPCs give the law its input the same way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from ..errors import SpecError

if TYPE_CHECKING:  # the solvers' modules are imported where a solver is built (the law needs none of them)
    from ..plant.model import PlantModel
    from .embedded_mpc import EmbeddedMpcFormulation
    from .embedded_mpc_codegen import EmbeddedSolverFiles
    from .lqr import LqrBackup
    from .mpc import MpcFormulation, MpcSolverFiles

#: what an export's manifest says of the Cortex-M4 build of a run on the acados MPC
CORTEX_M4_LQR_FALLBACK = (
    "built with the LQR fallback: the bundled acados libraries are x86-64 only, so cortex-m4/ holds this run's "
    "network, gate and monitor on top of the LQR u_eq - K (x - x_eq) instead of the MPC. This is NOT the law "
    "SCPO certified (SCPO adapted and validated the network on the MPC); verify's cortex_m4_lqr_fallback check "
    "says how its closed loop fares")
#: what an export's manifest says of the Cortex-M4 build of a run on the embedded MPC
CORTEX_M4_CERTIFIED = (
    "the certified law: cortex-m4/ holds this run's network, gate and monitor on top of the embedded MPC, whose "
    "float32 solver (mpc/empc_solver.h with mpc/empc_data.h) is the C SCPO's rollouts ran")


@dataclass(frozen=True)
class MpcBackup:
    """An MPC backup: its formulation and the compiled acados solver (see :mod:`.mpc`), or, with
    ``solver: admm``, the embedded linear MPC and its generated float32 C (:mod:`.embedded_mpc`).

    The LQR designed beside it supplies the terminal cost and set.
    """

    formulation: MpcFormulation | EmbeddedMpcFormulation
    files: MpcSolverFiles | EmbeddedSolverFiles

    @property
    def embedded(self) -> bool:
        """True for the embedded MPC (the same C on the host and the Cortex-M4F)."""
        from .embedded_mpc_codegen import EmbeddedSolverFiles

        return isinstance(self.files, EmbeddedSolverFiles)


class Backup(Protocol):
    """What scpo-ctrl asks of a backup.

    Attributes
    ----------
    name : str
        The name that picks it in a plant file: ``backup.type`` (``lqr``, ``mpc``), or the MPC's
        ``backup.solver`` when that picks another implementation (``admm``).
    type : str
        ``lqr`` or ``mpc``: what the deployed law, the policy file and the manifest record.
    deployed_law_description : str
        What a HIL report calls the exported law running on it.
    in_closed_form : bool
        True: the law computes the backup's input itself, ``u_eq - K (x - x_eq)``, a closed-form function of
        the state: the C and ONNX compute it, rollouts are CasADi graphs with gradients, and error bounds,
        falsification and reachability follow it through. False: its input is solved outside the law (a C
        loop around the solver) and given to the law as ``u_backup (nu,)``.
    cortex_m4_carries_certified_law : bool
        Whether ``export --target cortex-m4`` builds the law SCPO certified (else the LQR fallback: the same
        network, gate and monitor on the LQR).
    solver_runs_on_cortex_m4 : bool
        Whether the Cortex-M4 build links the backup's solver beside the law.
    algorithm : str
        The solver's algorithm as reports name it (``SQP``, ``ADMM``; empty for the LQR).
    fixed_work : bool
        Whether every solve does the same work (a fixed iteration count, no convergence test).
    digest_texts : tuple of str
        Texts the law's digest includes (none for the LQR: its digests stay as they were before MPC backups).
    box_check_samples : int
        Halton states of the initial box ``check`` simulates the backup's closed loop from (besides the corners
        and the validation set).
    loop_samples : int or None
        Monte Carlo states per round of the adapt/verify loop (None: the loop's default).
    """

    name: str
    type: str
    deployed_law_description: str
    in_closed_form: bool
    cortex_m4_carries_certified_law: bool
    solver_runs_on_cortex_m4: bool
    algorithm: str
    fixed_work: bool
    digest_texts: tuple
    box_check_samples: int
    loop_samples: int | None

    def solver(self, model: PlantModel, lqr: LqrBackup, level: float) -> MpcBackup | None:
        """The backup's solver for ``model``, built (or found in the cache) on the LQR ``lqr`` and the target
        level ``level`` (its terminal cost and set); None for a backup without one. SpecError if the plant
        file asks for what the backup cannot do."""

    def policy_marks(self, solver: MpcBackup | None) -> dict:
        """What ``adapt`` records in ``policy.npz`` about the backup (``solver``: from :meth:`solver`)."""

    def manifest_record(self, target: str, solver_name: str | None = None,
                        controller_library: str | None = None) -> dict:
        """The ``backup`` entry of an export's manifest, for an export to ``target``."""

    def campaign_inputs(self, X: np.ndarray, law, solve: Callable[[np.ndarray], np.ndarray],
                        seed: int) -> np.ndarray | None:
        """The backup's inputs ``(N, nu)`` at an equivalence campaign's states ``X (N, nx)`` (None: the law
        computes them). ``law``: the deployed law (region, ``u_eq``, ``u_scale``); ``solve(X) -> U``: the
        exported solver from a cold start."""


@dataclass(frozen=True)
class Lqr:
    """The LQR backup (:mod:`.lqr`)."""

    name: str = "lqr"
    type: str = "lqr"
    deployed_law_description: str = "the exported law"
    in_closed_form: bool = True
    cortex_m4_carries_certified_law: bool = True
    solver_runs_on_cortex_m4: bool = False
    algorithm: str = ""
    fixed_work: bool = True
    digest_texts: tuple = ()
    box_check_samples: int = 4096
    loop_samples: int | None = None

    def solver(self, model: PlantModel, lqr: LqrBackup, level: float) -> MpcBackup | None:
        return None

    def policy_marks(self, solver: MpcBackup | None) -> dict:
        return {}

    def manifest_record(self, target: str, solver_name: str | None = None,
                        controller_library: str | None = None) -> dict:
        return {"type": "lqr"}

    def campaign_inputs(self, X, law, solve, seed):
        return None


@dataclass(frozen=True)
class AcadosMpc:
    """The acados MPC (:mod:`.mpc`): host only."""

    name: str = "mpc"
    type: str = "mpc"
    deployed_law_description: str = "the exported law on the exported acados MPC (the law SCPO certified)"
    in_closed_form: bool = False
    cortex_m4_carries_certified_law: bool = False
    solver_runs_on_cortex_m4: bool = False
    algorithm: str = "SQP"
    fixed_work: bool = False
    digest_texts: tuple = ("backup=mpc",)
    #: a solve per step: 48 box states cost about what 4,096 LQR ones do
    box_check_samples: int = 48
    #: a solve per step
    loop_samples: int | None = 256

    def solver(self, model: PlantModel, lqr: LqrBackup, level: float) -> MpcBackup | None:
        from .mpc import build_solver, formulation_for

        formulation = formulation_for(model, lqr, level)
        return MpcBackup(formulation, build_solver(formulation, model))

    def policy_marks(self, solver: MpcBackup | None) -> dict:
        # the solver's name carries a hash of its whole formulation: export checks it adapts the same MPC
        return {"mpc_solver": solver.files.solver_name}

    def manifest_record(self, target: str, solver_name: str | None = None,
                        controller_library: str | None = None) -> dict:
        from .acados_env import runtime_hashes

        cortex_m4 = (CORTEX_M4_LQR_FALLBACK if target == "cortex-m4" else
                     "not built (export with --target cortex-m4 for the LQR-fallback build): the bundled acados "
                     "libraries are x86-64 only, so the MPC-backed law runs on the host (SIL) only")
        return {"type": "mpc", "solver": solver_name, "controller_library": controller_library,
                "sources": "mpc/ (acados-generated solver and the controller's C)",
                "acados_runtime_sha256": runtime_hashes(), "cortex_m4": cortex_m4}

    def campaign_inputs(self, X, law, solve, seed):
        """The solver's cold solution at the finite states inside the monitor region; elsewhere (where the
        backup's input only feeds the fallback, and the solver may not even be defined) seeded draws over
        ``u_eq +- 3 u_scale``. One in ten of the drawn inputs and one in twenty of the solved ones is NaN (a
        failed solve: the law must fall back on ``u_eq``)."""
        rng = np.random.default_rng(seed)
        with np.errstate(invalid="ignore"):
            solvable = np.all(np.isfinite(X), axis=1) & np.all((X >= law.region_min) & (X <= law.region_max), axis=1)
        U = law.u_eq + law.u_scale * rng.uniform(-3.0, 3.0, size=(len(X), law.nu))
        U[rng.random(len(X)) < 0.1] = np.nan
        if solvable.any():
            U[solvable] = solve(X[solvable])
        U[solvable & (rng.random(len(X)) < 0.05)] = np.nan
        return U


@dataclass(frozen=True)
class EmbeddedMpc(AcadosMpc):
    """The embedded float32 ADMM MPC (:mod:`.embedded_mpc`): the same C on the host and the Cortex-M4F."""

    name: str = "admm"
    deployed_law_description: str = ("the certified law: the exported law on the embedded MPC, the same float32 C "
                                      "SCPO ran")
    cortex_m4_carries_certified_law: bool = True
    solver_runs_on_cortex_m4: bool = True
    algorithm: str = "ADMM"
    fixed_work: bool = True

    def solver(self, model: PlantModel, lqr: LqrBackup, level: float) -> MpcBackup | None:
        from .embedded_mpc import embedded_formulation_for
        from .embedded_mpc_codegen import build_embedded_solver

        extra = [row.name for row in model.rows if row.kind == "extra"]
        if extra:
            raise SpecError(model.spec.source, "backup.solver",
                            f"the admm solver plans with the state and input limits only, and this file has extra "
                            f"constraints ({', '.join(extra)}): use solver sqp (acados), or drop the constraints")
        formulation = embedded_formulation_for(model, lqr, level)
        return MpcBackup(formulation, build_embedded_solver(formulation))

    def manifest_record(self, target: str, solver_name: str | None = None,
                        controller_library: str | None = None) -> dict:
        return {"type": "mpc", "solver": solver_name, "embedded": True, "controller_library": controller_library,
                "sources": "mpc/ (the embedded MPC's generated constants, its float32 ADMM solver, the controller's C)",
                "cortex_m4": ("built: " + CORTEX_M4_CERTIFIED) if target == "cortex-m4" else
                             "not built (export with --target cortex-m4: the embedded MPC runs there)"}


#: every backup, by the plant-file name that picks it
BACKUPS: dict = {backup.name: backup for backup in (Lqr(), AcadosMpc(), EmbeddedMpc())}


def backup_named(name: str) -> Backup:
    """The backup called ``name``; ValueError naming the valid ones for another."""
    try:
        return BACKUPS[name]
    except KeyError:
        raise ValueError(f"no backup named {name!r} (valid: {', '.join(BACKUPS)})") from None


def backup_for(type: str, solver: str | None = None) -> Backup:
    """The backup a plant file's ``backup.type`` and ``backup.solver`` pick (a solver that names no backup of
    its own, ``sqp``, ``sqp_rti``, leaves the type's)."""
    return backup_named(solver if solver in BACKUPS and solver != type else type)


def backup_recorded(record) -> Backup:
    """The backup an export's manifest ``backup`` entry (a mapping) records."""
    return backup_for(str(record.get("type", "lqr")), "admm" if record.get("embedded") else None)
