"""The MPC backup in an export: the acados solver SCPO certified with, its controller, host builds.

An MPC-backed law takes the backup's input ``u_b`` as an argument (:mod:`.law`); this module
supplies it. ``export/mpc/`` holds a copy of the acados-generated solver of the run's plant file
(``<solver>/``: sources, headers, ``libacados_ocp_solver_<solver>.so``) and the controller's C
(``mpc_plan.h``, ``mpc_controller.h/.c``, from ``codegen/mpc``), which performs exactly the
MPC step of SCPO's rollouts: cold plan at the start of a trajectory, then warm starts from the
previous plan shifted by one stage. ``export/host/lib<name>_mpc.so`` is that controller compiled
against the copied solver; the SIL firmware links it, and :class:`MpcController` calls it from
Python (the reference inputs of a HIL session, the equivalence campaign's backup inputs).

Host only: the acados libraries scpo-ctrl installs (``scripts/install-acados.sh``) are x86-64
builds, so there is no Cortex-M4 build of the MPC.

The embedded MPC (``solver: admm``) is different: ``export/mpc/`` holds its generated constants
(``empc_data.h``), its solver (``empc_solver.h``) and plan (``empc_plan.h``) beside the same controller
sources; ``lib<name>_mpc.so`` is that controller built without acados, and the Cortex-M4 build links the
same solver (``hil/firmware/empc_policy.c``): the law SCPO certified runs on the target.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backup.acados_env import c_output_to_log, find_acados, load_acados
from ..backup.embedded_mpc_codegen import C_FLAGS, DATA_HEADER, PLAN_HEADER, SOLVER_HEADER
from ..backup.kinds import backup_recorded
from ..backup.mpc import MpcFormulation, MpcSolverFiles
from ..errors import UsageError
from ..resources import resource_dir
from ..sim.closed_loop import ClosedLoopBatch, simulate
from . import build
from .law import DeployedLaw

log = logging.getLogger(__name__)

CONTROLLER_SOURCES = ("mpc_plan.h", "mpc_controller.h", "mpc_controller.c")
#: what of acados' generated directory goes into the export (not its objects, Makefile or examples)
SOLVER_SUFFIXES = (".c", ".h", ".so")


@dataclass(frozen=True)
class MpcArtefacts:
    """Where an export's MPC lives.

    Attributes
    ----------
    directory : Path
        ``export/mpc``.
    solver_name : str
        acados' model name (``<plant>_<hash>``).
    controller_library : Path
        ``export/host/lib<name>_mpc.so``.
    """

    directory: Path
    solver_name: str
    controller_library: Path

    @property
    def solver_dir(self) -> Path:
        return self.directory / self.solver_name


def adapted_solver(run_dir: Path) -> str | None:
    """The MPC solver name ``adapt`` recorded in ``run_dir/policy.npz`` (None for older runs)."""
    from ..policy.residual import ResidualPolicy

    _, _, metadata = ResidualPolicy.load(Path(run_dir) / "policy.npz")
    return metadata.get("mpc_solver")


def problem_mpc(spec, law: DeployedLaw, adapted_solver: str | None = None):
    """The run's MPC backup (formulation and compiled solver, from the plant file), checked against the law:
    the policy must have been adapted on this MPC (``adapted_solver``: the solver name ``adapt`` recorded in
    ``policy.npz``, a hash of the whole formulation; runs from before it was recorded are checked on the
    terminal ingredients only)."""
    from ..problem import build_problem

    problem = build_problem(spec)
    formulation: MpcFormulation = problem.mpc.formulation
    if adapted_solver is not None and adapted_solver != problem.mpc.files.solver_name:
        raise UsageError(f"the run's policy.npz was adapted on the MPC {adapted_solver}, but its plant.yaml now "
                         f"gives {problem.mpc.files.solver_name} (horizon, weights, limits or model changed): "
                         "adapt again")
    if not (np.allclose(formulation.P, law.P, rtol=1e-9, atol=0.0) and np.isclose(formulation.c, law.c, rtol=1e-9)
            and np.array_equal(formulation.u_eq, law.u_eq)):
        raise UsageError("the run's policy.npz was adapted on a different MPC backup than its plant.yaml now "
                         "gives (terminal cost, set or equilibrium differ): adapt again")
    return problem


def is_embedded(directory: Path) -> bool:
    """Whether ``directory`` (``export/mpc``) holds the embedded MPC (its generated constants)."""
    return (Path(directory) / DATA_HEADER).is_file()


def copy_solver(files: MpcSolverFiles, directory: Path) -> None:
    """Copy the generated solver (into ``directory/<solver>``; the embedded MPC's constants and solver into
    ``directory`` itself) and the controller's sources into ``directory`` (``export/mpc``)."""
    if hasattr(files, "plan_flags"):
        shutil.copyfile(files.data_header, directory / DATA_HEADER)
        for name in (SOLVER_HEADER, PLAN_HEADER, *CONTROLLER_SOURCES):
            shutil.copyfile(resource_dir("codegen") / "mpc" / name, directory / name)
        return
    target = directory / files.solver_name
    for source in sorted(files.code_dir.rglob("*")):
        if source.is_file() and source.suffix in SOLVER_SUFFIXES and not source.name.startswith("main_"):
            destination = target / source.relative_to(files.code_dir)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
    for name in CONTROLLER_SOURCES:
        shutil.copyfile(resource_dir("codegen") / "mpc" / name, directory / name)


