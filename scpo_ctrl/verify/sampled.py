"""The sampled checks of ``verify``, shared by the LQR-backed and the MPC-backed variants.

* :func:`host_builds`: the exported host C (float32 and its float64 twin) loaded for evaluation;
* :func:`equivalence_check`: the reference, ONNX and host C on the equivalence campaign;
* :func:`monte_carlo_states` and :func:`monte_carlo_checks`: closed loops with the exported C from
  low-discrepancy plus i.i.d. uniform initial states of the box (``closed_loop_safety`` with the
  scenario bound, and ``closed_loop_reach``).

``request`` arguments are :class:`~scpo_ctrl.verify.run.VerifyRequest` objects with the campaign's
values filled in (``samples``, ``halton``, ``seed``, ``beta``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from scipy.stats import qmc

from ..export.campaign import equivalence_campaign
from ..export.equivalence import compare
from ..export.error_bound import ONNX_ACTIVATION_ULPS, float_error_bound_box
from ..export.host_library import HostLaw
from ..export.law import evaluate
from ..export.run import build_host_law, run_onnx
from ..run_files import ExportManifest
from . import falsify
from .certificate import FALSIFIED, VERIFIED, Check
from ..sim.closed_loop import simulate
def host_builds(law, run_dir: Path, precision: str, directory: Path) -> tuple:
    """The exported host library and its twin in the other precision and the export's code profile (built into
    ``directory``)."""
    host = HostLaw(run_dir / "export" / "host" / f"lib{law.name}_policy.so", law.name, law.nx, law.nu, precision,
                   not law.backup_kind.in_closed_form)
    profile = ExportManifest.read(run_dir / ExportManifest.RELATIVE_PATH).code_profile
    twin = build_host_law(law, "float64" if precision == "float32" else "float32", directory, profile=profile)
    return host, twin


# -- 1. integrity --------------------------------------------------------------------------------
def equivalence_check(law, run_dir: Path, precision: str, host: HostLaw, twin: HostLaw, box: np.ndarray, mix,
                 backup_inputs=None) -> Check:
    """``mix``: the campaign's states per kind; ``backup_inputs(X) -> U (N, nu)``: the campaign's backup
    inputs for an MPC-backed law."""
    start = time.perf_counter()
    X = equivalence_campaign(law, seed=1, mix=mix).X
    U = None if backup_inputs is None else backup_inputs(X)
    results = [
        compare(law, f"c-host-{precision} (exported)", precision, X, host.evaluate(X, U), U_backup=U),
        compare(law, f"c-host-{twin.precision} (same law, other precision)", twin.precision, X, twin.evaluate(X, U),
                U_backup=U),
        compare(law, f"onnxruntime-{precision} (exported)", precision, X,
                run_onnx(run_dir / "export" / "policy.onnx", X, precision, U), any_order=True,
                activation_ulps=ONNX_ACTIVATION_ULPS, U_backup=U),
    ]
    failed = [r for r in results if not r.passed]
    details = {
        "states": len(X), "implementations": [r.to_dict() for r in results],
        "float32_worst_error_on_campaign": max(r.worst_error for r in results if r.precision == "float32"),
    }
    if U is None:
        details["float32_error_bound_over_the_initial_box"] = float(np.max(float_error_bound_box(
            law, box[:, 0][None], box[:, 1][None], "float32")))
    else:
        details["backup_inputs"] = ("the exported MPC's cold solution at the finite states inside the monitor "
                                    "region (one in twenty replaced by NaN, a failed solve); seeded draws (one "
                                    "in ten NaN) elsewhere")
    counterexample = None
    if failed:
        worst = max(failed, key=lambda r: r.worst_bound_ratio)
        counterexample = {"implementation": worst.implementation, "state": worst.worst_state,
                          "error": worst.worst_error, "error_over_tolerance": worst.worst_bound_ratio}
    return Check(
        name="equivalence",
        claim=f"on the {len(X)} campaign states (inside and beyond the state box, on its boundary, near both gate "
              "switching surfaces and the equilibrium) the exported C and ONNX and the other precision's C compute "
              "the reference law within their tolerances, with the same branch away from the switching surfaces",
        verdict=FALSIFIED if failed else VERIFIED, evidence=f"sampled ({len(X)} states)",
        seconds=time.perf_counter() - start, details=details, counterexample=counterexample,
    )


# -- 3. Monte Carlo --------------------------------------------------------------------------------
def monte_carlo_states(box: np.ndarray, request) -> np.ndarray:
    """The Monte Carlo's initial states ``(halton + samples, nx)``: low-discrepancy first, then i.i.d. uniform."""
    nx = len(box)
    rng = np.random.default_rng(request.seed)
    low, high = box[:, 0], box[:, 1]
    # a Halton sequence seeded differently from the validation set's (seed + 1000), so it adds new states
    quasi = (low + qmc.Halton(d=nx, scramble=True, seed=request.seed + 1000).random(request.halton) * (high - low)
             if request.halton else np.zeros((0, nx)))
    uniform = rng.uniform(low, high, size=(request.samples, nx))
    return np.concatenate([quasi, uniform])


