"""Batched closed-loop rollouts with the acados MPC as the backup.

The MPC cannot live inside a CasADi graph, so the closed loop runs in C
(``codegen/mpc/mpc_rollout.c``): at every step the acados solver is
warm-started from the previous plan shifted by one stage (or the embedded
MPC's float32 solver, ``codegen/mpc/empc_plan.h``, solves from a cold start), then a
CasADi-generated step applies the law ``u = law(x, theta, u_mpc)`` (the
residual policy on top of the MPC's input, saturated) and the plant. The
batch is split over threads, one acados solver per thread; every trajectory
starts from the same cold guess, so results do not depend on the thread
count. The interface mirrors :class:`~scpo_ctrl.sim.rollout.RolloutEngine`.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

import casadi as ca
import numpy as np

from ..backup.acados_env import c_output_to_log, find_acados
from ..backup.mpc import MpcBuildError, MpcFormulation, MpcSolverFiles, cache_root
from ..plant.model import PlantModel
from ..resources import resource_dir
from .rollout import Rollouts, SafetyEvaluation, default_threads, safety_metrics

log = logging.getLogger(__name__)

STEP_NAME = "scpo_closed_step"
DRIVER = Path("mpc") / "mpc_rollout.c"
#: forward-difference step of the MPC input's Jacobian in the state [state units]
FD_STEP = 1e-6


@dataclass(frozen=True)
class MpcSolveStats:
    """Per-solve statistics of a batch (acados status 0 = converged, 2 = iteration limit, ...).

    Attributes
    ----------
    status, iterations : ndarray of int
    seconds : ndarray of float
        Wall time of each solve, measured in C around the acados call [s].
    """

    status: np.ndarray
    iterations: np.ndarray
    seconds: np.ndarray


@dataclass(frozen=True)
class MpcRollouts:
    """:class:`Rollouts` plus what the MPC did at each step.

    Attributes
    ----------
    rollouts : Rollouts
    u_backup : ndarray, shape (B, H+1, nu)
        The MPC's input at each state.
    jacobian : ndarray, shape (B, H+1, nu, nx), or None
        d u_backup / d x (forward differences of warm-started solves), when asked for.
    stats : MpcSolveStats
        Shapes (B, H+1).
    """

    rollouts: Rollouts
    u_backup: np.ndarray
    jacobian: np.ndarray | None
    stats: MpcSolveStats


def _compile(library: Path, sources: list, files, build_dir: Path) -> None:
    if hasattr(files, "plan_flags"):
        # the embedded MPC: its plan header and generated constants, no acados
        command = ["gcc", "-O2", "-fPIC", "-shared", "-std=gnu99", "-w", *files.plan_flags(),
                   f"-DSTEP={STEP_NAME}", f'-DSTEP_HEADER="{STEP_NAME}.h"', f"-I{build_dir}",
                   *[str(source) for source in sources], "-o", str(library), "-lm", "-lpthread"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise MpcBuildError(f"compiling the MPC rollout library failed:\n{result.stderr.strip()[:2000]}")
        return
    installation = find_acados()
    include = installation.include_dir
    command = [
        "gcc", "-O2", "-fPIC", "-shared", "-std=gnu99", "-w",
        f"-DMODEL={files.solver_name}", f'-DSOLVER_HEADER="acados_solver_{files.solver_name}.h"',
        f"-DSTEP={STEP_NAME}", f'-DSTEP_HEADER="{STEP_NAME}.h"',
        f"-I{build_dir}", f"-I{files.code_dir}", f"-I{include}", f"-I{include / 'acados'}",
        f"-I{include / 'blasfeo' / 'include'}", f"-I{include / 'hpipm' / 'include'}",
        *[str(source) for source in sources], "-o", str(library),
        f"-L{files.code_dir}", f"-lacados_ocp_solver_{files.solver_name}", f"-L{installation.lib_dir}",
        "-lacados", "-lhpipm", "-lblasfeo", "-lm", "-lpthread",
        f"-Wl,-rpath,{files.code_dir}", f"-Wl,-rpath,{installation.lib_dir}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise MpcBuildError(f"compiling the MPC rollout library failed:\n{result.stderr.strip()[:2000]}")


def build_rollout_library(model: PlantModel, law: ca.Function, files: MpcSolverFiles) -> Path:
    """The rollout library for one law on one plant (cached by content, like the solver)."""
    nx, nu = model.nx, model.nu
    x, u_backup = ca.SX.sym("x", nx), ca.SX.sym("u_backup", nu)
    theta = ca.SX.sym("theta", law.size1_in(1))
    u = law(x, theta, u_backup)
    step = ca.Function(STEP_NAME, [x, theta, u_backup], [model.f(x, u), u, model.g(x, u)],
                       ["x", "theta", "u_backup"], ["x_next", "u", "g"])
    driver = resource_dir("codegen") / DRIVER
    digest = hashlib.sha256()
    plan = files.sources_digest() if hasattr(files, "sources_digest") else (driver.parent / "mpc_plan.h").read_bytes()
    for part in (step.serialize().encode(), driver.read_bytes(), plan, str(files.library).encode()):
        digest.update(part)
    directory = cache_root() / "mpc-rollout" / digest.hexdigest()[:24]
    library = directory / "libscpo_mpc_rollout.so"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if library.exists():
            return library
        generator = ca.CodeGenerator(f"{STEP_NAME}.c", {"with_header": True})
        generator.add(step)
        generator.generate(str(directory) + "/")
        partial = directory / "libscpo_mpc_rollout.so.partial"
        _compile(partial, [driver, directory / f"{STEP_NAME}.c"], files, directory)
        partial.replace(library)
    return library


class _Library:
    """ctypes bindings of one rollout library and its solver pool."""

    def __init__(self, path: Path, threads: int, u_init: np.ndarray):
        self.lib = ctypes.CDLL(str(path))
        double_p = np.ctypeslib.ndpointer(dtype=np.float64, flags="C_CONTIGUOUS")
        int_p = np.ctypeslib.ndpointer(dtype=np.int32, flags="C_CONTIGUOUS")
        self.lib.scpo_mpc_create.restype = ctypes.c_void_p
        self.lib.scpo_mpc_create.argtypes = [ctypes.c_int, double_p]
        self.lib.scpo_mpc_free.argtypes = [ctypes.c_void_p]
        self.lib.scpo_mpc_dims.argtypes = [ctypes.c_void_p, int_p]
        self.lib.scpo_mpc_solve_batch.argtypes = [ctypes.c_void_p, ctypes.c_int, double_p, double_p, int_p, int_p,
                                                  double_p]
        optional_double = ctypes.c_void_p
        self.lib.scpo_mpc_rollout_batch.argtypes = [
            ctypes.c_void_p, ctypes.c_int, ctypes.c_int, double_p, double_p, int_p, ctypes.c_double,
            double_p, double_p, double_p, double_p, optional_double, int_p, int_p, double_p,
        ]
        self.handle = self.lib.scpo_mpc_create(int(threads), np.ascontiguousarray(u_init, dtype=float))
        if not self.handle:
            raise MpcBuildError(f"creating the acados solvers of {path} failed")
        dims = np.zeros(6, dtype=np.int32)
        self.lib.scpo_mpc_dims(self.handle, dims)
        self.nx, self.nu, self.N, self.ng, self.ntheta, self.threads = (int(v) for v in dims)

    def __del__(self):
        handle = getattr(self, "handle", None)
        if handle:
            self.lib.scpo_mpc_free(handle)
            self.handle = None


class MpcRolloutEngine:
    """Simulates ``x+ = f(x, law(x, theta, mpc(x)))`` from many initial states at once.

    Parameters
    ----------
    model : PlantModel
    formulation : MpcFormulation
    files : MpcSolverFiles or EmbeddedSolverFiles
        The compiled acados solver of ``formulation``, or the embedded MPC's generated C.
    law : casadi.Function
        ``(x (nx,), theta (d,), u_backup (nu,)) -> u (nu,)``.
    horizon : int
        Number of steps H.
    threads : int or None
        Solver instances and threads (None: the usable cores).
    """

    def __init__(self, model: PlantModel, formulation: MpcFormulation, files: MpcSolverFiles, law: ca.Function,
                 horizon: int, threads: int | None = None):
        self.model = model
        self.formulation = formulation
        self.horizon = int(horizon)
        self.n_theta = law.size1_in(1)
        self.threads = threads or default_threads()
        self.library_path = build_rollout_library(model, law, files)
        self._library = _Library(self.library_path, self.threads, formulation.u_eq)

    # -- single solves ----------------------------------------------------------
    def solve(self, x: np.ndarray) -> tuple[np.ndarray, MpcSolveStats]:
        """The MPC's input at each of ``x (B, nx)`` from a cold start: ``(u (B, nu), stats)``."""
        x = np.ascontiguousarray(np.atleast_2d(x), dtype=float)
        B = x.shape[0]
        u = np.zeros((B, self.model.nu))
        status, iterations, seconds = np.zeros(B, np.int32), np.zeros(B, np.int32), np.zeros(B)
        with c_output_to_log(log):
            self._library.lib.scpo_mpc_solve_batch(self._library.handle, B, x, u, status, iterations, seconds)
        return u, MpcSolveStats(status, iterations, seconds)

    # -- rollouts -----------------------------------------------------------------
    def rollout(self, x0: np.ndarray, thetas: np.ndarray | None = None, theta_index: np.ndarray | None = None,
                jacobian: bool = False) -> MpcRollouts:
        """Roll out from ``x0 (B, nx)``; trajectory i uses ``thetas[theta_index[i]]`` (default: row 0, or zeros)."""
        x0 = np.ascontiguousarray(np.atleast_2d(x0), dtype=float)
        B, nx, nu, H1 = x0.shape[0], self.model.nx, self.model.nu, self.horizon + 1
        ng = self._library.ng
        thetas = np.zeros((1, self.n_theta)) if thetas is None else np.atleast_2d(np.asarray(thetas, dtype=float))
        thetas = np.ascontiguousarray(thetas.reshape(-1, self.n_theta) if self.n_theta else np.zeros((1, 0)))
        index = np.zeros(B, np.int32) if theta_index is None else np.ascontiguousarray(theta_index, dtype=np.int32)
        if index.shape != (B,) or (B and (index.min() < 0 or index.max() >= thetas.shape[0])):
            raise ValueError("theta_index must give one valid row of thetas per initial state")
        X, U, G, UB = np.zeros((B, H1, nx)), np.zeros((B, H1, nu)), np.zeros((B, H1, ng)), np.zeros((B, H1, nu))
        J = np.zeros((B, H1, nu, nx)) if jacobian else None
        status, iterations, seconds = np.zeros((B, H1), np.int32), np.zeros((B, H1), np.int32), np.zeros((B, H1))
        with c_output_to_log(log):
            self._library.lib.scpo_mpc_rollout_batch(
                self._library.handle, B, self.horizon, x0, thetas if thetas.size else np.zeros(1), index, FD_STEP,
                X, U, G, UB, J.ctypes.data if J is not None else None, status, iterations, seconds,
            )
        return MpcRollouts(Rollouts(x=X, u=U, g=G), UB, J, MpcSolveStats(status, iterations, seconds))

    def simulate(self, x0: np.ndarray, theta: np.ndarray | None = None) -> Rollouts:
        """As :meth:`RolloutEngine.simulate`: one ``theta (d,)`` for the batch, or one per state ``(B, d)``."""
        x0 = np.atleast_2d(np.asarray(x0, dtype=float))
        if theta is None or np.ndim(theta) == 1:
            return self.rollout(x0, None if theta is None else np.asarray(theta)[None, :]).rollouts
        theta = np.asarray(theta, dtype=float)
        if theta.shape[0] != x0.shape[0]:
            raise ValueError(f"theta has {theta.shape[0]} rows for {x0.shape[0]} initial states")
        return self.rollout(x0, theta, np.arange(x0.shape[0])).rollouts

    def evaluate(self, x0: np.ndarray, level: float, P: np.ndarray, x_eq: np.ndarray,
                 theta: np.ndarray | None = None) -> tuple[Rollouts, SafetyEvaluation]:
        rollouts = self.simulate(x0, theta)
        return rollouts, safety_metrics(self.model, rollouts, level, P, x_eq)

    def metrics_batch(self, x0: np.ndarray, thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`RolloutEngine.metrics_batch`: ``g (n, N, H+1, ng)`` and ``x (n, N, H+1, nx)``."""
        x0 = np.atleast_2d(np.asarray(x0, dtype=float))
        thetas = np.atleast_2d(np.asarray(thetas, dtype=float))
        N, n = x0.shape[0], thetas.shape[0]
        result = self.rollout(np.tile(x0, (n, 1)), thetas, np.repeat(np.arange(n), N)).rollouts
        G = result.g.reshape(n, N, self.horizon + 1, -1)
        return np.where(np.isfinite(G), G, np.inf), result.x.reshape(n, N, self.horizon + 1, -1)
