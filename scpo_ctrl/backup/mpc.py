"""The MPC backup: an acados OCP built from the same CasADi plant model, and its IPOPT reference.

The optimal control problem, from the current state ``x``::

    minimise   sum_{k<N} 1/2 |(x_k, u_k) - (x_eq, u_eq)|^2_{diag(Q, R)} + 1/2 |x_N - x_eq|^2_P
               + sum of slack penalties
    subject to x_0 = x,  x_{k+1} = f(x_k, u_k)        (the plant's own discrete map, RK4 substeps included)
               u_min <= u_k <= u_max                  (hard)
               x_min' - l_k <= x_k <= x_max' + h_k,  0 < k < N   (state limits, tightened by
                                                      ``backup.tighten``; x_0 is given)
               g_extra(x_k, u_k) <= e_k,  k < N       (the plant file's extra constraints)
               V(x_N) - c <= s_N                      (terminal set: the LQR's target set T)
               slacks >= 0, each penalised by ``SLACK_L1 s + SLACK_L2 s^2 / 2``

The backup applies ``u_0``. Q and R are the backup's weights, P and c the
LQR's Riccati matrix and target-set level, so near the equilibrium the MPC
is the LQR. The prediction model is the simulation model exactly: no model
mismatch between what the MPC plans and what the rollouts apply.

Why soft constraints: a hard-constrained OCP is infeasible from states no
controller can save, and a solver that fails returns nothing usable. With
an exact (L1) penalty larger than the constraints' multipliers, the soft
problem has the hard problem's solution wherever the latter is feasible;
elsewhere it still returns the least-violating plan. Whether a closed loop
is safe is always judged by simulating it, never by the solver's status.

What is and is not guaranteed: with an exact prediction model and a
terminal set that is invariant under the LQR with every constraint
satisfied, a feasible hard-constrained MPC stays feasible (recursive
feasibility) and so keeps every safety row. T's invariance is exact for
affine plants and sampled (ray search + NLP, not a proof) for nonlinear
ones; the solver stops at a tolerance, the penalty is exact only if
``SLACK_L1`` exceeds the multipliers, and SQP finds a local optimum. So
scpo-ctrl treats these as reasons to expect safety and checks it by
simulation on the validation set, as for the LQR.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import casadi as ca
import numpy as np

from ..errors import ScpoError
from ..plant.model import PlantModel
from .acados_env import load_acados
from .lqr import LqrBackup

log = logging.getLogger(__name__)

SLACK_L1 = 1e3
SLACK_L2 = 1e1
SQP_TOLERANCE = 1e-9
SQP_MAX_ITERATIONS = 100
LOWER_INFINITY = -1e4
COMPLEMENTARITY_TOLERANCE = 1e-7
QP_COMPLEMENTARITY_TOLERANCE = 1e-10
FORMULATION_VERSION = "scpo-mpc/1"
#: acados solver options. The exact Hessian (with the Hessian projected to positive definiteness) is needed:
#: with Gauss-Newton the SQP cycled on the cart-pole, the terminal set's curvature missing from its model.
#: Complementarity: a one-sided row needs a finite lower bound, whose distance times a tiny multiplier floors
#: the NLP's measured complementarity; that is not an accuracy limit of the solution. The QP's is one: HPIPM
#: (interior point) stops about tol / multiplier from a weakly active bound, and 1e-7 left the pendulum's
#: first input 1.2e-5 inside its torque limit (multiplier 2e-3) where IPOPT has it on the limit; at 1e-10
#: acados and IPOPT agree to 1e-8 on benchmarks/mpc_performance.py's states, with the same iteration counts.
SOLVER_OPTIONS = {
    "integrator_type": "DISCRETE",
    "qp_solver": "PARTIAL_CONDENSING_HPIPM",
    "hessian_approx": "EXACT",
    "regularize_method": "PROJECT",
    "nlp_solver_max_iter": SQP_MAX_ITERATIONS,
    "nlp_solver_tol_stat": SQP_TOLERANCE,
    "nlp_solver_tol_eq": SQP_TOLERANCE,
    "nlp_solver_tol_ineq": SQP_TOLERANCE,
    "nlp_solver_tol_comp": COMPLEMENTARITY_TOLERANCE,
    "qp_solver_tol_stat": SQP_TOLERANCE,
    "qp_solver_tol_eq": SQP_TOLERANCE,
    "qp_solver_tol_ineq": SQP_TOLERANCE,
    "qp_solver_tol_comp": QP_COMPLEMENTARITY_TOLERANCE,
    "qp_solver_iter_max": 200,
    "hpipm_mode": "SPEED",
}
#: stages per block of HPIPM's partial condensing (measured 2x faster than none on the cart-pole, N = 40)
CONDENSING_BLOCK = 5
CACHE_ENVIRONMENT_VARIABLE = "SCPO_CTRL_CACHE"


class MpcBuildError(ScpoError):
    """acados could not generate or compile the MPC solver."""


@dataclass(frozen=True)
class MpcFormulation:
    """The OCP's numbers; the acados solver and the IPOPT reference are both built from it.

    Attributes
    ----------
    name : str
        C identifier prefix of the generated solver; the solver itself is named ``<name>_<hash>``
        (:meth:`solver_name`), so that two formulations never share a library name in one process.
    N : int
        Horizon [steps].
    solver : {'sqp', 'sqp_rti'}
    Q, R : ndarray, shapes (nx, nx), (nu, nu)
        Stage weights.
    P : ndarray, shape (nx, nx)
        Terminal weight (the LQR's Riccati matrix).
    c : float
        Terminal-set level: V(x_N) = (x_N - x_eq)^T P (x_N - x_eq) <= c.
    x_eq, u_eq : ndarray, shapes (nx,), (nu,)
    u_min, u_max : ndarray, shape (nu,)
        Input bounds (+-inf where none).
    x_min, x_max : ndarray, shape (nx,)
        State limits the MPC plans within (+-inf where none; tightened from the plant's by
        ``backup.tighten``): soft box constraints on x_1 .. x_{N-1}.
    extra_rows : tuple of int
        Rows of the plant's g(x, u) that are extra constraints (not state limits): soft, stages 0 .. N-1.
    """

    name: str
    N: int
    solver: str
    Q: np.ndarray
    R: np.ndarray
    P: np.ndarray
    c: float
    x_eq: np.ndarray
    u_eq: np.ndarray
    u_min: np.ndarray
    u_max: np.ndarray
    x_min: np.ndarray
    x_max: np.ndarray
    extra_rows: tuple

    def solver_name(self, model: PlantModel) -> str:
        """The acados model name: :attr:`name` and 10 hex digits of :meth:`fingerprint`.

        The rollout libraries link the solver by a file name made of it, and the dynamic linker
        resolves a second library of the same name to the first one loaded.
        """
        return f"{self.name}_{self.fingerprint(model)[:10]}"

    def fingerprint(self, model: PlantModel) -> str:
        """sha256 of everything the generated solver depends on (the plant's functions serialised)."""
        digest = hashlib.sha256()
        digest.update(FORMULATION_VERSION.encode())
        digest.update(json.dumps({
            "name": self.name, "N": self.N, "solver": self.solver, "c": repr(float(self.c)), "extra_rows": list(self.extra_rows),
            "slack": [SLACK_L1, SLACK_L2], "lower_infinity": LOWER_INFINITY, "options": SOLVER_OPTIONS, "block": CONDENSING_BLOCK,
        }, sort_keys=True).encode())
        for array in (self.Q, self.R, self.P, self.x_eq, self.u_eq, self.u_min, self.u_max, self.x_min, self.x_max):
            digest.update(np.ascontiguousarray(array, dtype=float).tobytes())
        digest.update(model.f.serialize().encode())
        digest.update(model.g.serialize().encode())
        return digest.hexdigest()


def formulation_for(model: PlantModel, lqr: LqrBackup, level: float) -> MpcFormulation:
    """The MPC formulation of a plant whose spec asks for an ``mpc`` backup."""
    spec = model.spec
    x_min = np.array([-np.inf if v.min is None else v.min for v in spec.states])
    x_max = np.array([np.inf if v.max is None else v.max for v in spec.states])
    tighten = spec.backup.tighten
    return MpcFormulation(
        name=f"scpo_{spec.name}", N=int(spec.backup.horizon), solver=spec.backup.solver or "sqp",
        Q=np.array(spec.backup.Q, dtype=float), R=np.array(spec.backup.R, dtype=float), P=lqr.P, c=float(level),
        x_eq=lqr.x_eq, u_eq=lqr.u_eq, u_min=lqr.u_min, u_max=lqr.u_max,
        x_min=x_min + tighten * (lqr.x_eq - x_min), x_max=x_max - tighten * (x_max - lqr.x_eq),
        extra_rows=tuple(i for i, row in enumerate(model.rows) if row.kind != "state"),
    )


def cache_root() -> Path:
    """Where generated solvers are kept: ``$SCPO_CTRL_CACHE``, else ``$XDG_CACHE_HOME/scpo-ctrl``."""
    configured = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scpo-ctrl"


@dataclass(frozen=True)
class MpcSolverFiles:
    """A generated and compiled acados solver.

    Attributes
    ----------
    directory : Path
        The cache entry (content-addressed by :meth:`MpcFormulation.fingerprint`).
    code_dir : Path
        acados' generated C (``acados_solver_<name>.h`` ...) and its shared library.
    library : Path
        ``libacados_ocp_solver_<name>.so``.
    json_file : Path
        acados' description of the OCP (what its Python interface loads).
    """

    directory: Path
    code_dir: Path
    library: Path
    json_file: Path
    solver_name: str


def _ocp(formulation: MpcFormulation, model: PlantModel, code_dir: Path, acados_template):
    """The acados OCP (old acados_template API: ``dims.N``, ``solver_options.tf``)."""
    nx, nu = model.nx, model.nu
    F = formulation
    ocp = acados_template.AcadosOcp()
    x, u = ca.SX.sym("x", nx), ca.SX.sym("u", nu)
    acados_model = acados_template.AcadosModel()
    acados_model.name = F.solver_name(model)
    acados_model.x, acados_model.u = x, u
    acados_model.xdot = ca.SX.sym("xdot", nx)
    acados_model.disc_dyn_expr = model.f(x, u)
    dx = x - ca.DM(F.x_eq)
    extra = ca.vertcat(*[model.g(x, u)[i] for i in F.extra_rows]) if F.extra_rows else None
    if extra is not None:
        acados_model.con_h_expr = extra
    acados_model.con_h_expr_e = ca.mtimes([dx.T, ca.DM(F.P), dx]) - F.c
    ocp.model = acados_model

    ocp.dims.N = F.N
    ocp.solver_options.tf = float(F.N)  # unit time steps: acados scales stage costs by them
    ocp.solver_options.integrator_type = "DISCRETE"
    ocp.solver_options.nlp_solver_type = "SQP_RTI" if F.solver == "sqp_rti" else "SQP"
    for key, value in SOLVER_OPTIONS.items():
        setattr(ocp.solver_options, key, value)
    ocp.solver_options.print_level = 0
    ocp.solver_options.qp_solver_cond_N = max(1, F.N // CONDENSING_BLOCK)

    ocp.cost.cost_type = "LINEAR_LS"
    ocp.cost.cost_type_e = "LINEAR_LS"
    ocp.cost.W = np.block([[F.Q, np.zeros((nx, nu))], [np.zeros((nu, nx)), F.R]])
    ocp.cost.W_e = F.P
    ocp.cost.Vx = np.vstack([np.eye(nx), np.zeros((nu, nx))])
    ocp.cost.Vu = np.vstack([np.zeros((nx, nu)), np.eye(nu)])
    ocp.cost.Vx_e = np.eye(nx)
    ocp.cost.yref = np.concatenate([F.x_eq, F.u_eq])
    ocp.cost.yref_e = F.x_eq.copy()

    bounded, lower, upper = _box(F.u_min, F.u_max)
    if bounded.size:
        ocp.constraints.idxbu, ocp.constraints.lbu, ocp.constraints.ubu = bounded, lower, upper
    ocp.constraints.x0 = F.x_eq.copy()
    # state limits: soft bounds on x_1 .. x_{N-1} (box constraints, cheap in the QP); x_0 is given and
    # x_N lies in the terminal set, inside every limit
    limited, lower, upper = _box(F.x_min, F.x_max)
    if limited.size:
        ocp.constraints.idxbx, ocp.constraints.lbx, ocp.constraints.ubx = limited, lower, upper
        ocp.constraints.idxsbx = np.arange(limited.size)
    n_soft = limited.size + len(F.extra_rows)
    if F.extra_rows:
        ocp.constraints.lh = np.full(len(F.extra_rows), LOWER_INFINITY)
        ocp.constraints.uh = np.zeros(len(F.extra_rows))
        ocp.constraints.idxsh = np.arange(len(F.extra_rows))
    if n_soft:
        ocp.cost.zl = np.full(n_soft, SLACK_L1)
        ocp.cost.zu = np.full(n_soft, SLACK_L1)
        ocp.cost.Zl = np.full(n_soft, SLACK_L2)
        ocp.cost.Zu = np.full(n_soft, SLACK_L2)
    ocp.constraints.lh_e = np.array([LOWER_INFINITY])
    ocp.constraints.uh_e = np.array([0.0])
    ocp.constraints.idxsh_e = np.array([0])
    ocp.cost.zl_e = np.array([SLACK_L1])
    ocp.cost.zu_e = np.array([SLACK_L1])
    ocp.cost.Zl_e = np.array([SLACK_L2])
    ocp.cost.Zu_e = np.array([SLACK_L2])
    ocp.code_export_directory = str(code_dir)
    return ocp


def _box(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """acados box bounds: the indices with a finite bound, and the bounds there (infinite -> +-1e4)."""
    index = np.flatnonzero(np.isfinite(low) | np.isfinite(high))
    return (index, np.where(np.isfinite(low), low, LOWER_INFINITY)[index],
            np.where(np.isfinite(high), high, -LOWER_INFINITY)[index])


def build_solver(formulation: MpcFormulation, model: PlantModel, cache: Path | None = None) -> MpcSolverFiles:
    """Generate and compile the acados solver, or reuse the cache entry with the same fingerprint.

    A lock file serialises concurrent builds of one entry; an entry counts
    only once its ``complete`` stamp exists, so an interrupted build is redone.
    """
    acados_template = load_acados()
    directory = (cache or cache_root()) / "mpc" / formulation.fingerprint(model)[:24]
    code_dir = directory / "c_generated_code"
    name = formulation.solver_name(model)
    files = MpcSolverFiles(directory, code_dir, code_dir / f"libacados_ocp_solver_{name}.so",
                           directory / "acados_ocp.json", name)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / "complete"
    with open(directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and files.library.exists():
            return files
        log.info("generating the acados MPC solver in %s", directory)
        ocp = _ocp(formulation, model, code_dir, acados_template)
        cwd = os.getcwd()
        try:
            # acados_template writes helper files relative to the working directory
            os.chdir(directory)
            with _quiet():
                acados_template.AcadosOcpSolver.generate(ocp, json_file=str(files.json_file))
                acados_template.AcadosOcpSolver.build(str(code_dir), verbose=False)
        except Exception as exc:  # acados raises bare Exceptions
            raise MpcBuildError(f"acados could not generate the MPC solver in {directory}: {exc}") from None
        finally:
            os.chdir(cwd)
        if not files.library.exists():
            raise MpcBuildError(f"acados' build did not produce {files.library} (is `make` installed?)")
        stamp.write_text(name + "\n")
    return files


def python_solver(formulation: MpcFormulation, model: PlantModel, files: MpcSolverFiles):
    """acados' own (ctypes) Python interface to the compiled solver (this acados' JSON loader is broken,
    so the OCP object is rebuilt from the formulation)."""
    acados_template = load_acados()
    ocp = _ocp(formulation, model, files.code_dir, acados_template)
    cwd = os.getcwd()
    try:
        os.chdir(files.directory)
        with _quiet():
            return acados_template.AcadosOcpSolver(ocp, json_file=str(files.json_file), build=False,
                                                   generate=False, verbose=False)
    finally:
        os.chdir(cwd)


@contextlib.contextmanager
def _quiet():
    """acados_template prints (CasADi version notices, build lines): send them to the log instead."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    text = buffer.getvalue().strip()
    if text:
        log.debug("acados_template: %s", text)


@dataclass(frozen=True)
class IpoptReference:
    """The same OCP (explicit slacks) solved by CasADi's IPOPT, for checking acados.

    Attributes
    ----------
    solver : casadi.Function
        CasADi's nlpsol.
    formulation : MpcFormulation
    nx, nu : int
    """

    solver: ca.Function
    formulation: MpcFormulation
    nx: int
    nu: int
    lbx: np.ndarray
    ubx: np.ndarray
    lbg: np.ndarray
    ubg: np.ndarray
    x0_index: np.ndarray

    def solve(self, x: np.ndarray, u_guess: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """First input ``u_0 (nu,)`` and whether IPOPT reports success, from state ``x (nx,)``."""
        F = self.formulation
        n_w = self.lbx.size
        w0 = np.zeros(n_w)
        lbx, ubx = self.lbx.copy(), self.ubx.copy()
        lbx[self.x0_index] = x
        ubx[self.x0_index] = x
        layout = _reference_layout(self.nx, self.nu, F)
        for k in range(F.N + 1):
            w0[layout["x"][k]] = x
        for k in range(F.N):
            w0[layout["u"][k]] = F.u_eq if u_guess is None else u_guess[k]
        result = self.solver(x0=w0, lbx=lbx, ubx=ubx, lbg=self.lbg, ubg=self.ubg)
        w = np.array(result["x"]).ravel()
        success = bool(self.solver.stats()["success"])
        return w[layout["u"][0]], success


def _reference_layout(nx: int, nu: int, F: MpcFormulation) -> dict:
    """Index sets of the decision vector ``w = (x_0, u_0, e_0, x_1, u_1, e_1, l_1, h_1, ..., x_N, s_N)``:
    slacks ``e`` of the extra rows, ``l``/``h`` of the lower/upper state limits, ``s`` of the terminal set."""
    index, layout = 0, {"x": [], "u": [], "e": [], "l": [], "h": [], "s": None}

    def take(size):
        nonlocal index
        block = np.arange(index, index + size)
        index += size
        return block

    for k in range(F.N):
        layout["x"].append(take(nx))
        layout["u"].append(take(nu))
        layout["e"].append(take(len(F.extra_rows)))
        layout["l"].append(take(nx if k > 0 else 0))
        layout["h"].append(take(nx if k > 0 else 0))
    layout["x"].append(take(nx))
    layout["s"] = take(1)
    layout["size"] = index
    return layout


def ipopt_reference(formulation: MpcFormulation, model: PlantModel) -> IpoptReference:
    """Build the reference NLP (multiple shooting, the plant map as equality constraints)."""
    F = formulation
    nx, nu = model.nx, model.nu
    layout = _reference_layout(nx, nu, F)
    w = ca.SX.sym("w", layout["size"])
    lbx, ubx = np.full(layout["size"], -np.inf), np.full(layout["size"], np.inf)
    W = np.block([[F.Q, np.zeros((nx, nu))], [np.zeros((nu, nx)), F.R]])
    J = 0
    g, lbg, ubg = [], [], []
    def slack_cost(slack):
        return SLACK_L1 * ca.sum1(slack) + 0.5 * SLACK_L2 * ca.sumsqr(slack)

    limited = np.isfinite(F.x_min) | np.isfinite(F.x_max)
    extra = list(F.extra_rows)
    for k in range(F.N):
        xk, uk = w[layout["x"][k]], w[layout["u"][k]]
        y = ca.vertcat(xk - ca.DM(F.x_eq), uk - ca.DM(F.u_eq))
        J += 0.5 * ca.mtimes([y.T, ca.DM(W), y])
        lbx[layout["u"][k]], ubx[layout["u"][k]] = F.u_min, F.u_max
        if extra:
            e = w[layout["e"][k]]
            J += slack_cost(e)
            lbx[layout["e"][k]] = 0.0
            g.append(model.g(xk, uk)[extra] - e)
            lbg.append(np.full(len(extra), -np.inf))
            ubg.append(np.zeros(len(extra)))
        if k > 0:
            lo, hi = w[layout["l"][k]], w[layout["h"][k]]
            J += slack_cost(lo) + slack_cost(hi)
            lbx[layout["l"][k]] = 0.0
            lbx[layout["h"][k]] = 0.0
            ubx[layout["l"][k][~limited]] = 0.0
            ubx[layout["h"][k][~limited]] = 0.0
            low, high = np.flatnonzero(np.isfinite(F.x_min)).tolist(), np.flatnonzero(np.isfinite(F.x_max)).tolist()
            g.append(xk[low] + lo[low] - ca.DM(F.x_min[low]))
            lbg.append(np.zeros(len(low)))
            ubg.append(np.full(len(low), np.inf))
            g.append(xk[high] - hi[high] - ca.DM(F.x_max[high]))
            lbg.append(np.full(len(high), -np.inf))
            ubg.append(np.zeros(len(high)))
        g.append(model.f(xk, uk) - w[layout["x"][k + 1]])
        lbg.append(np.zeros(nx))
        ubg.append(np.zeros(nx))
    xN, sN = w[layout["x"][F.N]], w[layout["s"]]
    dx = xN - ca.DM(F.x_eq)
    J += 0.5 * ca.mtimes([dx.T, ca.DM(F.P), dx]) + slack_cost(sN)
    lbx[layout["s"]] = 0.0
    g.append(ca.mtimes([dx.T, ca.DM(F.P), dx]) - F.c - sN)
    lbg.append(np.array([-np.inf]))
    ubg.append(np.zeros(1))
    nlp = {"x": w, "f": J, "g": ca.vertcat(*g)}
    options = {"ipopt.tol": 1e-12, "ipopt.acceptable_tol": 1e-12, "ipopt.print_level": 0, "print_time": False,
               "ipopt.max_iter": 3000, "ipopt.sb": "yes"}
    solver = ca.nlpsol("mpc_reference", "ipopt", nlp, options)
    return IpoptReference(solver, F, nx, nu, lbx, ubx, np.concatenate(lbg), np.concatenate(ubg), layout["x"][0])