def build_controller(directory: Path, solver: str, host_dir: Path, name: str) -> MpcArtefacts:
    """Compile ``lib<name>_mpc.so`` (the controller in ``directory``, ``export/mpc``, against the solver
    ``solver`` copied there by :func:`copy_solver`) into ``host_dir``.

    It finds the solver through a relative run path (``$ORIGIN/../mpc/<solver>``), so the export can be
    moved; the acados runtime libraries through the installation's absolute path. libacados.so carries no
    run path of its own, so its dependencies (HPIPM, BLASFEO, qpOASES) are linked here too.
    """
    library = f"lib{name}_mpc.so"
    artefacts = MpcArtefacts(directory, solver, host_dir / library)
    # the compiler runs in host_dir: paths relative to the caller's directory (a relative run directory)
    # would not be found from there
    source_dir = Path(directory).resolve()
    if is_embedded(directory):
        build.run_tool([build.HOST_COMPILER, "-O2", "-fPIC", "-shared", "-std=gnu99", "-w", *C_FLAGS,
                        f'-DPLAN_HEADER="{PLAN_HEADER}"', f'-DEMPC_DATA="{DATA_HEADER}"', f"-I{source_dir}",
                        str(source_dir / "mpc_controller.c"), "-o", library], host_dir)
        return artefacts
    installation = find_acados()
    include = installation.include_dir
    relative = Path("..") / directory.name / solver
    command = [
        build.HOST_COMPILER, "-O2", "-fPIC", "-shared", "-std=gnu99", "-w", f"-DMODEL={solver}",
        f'-DSOLVER_HEADER="acados_solver_{solver}.h"', f"-I{source_dir / solver}", f"-I{include}",
        f"-I{include / 'acados'}", f"-I{include / 'blasfeo' / 'include'}", f"-I{include / 'hpipm' / 'include'}",
        str(source_dir / "mpc_controller.c"), "-o", library, f"-L{source_dir / solver}",
        f"-lacados_ocp_solver_{solver}", f"-L{installation.lib_dir}", "-Wl,--no-as-needed", "-lacados", "-lhpipm",
        "-lblasfeo", "-l:libqpOASES_e.so.3.1", "-lm",
        f"-Wl,-rpath,$ORIGIN/{relative}", f"-Wl,-rpath,{installation.lib_dir}",
        f"-Wl,-rpath-link,{installation.lib_dir}",
    ]
    build.run_tool(command, host_dir)
    return artefacts


def artefacts_of(export_dir: Path, manifest: dict) -> MpcArtefacts:
    """The MPC artefacts an export's manifest records."""
    backup = manifest.get("backup", {})
    if backup_recorded(backup).in_closed_form:
        raise UsageError(f"{export_dir}: the export has no MPC backup")
    return MpcArtefacts(Path(export_dir) / "mpc", backup["solver"], Path(export_dir) / backup["controller_library"])


@dataclass(frozen=True)
class MpcSequence:
    """The controller's steps along one trajectory: inputs ``u (n, nu)``, acados status and SQP iterations ``(n,)``."""

    u: np.ndarray
    status: np.ndarray
    iterations: np.ndarray