def monte_carlo_checks(law, model, host: HostLaw, box, horizon, request, precision: str,
                 closed_loop=None, worst_starts: int = 0) -> tuple:
    """``closed_loop(X0, exported: bool) -> ClosedLoopBatch`` replaces the default (the law alone in the loop),
    e.g. with the MPC in the loop; ``worst_starts``: the worst initial states kept per row to start the
    falsification from."""
    if closed_loop is None:
        def closed_loop(X0, exported):
            controller = (lambda X: host.evaluate(X).u) if exported else (lambda X: evaluate(law, X).u)
            return simulate(model, controller, X0, horizon, law.P, law.c, law.x_eq)
    start = time.perf_counter()
    X0 = monte_carlo_states(box, request)
    quasi = X0[:request.halton]
    loop_start = time.perf_counter()
    run_c = closed_loop(X0, True)
    c_loop_seconds = time.perf_counter() - loop_start
    run_ref = closed_loop(X0, False)
    seconds_c = time.perf_counter() - start
    violating = run_c.violating()
    reached = run_c.reached()
    n_uniform = request.samples
    iid = slice(len(quasi), None)
    worst = run_c.worst_per_row()
    per_row = {name: {"worst": float(worst[i]), "violating_trajectories": int(np.sum(np.any(run_c.g[:, :, i] > 0,
                                                                                          axis=1)))}
               for i, name in enumerate(run_c.row_names)}
    finite_ref = np.isfinite(run_ref.g) & np.isfinite(run_c.g)
    deviation = float(np.max(np.abs(run_c.g - run_ref.g)[finite_ref])) if finite_ref.any() else 0.0
    epsilon = math.log(1.0 / request.beta) / n_uniform
    details = {
        "initial_states": len(X0), "low_discrepancy": len(quasi), "uniform_iid": n_uniform, "seed": request.seed,
        "horizon_steps": horizon, "closed_loop_steps": int(len(X0) * horizon),
        "steps_per_second_c_in_the_loop": len(X0) * horizon / c_loop_seconds,
        "rows": per_row, "input_rows_worst": {name: float(v) for name, v in zip(
            run_c.input_row_names, run_c.g_input.max(axis=(0, 1)))},
        "violating_trajectories": int(violating.sum()),
        "float32_vs_float64_closed_loop_max_row_difference": deviation,
        "reference_float64_violating_trajectories": int(run_ref.violating().sum()),
    }
    counterexample = None
    if violating.any():
        score = np.where(np.isfinite(run_c.g), run_c.g, 1e300).max(axis=(1, 2))
        k = int(np.argmax(score))
        row = int(np.argmax(np.where(np.isfinite(run_c.g[k]), run_c.g[k], 1e300).max(axis=0)))
        step = int(np.argmax(run_c.g[k, :, row]))
        counterexample = {"x0": X0[k].tolist(), "row": run_c.row_names[row], "step": step,
                          "value": float(run_c.g[k, step, row]), "in": f"c-host-{precision} closed loop"}
    scenario = None
    if not violating[iid].any():
        scenario = {"epsilon": epsilon, "beta": request.beta, "samples": n_uniform,
                    "statement": f"no violation in {n_uniform} i.i.d. uniform initial states: the probability that "
                                 f"a uniformly drawn initial state of the box violates a constraint is at most "
                                 f"{epsilon:.3g}, with confidence {1 - request.beta:g} (N >= ln(1/beta)/epsilon)"}
    details["scenario_bound"] = scenario
    safety = Check(
        name="closed_loop_safety",
        claim=f"from each of the {len(X0)} sampled initial states, the closed loop with the exported {precision} C "
              f"satisfies every safety row at every step of the {horizon}-step horizon",
        verdict=FALSIFIED if violating.any() else VERIFIED, evidence=f"sampled ({len(X0)} closed loops)",
        seconds=time.perf_counter() - start, details=details, counterexample=counterexample,
    )
    missed = ~reached
    reach_counterexample = None
    if missed.any():
        k = int(np.argmax(run_c.level[:, -1]))
        reach_counterexample = {"x0": X0[k].tolist(), "level_at_horizon": float(run_c.level[k, -1]),
                                "in": f"c-host-{precision} closed loop"}
    reach_rate = float(reached.mean())
    reach_epsilon = epsilon if not missed[iid].any() else None
    reach_check = Check(
        name="closed_loop_reach",
        claim=f"from each of the {len(X0)} sampled initial states, the closed loop with the exported C ends the "
              f"horizon inside the target set (V(x_H) <= c)",
        verdict=FALSIFIED if missed.any() else VERIFIED, evidence=f"sampled ({len(X0)} closed loops)",
        seconds=seconds_c,
        details={"reach_rate": reach_rate, "missed": int(missed.sum()), "scenario_epsilon": reach_epsilon,
                 "beta": request.beta, "worst_level_at_horizon": float(run_c.level[:, -1].max())},
        counterexample=reach_counterexample,
    )
    # the worst initial states per row (and for the reach row) start the falsification search
    starts = {}
    for i, name in enumerate(run_c.row_names):
        order = np.argsort(-run_c.g[:, :, i].max(axis=1))[:worst_starts]
        starts[name] = X0[order]
    starts[falsify.REACH] = X0[np.argsort(-run_c.level[:, -1])[:worst_starts]]
    return safety, reach_check, starts
