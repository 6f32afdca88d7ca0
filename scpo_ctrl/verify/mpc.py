"""``verify`` for an MPC-backed export: which checks run, and how the MPC enters them.

* ``mpc_solver``: the exported acados solver (``export/host/lib<name>_mpc.so``) against an independent
  CasADi/IPOPT solution of the same OCP, from a cold start at low-discrepancy states of the initial box.
* ``equivalence``: the exported C (both precisions) and ONNX against the float64 reference, with the
  exported MPC's inputs as the backup inputs of the campaign.
* ``closed_loop_safety`` / ``closed_loop_reach``: Monte Carlo with the exported MPC and the exported C law
  in the loop (one solver per trajectory, warm-started as on the target).
* With the embedded MPC (``solver: admm``), ``mpc_solver`` compares the exported float32 controller with
  Clarabel's exact solution of the same QP within the stated tolerance, and the Cortex-M4 build is the
  certified law itself (no LQR-fallback check; ``hil --target qemu`` runs it against the host bit for bit).
* ``falsification`` and ``reachability`` are not run (UNKNOWN, with the reason): the search
  differentiates the closed loop through a backup in closed form, and the reachability analysis bounds
  the backup's input over boxes; neither exists for an MPC here.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import qmc

from ..backup.embedded_mpc import input_scale
from ..backup.embedded_qp import ExactQpError, exact_inputs
from ..backup.kinds import backup_recorded
from ..backup.mpc import ipopt_reference
from ..config.campaign import Campaign, MpcSolverCampaign
from ..export.law import evaluate, lqr_fallback
from ..export.mpc_bundle import (MpcController, adapted_solver, artefacts_of, campaign_backup_inputs, problem_mpc,
                                 simulate_with_mpc)
from .certificate import FALSIFIED, UNKNOWN, VERIFIED, Check
from ..sim.closed_loop import ClosedLoopBatch, simulate
from .sampled import equivalence_check, host_builds, monte_carlo_checks, monte_carlo_states

def checks(law, run_dir: Path, manifest: dict, spec, model, box: np.ndarray, horizon: int, request,
           precision: str, campaign: Campaign) -> list:
    """The checks after integrity; ``request`` has the campaign's values filled in (see ``run.with_campaign``),
    ``campaign`` gives the equivalence mix and the solver check's states and tolerance."""

    artefacts = artefacts_of(run_dir / "export", manifest)
    library = artefacts.controller_library
    controller = MpcController(library, law.nx, law.nu, law.u_eq)
    problem = problem_mpc(spec, law, adapted_solver(run_dir))
    exported = backup_recorded(manifest.get("backup", {}))
    check_solver, in_the_loop = SOLVERS[exported.name]
    result = [check_solver(controller, problem, box, request.seed, campaign.mpc_solver)]
    with tempfile.TemporaryDirectory(prefix="scpo-verify-") as temporary:
        host, twin = host_builds(law, run_dir, precision, Path(temporary))
        result.append(equivalence_check(law, run_dir, precision, host, twin, box, campaign.equivalence.mix,
                                   backup_inputs=lambda X: campaign_backup_inputs(law, X, controller, seed=1)))

        def closed_loop(X0: np.ndarray, exported: bool) -> ClosedLoopBatch:
            return simulate_with_mpc(model, law, library, host if exported else None, X0, horizon)

        safety, reach_check, _ = monte_carlo_checks(law, model, host, box, horizon, request, precision, closed_loop)
    mpc_in_the_loop = in_the_loop.format(solver=artefacts.solver_name)
    for check in (safety, reach_check):
        check.details["in_the_loop"] = (f"{mpc_in_the_loop} and the exported {precision} C law on its input; the "
                                        "float64 reference run has the same MPC and the Python law")
    result += [safety, reach_check]
    if manifest.get("target") == "cortex-m4" and not exported.cortex_m4_carries_certified_law:
        result.append(_lqr_fallback_check(law, model, box, horizon, request))
    for name, claim, reason in (
        ("falsification", "a local search over the initial box finds no violating initial state",
         "not run: the search differentiates the closed loop through the backup in closed form; an MPC backup "
         "would need the solver's sensitivities along the trajectory"),
        ("reachability", "for every initial state of the box: safe at every step and inside the target set by "
         "the horizon", "not applicable: no sound over-approximation of an MPC's input over a set of states is "
         "implemented (the interval/zonotope analysis needs the backup in closed form)"),
    ):
        result.append(Check(name=name, claim=claim, verdict=UNKNOWN, evidence="not run", seconds=0.0,
                             details={"reason": reason}))
    return result