class MpcController:
    """``lib<name>_mpc.so`` from Python: the exported MPC step, warm-started as on the target.

    Parameters
    ----------
    library : Path
    nx, nu : int
    u_init : ndarray, shape (nu,)
        The cold plan's input (the formulation's ``u_eq``, in float64 as SCPO used it).
    """

    def __init__(self, library: Path, nx: int, nu: int, u_init: np.ndarray):
        if not is_embedded(Path(library).resolve().parent.parent / "mpc"):
            load_acados()  # the acados runtime libraries, loaded globally first
        self.nx, self.nu, self.library = nx, nu, Path(library)
        try:
            self._lib = ctypes.CDLL(str(Path(library).resolve()))
        except OSError as exc:
            raise UsageError(f"{library}: cannot load the exported MPC controller ({exc}); export the run again "
                             "on this machine (acados from scripts/install-acados.sh)") from None
        double_p = np.ctypeslib.ndpointer(dtype=np.float64, flags="C_CONTIGUOUS")
        int_p = np.ctypeslib.ndpointer(dtype=np.int32, flags="C_CONTIGUOUS")
        self._lib.scpo_mpc_controller_create.restype = ctypes.c_void_p
        self._lib.scpo_mpc_controller_create.argtypes = [ctypes.c_int, ctypes.c_int, double_p]
        self._lib.scpo_mpc_controller_free.argtypes = [ctypes.c_void_p]
        self._lib.scpo_mpc_controller_sequence.argtypes = [ctypes.c_void_p, ctypes.c_int, double_p, double_p,
                                                            int_p, int_p]
        self._lib.scpo_mpc_controller_step.argtypes = [ctypes.c_void_p, double_p, double_p]
        self._lib.scpo_mpc_controller_step.restype = ctypes.c_int
        self._lib.scpo_mpc_controller_reset.argtypes = [ctypes.c_void_p]
        with c_output_to_log(log):
            self._handle = self._lib.scpo_mpc_controller_create(nx, nu, np.ascontiguousarray(u_init, dtype=float))
        if not self._handle:
            raise build.BuildError(f"{library}: the MPC controller could not be created (sizes nx={nx}, nu={nu} "
                                   "differ from the solver's, or acados failed to allocate)")

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle:
            self._lib.scpo_mpc_controller_free(handle)
            self._handle = None

    def reset(self) -> None:
        """The next :meth:`step` starts a trajectory (cold plan)."""
        self._lib.scpo_mpc_controller_reset(self._handle)

    def step(self, x: np.ndarray) -> tuple:
        """One closed-loop step at ``x (nx,)``: ``(u (nu,), acados status)``. No redirection of acados' C
        output here (it is process-wide and this is called from threads): callers wrap a batch in
        :func:`~scpo_ctrl.backup.acados_env.c_output_to_log`."""
        x = np.ascontiguousarray(x, dtype=float)
        if x.shape != (self.nx,):
            raise ValueError(f"expected a state of shape ({self.nx},), got {x.shape}")
        u = np.zeros(self.nu)
        status = self._lib.scpo_mpc_controller_step(self._handle, x, u)
        return u, int(status)

    def sequence(self, X: np.ndarray) -> MpcSequence:
        """One trajectory through the states ``X (n, nx)``: a cold start at row 0, warm starts after."""
        X = self._states(X)
        with c_output_to_log(log):
            return self._sequence(X)

    def cold(self, X: np.ndarray) -> MpcSequence:
        """Each row of ``X (n, nx)`` solved from the cold plan (independent states)."""
        X = self._states(X)
        with c_output_to_log(log):
            parts = [self._sequence(X[i:i + 1]) for i in range(len(X))]
        if not parts:
            return MpcSequence(np.zeros((0, self.nu)), np.zeros(0, np.int32), np.zeros(0, np.int32))
        return MpcSequence(np.concatenate([p.u for p in parts]), np.concatenate([p.status for p in parts]),
                           np.concatenate([p.iterations for p in parts]))

    def _states(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(np.atleast_2d(X), dtype=float)
        if X.shape[1] != self.nx:
            raise ValueError(f"expected states with {self.nx} columns, got {X.shape[1]}")
        return X

    def _sequence(self, X: np.ndarray) -> MpcSequence:
        """The C sequence on checked, contiguous ``X (n, nx)`` (the caller redirects acados' output)."""
        n = len(X)
        U, status, iterations = np.zeros((n, self.nu)), np.zeros(n, np.int32), np.zeros(n, np.int32)
        self._lib.scpo_mpc_controller_sequence(self._handle, n, X, U, status, iterations)
        return MpcSequence(U, status, iterations)


def campaign_backup_inputs(law: DeployedLaw, X: np.ndarray, controller: MpcController, seed: int) -> np.ndarray:
    """Backup inputs ``(N, nu)`` for an equivalence campaign on ``X (N, nx)``, the exported ``controller``
    solving from cold starts (see :meth:`scpo_ctrl.backup.kinds.AcadosMpc.campaign_inputs`)."""
    return law.backup_kind.campaign_inputs(X, law, lambda states: controller.cold(states).u, seed)


class MpcLawInTheLoop:
    """A batch controller ``X (B, nx) -> U (B, nu)`` for :func:`scpo_ctrl.sim.closed_loop.simulate`: one
    exported MPC controller per trajectory (cold at the trajectory's first step, warm-started after, as on
    the target), the law on top (the exported C law through ``host``, or the float64 reference).

    Parameters
    ----------
    library : Path
        ``lib<name>_mpc.so``.
    law : DeployedLaw
    trajectories : int
        Batch size B (one acados solver each, about 0.4-2 MB).
    host : HostLaw or None
        The exported C law (None: :func:`.law.evaluate`).
    threads : int
        Solves run in this many threads (ctypes releases the GIL during each).
    """

    def __init__(self, library: Path, law: DeployedLaw, trajectories: int, host=None, threads: int = 2):
        self.law, self.host, self.threads = law, host, max(1, int(threads))
        # the embedded MPC is a function of the state (no plan carried between steps): one controller solves
        # the whole batch in one call
        self.stateless = is_embedded(Path(library).resolve().parent.parent / "mpc")
        self.trajectories = int(trajectories)
        self.controllers = [MpcController(library, law.nx, law.nu, law.u_eq)
                            for _ in range(1 if self.stateless else trajectories)]
        self._fresh = True

    def __call__(self, X: np.ndarray) -> np.ndarray:
        from concurrent.futures import ThreadPoolExecutor

        from .law import evaluate

        X = np.atleast_2d(np.asarray(X, dtype=float))
        if len(X) != self.trajectories:
            raise ValueError(f"{len(X)} states for {self.trajectories} trajectories")
        if self._fresh:
            for controller in self.controllers:
                controller.reset()
            self._fresh = False
        # the target's law receives the state as float32 (the wire); the MPC solves at that state
        X32 = X.astype(np.float32).astype(float) if self.host is not None and self.host.precision == "float32" else X

        if self.stateless:
            U = self.controllers[0].sequence(X32).u
            return self.host.evaluate(X32, U).u if self.host is not None else evaluate(self.law, X, U).u

        def run(indices):
            return [self.controllers[i].step(X32[i]) for i in indices]

        chunks = [range(t, len(X), self.threads) for t in range(self.threads)]
        U = np.zeros((len(X), self.law.nu))
        with c_output_to_log(log), ThreadPoolExecutor(self.threads) as pool:
            for indices, results in zip(chunks, pool.map(run, chunks)):
                for i, (u, _) in zip(indices, results):
                    U[i] = u
        if self.host is not None:
            return self.host.evaluate(X32, U).u
        return evaluate(self.law, X, U).u


#: trajectories simulated at once by :func:`simulate_with_mpc` (one acados solver each)
CHUNK = 128


def simulate_with_mpc(model, law, library: Path, host, X0: np.ndarray, horizon: int) -> ClosedLoopBatch:
    """:func:`scpo_ctrl.sim.closed_loop.simulate` with the exported MPC in the loop (``library``:
    ``lib<name>_mpc.so``) and the exported C law ``host`` on its input (None: the float64 reference law),
    ``CHUNK`` trajectories at a time (one acados solver each); verify's Monte Carlo and hil's reference."""
    parts = []
    for begin in range(0, len(X0), CHUNK):
        chunk = X0[begin:begin + CHUNK]
        controller = MpcLawInTheLoop(library, law, len(chunk), host)
        parts.append(simulate(model, controller, chunk, horizon, law.P, law.c, law.x_eq))
    first = parts[0]
    return ClosedLoopBatch(**{name: np.concatenate([getattr(p, name) for p in parts])
                              for name in ("x", "u", "g", "g_input", "level")},
                           row_names=first.row_names, input_row_names=first.input_row_names)