def _lqr_fallback_check(law, model, box: np.ndarray, horizon: int, request) -> Check:
    """The Cortex-M4 build's law (the network on the LQR) in closed loop from the Monte Carlo's initial states."""

    start = time.perf_counter()
    fallback = lqr_fallback(law)
    X0 = monte_carlo_states(box, request)
    run = simulate(model, lambda X: evaluate(fallback, X).u, X0, horizon, law.P, law.c, law.x_eq)
    violating, reached = run.violating(), run.reached()
    worst = run.worst_per_row()
    counterexample = None
    if violating.any():
        k = int(np.argmax(np.where(np.isfinite(run.g), run.g, 1e300).max(axis=(1, 2))))
        counterexample = {"x0": X0[k].tolist(), "in": "float64 closed loop of the LQR-fallback law"}
    return Check(
        name="cortex_m4_lqr_fallback",
        claim=f"the Cortex-M4 build's law, this run's network on the LQR instead of the MPC (NOT the law SCPO "
              f"certified), satisfies every safety row along the {horizon}-step closed loop from each of the "
              f"{len(X0)} Monte Carlo initial states",
        verdict=FALSIFIED if violating.any() else VERIFIED, evidence=f"sampled ({len(X0)} closed loops, float64 "
        "reference; its C is checked against it at export, and on the emulated Cortex-M4 by hil --target qemu)",
        seconds=time.perf_counter() - start,
        details={"violating_trajectories": int(violating.sum()), "reach_rate": float(reached.mean()),
                 "rows": {name: float(worst[i]) for i, name in enumerate(run.row_names)}},
        counterexample=counterexample,
    )


def _solver_check(controller: MpcController, problem, box: np.ndarray, seed: int,
                  settings: MpcSolverCampaign) -> Check:
    start = time.perf_counter()
    low, high = box[:, 0], box[:, 1]
    tolerance = settings.tolerance
    X = low + qmc.Halton(d=len(low), scramble=True, seed=seed + 2000).random(settings.states) * (high - low)
    exported = controller.cold(X)
    reference = ipopt_reference(problem.mpc.formulation, problem.model)
    solutions = [reference.solve(x) for x in X]
    U_ipopt = np.array([u for u, _ in solutions])
    ipopt_ok = np.array([ok for _, ok in solutions])
    difference = np.abs(exported.u - U_ipopt).max(axis=1)
    comparable = ipopt_ok & (exported.status == 0)
    failing = comparable & (difference > tolerance)
    details = {
        "states": len(X), "tolerance": tolerance, "compared": int(comparable.sum()),
        "acados_not_converged": int(np.sum(exported.status != 0)), "ipopt_not_converged": int(np.sum(~ipopt_ok)),
        "max_difference": float(difference[comparable].max()) if comparable.any() else None,
        "median_sqp_iterations": float(np.median(exported.iterations)),
    }
    counterexample = None
    if failing.any():
        k = int(np.argmax(np.where(failing, difference, -1.0)))
        counterexample = {"state": X[k].tolist(), "u_exported": exported.u[k].tolist(),
                          "u_ipopt": U_ipopt[k].tolist(), "difference": float(difference[k])}
    verdict = FALSIFIED if failing.any() else (VERIFIED if comparable.all() else UNKNOWN)
    return Check(
        name="mpc_solver",
        claim=f"from a cold start at {len(X)} low-discrepancy states of the initial box, the exported acados "
              f"solver's first input equals an independent CasADi/IPOPT solution of the same OCP within "
              f"{tolerance:g}",
        verdict=verdict, evidence=f"sampled ({len(X)} states)", seconds=time.perf_counter() - start,
        details=details, counterexample=counterexample,
    )


def _embedded_solver_check(controller: MpcController, problem, box: np.ndarray, seed: int,
                           settings: MpcSolverCampaign) -> Check:
    """The exported embedded MPC (float32 C, through the host controller) against Clarabel's exact QP."""
    start = time.perf_counter()
    low, high = box[:, 0], box[:, 1]
    tolerance = settings.embedded_tolerance
    X = low + qmc.Halton(d=len(low), scramble=True, seed=seed + 2000).random(settings.states) * (high - low)
    F = problem.mpc.formulation
    exported = controller.cold(X)
    try:
        exact = exact_inputs(F, X)
    except ExactQpError as exc:  # the reference failed, not the exported solver: nothing is shown either way
        return Check(name="mpc_solver", claim="the exported embedded MPC against Clarabel's exact QP",
                     verdict=UNKNOWN, evidence="not run", seconds=time.perf_counter() - start,
                     details={"reason": f"the exact QP could not be solved: {exc}"}, counterexample=None)
    relative = (np.abs(exported.u - exact) / input_scale(F)).max(axis=1)
    failing = relative > tolerance
    counterexample = None
    if failing.any():
        k = int(np.argmax(relative))
        counterexample = {"state": X[k].tolist(), "u_exported": exported.u[k].tolist(), "u_exact": exact[k].tolist(),
                          "relative_difference": float(relative[k])}
    return Check(
        name="mpc_solver",
        claim=f"at {len(X)} low-discrepancy states of the initial box, the exported embedded MPC's float32 input "
              f"equals Clarabel's exact solution of the same QP within {tolerance:g} of each input's "
              "half-range",
        verdict=FALSIFIED if failing.any() else VERIFIED, evidence=f"sampled ({len(X)} states)",
        seconds=time.perf_counter() - start,
        details={"states": len(X), "tolerance_relative": tolerance,
                 "max_relative_difference": float(relative.max()), "admm_iterations": F.iterations},
        counterexample=counterexample,
    )


#: per backup with a solver (:data:`scpo_ctrl.backup.kinds.BACKUPS`): the ``mpc_solver`` check, and how the
#: Monte Carlo's details name the exported MPC in the loop
SOLVERS = {
    "mpc": (_solver_check, "the exported acados MPC ({solver}, one solver per trajectory: cold first step, then "
                           "warm starts from the shifted plan)"),
    "admm": (_embedded_solver_check, "the exported embedded MPC ({solver}: float32 ADMM, the C the Cortex-M4 build "
                                     "runs)"),
}
