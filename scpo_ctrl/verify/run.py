"""``scpo-ctrl verify RUN_DIR``: check the exported artefacts and write ``RUN_DIR/certificate.json``.

Checks, in order (each with its claim, verdict, evidence and numbers):

1. ``integrity``: every file of ``export/manifest.json`` has its recorded sha256, and the manifest's
   inputs hash matches the run's current ``plant.yaml`` and ``policy.npz`` (a stale export fails).
2. ``equivalence``: the Python float64 reference, the exported ONNX under onnxruntime, and the host C
   in float64 and float32 on the 10,000-state campaign, each within its tolerance.
3. ``closed_loop_safety`` and ``closed_loop_reach``: Monte Carlo with the exported C in the loop from
   low-discrepancy plus seeded uniform initial states of the initial box (>= 10,000 by default);
   per row the worst value; with no violation among the i.i.d. uniform ones, the scenario bound.
4. ``falsification``: a multi-start search for the worst initial state per row; the best is
   replayed with the C in the loop.
5. ``reachability``: a sound reachable-set computation from the whole box (cells, zonotopes, the residual as
   affine forms in the zonotopes' noise symbols, the float32 deviation included); the plant's map exactly for
   affine dynamics, else a first-order model of the discrete map (the plant file's integrator and substeps, not
   the ODE) with an interval-Jacobian remainder.

An MPC-backed export runs :mod:`.mpc`'s variant instead: an ``mpc_solver`` check (the exported acados solver
against IPOPT), the equivalence campaign with the MPC's inputs, the Monte Carlo with the exported MPC and C law
in the loop, a ``cortex_m4_lqr_fallback`` check when the export has the Cortex-M4 (LQR-fallback) build, and
falsification and reachability UNKNOWN with the reason.

Exit status: 0 when integrity holds and nothing is FALSIFIED, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..version import __version__
from ..config.campaign import Campaign, load_campaign
from ..config.plant_spec import load_plant_spec
from ..errors import UsageError
from ..execution import Executor, Progress, executor_for
from ..export.host_library import HostLaw
from ..export.law import law_from_run
from ..backup.acados_env import runtime_hashes
from ..export.run import inputs_hash, sha256_file
from ..files import atomic_write
from ..plant.model import build_plant
from ..policy.residual import ResidualPolicy
from ..sim.initial_states import initial_box
from . import falsify, mpc as verify_mpc, reach
from ..run_files import ExportManifest
from .certificate import CERTIFICATE_FORMAT, FALSIFIED, UNKNOWN, VERIFIED, Certificate, CertificateSummary, Check
from ..sim.closed_loop import simulate
from .distributed import distributed_closed_loop, distributed_propagate, monte_carlo_recipe, reach_recipe
from .sampled import equivalence_check, host_builds, monte_carlo_checks

log = logging.getLogger(__name__)

#: checks whose counterexample is an initial state ``x0`` of a closed loop (replayed under the backup alone)
CLOSED_LOOP_CHECKS = ("closed_loop_safety", "closed_loop_reach", "falsification")


@dataclass(frozen=True)
class VerifyRequest:
    """What the command line asked for. ``None`` takes the campaign file's value
    (``verification/campaign.yaml``, or the file ``campaign`` names; see :mod:`scpo_ctrl.config.campaign`).

    Attributes
    ----------
    run_dir : str
    samples : int or None
        Uniform random initial states of the Monte Carlo (the low-discrepancy ones come on top).
    halton : int or None
        Low-discrepancy initial states.
    beta : float or None
        Confidence parameter of the scenario bound.
    seed : int
    cells_per_axis : int or None
        Reachability grid (None: the campaign's, by state count).
    max_depth : int or None
        Bisections of failing cells.
    max_cells : int or None
        Reachability cells analysed in all (a deep bisection stops at this count; None: the campaign's, by
        state count).
    falsify_starts : int or None
        Random starts per row of the falsification search (on top of the Monte Carlo's worst).
    campaign : str or None
        The campaign file (None: ``$SCPO_CTRL_CAMPAIGN`` if set, else the shipped one).
    ray : str or None
        Run the Monte Carlo closed loops and the reachability cells on Ray (``auto`` or a cluster address);
        None: in this process.
    """

    run_dir: str
    samples: int | None = None
    halton: int | None = None
    beta: float | None = None
    seed: int = 0
    cells_per_axis: int | None = None
    max_depth: int | None = None
    max_cells: int | None = None
    falsify_starts: int | None = None
    campaign: str | None = None
    ray: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    """The certificate, where it was written, and the exit status (0: integrity holds, nothing FALSIFIED)."""

    certificate: Certificate
    path: Path
    exit_code: int


def run_verify(request: VerifyRequest) -> VerifyResult:
    """Run every check on ``request.run_dir``'s export and write its certificate (see the module docstring).

    Raises
    ------
    UsageError
        A count below its minimum, a missing run directory or export, or a bad campaign file.
    """
    r = request
    if ((r.samples is not None and r.samples < 1) or (r.halton is not None and r.halton < 0)
            or (r.max_depth is not None and r.max_depth < 0) or (r.cells_per_axis is not None and r.cells_per_axis < 1)
            or (r.max_cells is not None and r.max_cells < 1)):
        raise UsageError("--samples, --cells, --max-cells must be >= 1; --halton, --depth >= 0")
    run_dir = Path(request.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    manifest_path = run_dir / "export" / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"{run_dir}: no export/manifest.json (run `scpo-ctrl export {run_dir}` first)")
    campaign = load_campaign(request.campaign)
    request = with_campaign(request, campaign)
    if request.samples < 1 or request.halton < 0 or not 0 < request.beta < 1:
        raise UsageError("--samples must be >= 1, --halton >= 0 and --beta in (0, 1)")
    manifest = ExportManifest.read(manifest_path)
    law = law_from_run(run_dir)
    spec = load_plant_spec(run_dir / "plant.yaml")
    model = build_plant(spec)
    policy, theta, _ = ResidualPolicy.load(run_dir / "policy.npz")
    precision = manifest.precision
    box = initial_box(spec.safety.initial_states)
    horizon = spec.safety.horizon

    checks = [_integrity(run_dir, manifest, law, precision)]
    sets = None
    if checks[0].verdict != VERIFIED:
        # never execute artefacts that are not the ones the manifest describes (a modified shared
        # library could do anything when loaded)
        names = ("equivalence", "closed_loop_safety", "closed_loop_reach", "falsification", "reachability")
        if not law.backup_kind.in_closed_form:
            names = ("mpc_solver",) + names
        for name in names:
            checks.append(Check(name=name, claim="not checked", verdict=UNKNOWN, evidence="not run",
                                seconds=0.0, details={"reason": "integrity failed: the artefacts are not the "
                                                                "exported ones"}))
    elif not law.backup_kind.in_closed_form:
        if request.ray is not None:
            log.warning("--ray: an MPC-backed run's closed loops run in this process (not on Ray yet)")
        checks += verify_mpc.checks(law, run_dir, manifest.to_json(), spec, model, box, horizon, request, precision,
                                    campaign)
    else:
        with tempfile.TemporaryDirectory(prefix="scpo-verify-") as temporary, _executor(request) as executor:
            host, twin = host_builds(law, run_dir, precision, Path(temporary))
            checks.append(equivalence_check(law, run_dir, precision, host, twin, box, campaign.equivalence.mix))
            closed_loop, where = _monte_carlo_loops(executor, run_dir, manifest, law.name, precision, horizon)
            safety, reach_check, worst_starts = monte_carlo_checks(
                law, model, host, box, horizon, request, precision, closed_loop=closed_loop,
                worst_starts=campaign.falsification.worst_starts)
            safety = replace(safety, details={**safety.details, "closed_loops_ran": where})
            checks += [safety, reach_check]
            checks.append(_falsification(law, model, policy, theta, host, box, horizon, worst_starts, request,
                                         campaign.falsification.max_iterations))
            checks = [with_backup_alone(check, law, model, horizon) if check.name in CLOSED_LOOP_CHECKS else check
                      for check in checks]
            reach_result_check, sets = _reachability(law, model, box, horizon, request, precision, campaign,
                                                     executor, run_dir)
            checks.append(reach_result_check)

    if sets is not None:
        atomic_write(run_dir / "verify" / "reach_sets.npz", lambda handle: np.savez(handle, **sets))
    verdicts = {check.name: check.verdict for check in checks}
    integrity_ok = verdicts["integrity"] == VERIFIED
    falsified = [name for name, verdict in verdicts.items() if verdict == FALSIFIED]
    exit_code = 0 if integrity_ok and not falsified else 1
    certificate = Certificate(
        format=CERTIFICATE_FORMAT, generator=f"scpo-ctrl {__version__}", plant=law.name,
        run_dir=str(run_dir), precision=precision,
        manifest_sha256=sha256_file(manifest_path), inputs_sha256=manifest.inputs_sha256,
        artefacts=manifest.artefacts,
        initial_box={name: (float(lo), float(hi)) for name, (lo, hi) in zip(law.state_names, box)},
        horizon_steps=horizon,
        summary=CertificateSummary(
            verified=tuple(n for n, v in verdicts.items() if v == VERIFIED),
            falsified=tuple(falsified), unknown=tuple(n for n, v in verdicts.items() if v == UNKNOWN),
            safe_for_every_initial_state_of_the_box=bool(verdicts.get("reachability") == VERIFIED and integrity_ok
                                                         and not falsified),
        ),
        checks=tuple(checks),
        exit_code=exit_code,
    )
    path = run_dir / Certificate.RELATIVE_PATH
    certificate.write(path)
    return VerifyResult(certificate=certificate, path=path, exit_code=exit_code)


@contextmanager
def _executor(request: VerifyRequest):
    """The Ray executor ``request.ray`` asks for (closed when verify is done), or None: everything in this
    process."""
    if request.ray is None:
        yield None
        return
    executor = executor_for(request.ray)
    try:
        yield executor
    finally:
        executor.close()


def _monte_carlo_loops(executor: Executor | None, run_dir: Path, manifest: ExportManifest, name: str,
                       precision: str, horizon: int) -> tuple:
    """``(closed_loop, where they ran)``: on ``executor`` when there is one (workers load the exported library,
    checked by its sha256 in the manifest); ``(None, "in-process")`` otherwise (the default closed loop)."""
    if executor is None:
        return None, "in-process"
    relative = f"host/lib{name}_policy.so"
    library = run_dir / "export" / relative
    recipe = monte_carlo_recipe(run_dir, library, manifest.artefacts[relative], precision, horizon)
    progress = _logged_progress(f"Monte Carlo closed loops on {executor.description}")
    return distributed_closed_loop(executor, recipe, progress), executor.description


def _logged_progress(what: str) -> Progress:
    """``progress(done, total)`` of a distributed batch, logged (INFO, ``-v``) at every tenth of its tasks."""

    def report(done: int, total: int) -> None:
        if done == total or 10 * done // total > 10 * (done - 1) // total:
            log.info("%s: %d/%d tasks", what, done, total)

    return report


def with_campaign(request: VerifyRequest, campaign: Campaign) -> VerifyRequest:
    """``request`` with every setting left at None taken from ``campaign`` (the per-state-count reachability
    budgets, ``cells_per_axis`` and ``max_cells``, stay None: they depend on the plant)."""
    defaults = {"samples": campaign.monte_carlo.samples, "halton": campaign.monte_carlo.halton,
                "beta": campaign.monte_carlo.beta, "max_depth": campaign.reachability.max_depth,
                "falsify_starts": campaign.falsification.random_starts}
    return replace(request, **{name: value for name, value in defaults.items() if getattr(request, name) is None})


def _integrity(run_dir: Path, manifest: ExportManifest, law, precision: str) -> Check:
    start = time.perf_counter()
    export = run_dir / "export"
    problems = []
    for relative, digest in sorted(manifest.artefacts.items()):
        path = export / relative
        if not path.is_file():
            problems.append(f"export/{relative}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"export/{relative}: sha256 differs from the manifest")
    runtime = manifest.backup.get("acados_runtime_sha256", {})
    if runtime:
        current_runtime = runtime_hashes()
        for library, digest in sorted(runtime.items()):
            if current_runtime.get(library) != digest:
                problems.append(f"acados runtime {library}: differs from the one the export was built against "
                                "(the MPC that would run is not the exported one: export again)")
    current = inputs_hash((run_dir / "plant.yaml").read_bytes(), law, precision, manifest.target,
                          manifest.code_profile)
    if current != manifest.inputs_sha256:
        problems.append("export/manifest.json: inputs hash differs from the run's plant.yaml + policy.npz "
                        "(the export is stale: export again)")
    return Check(
        name="integrity",
        claim="every exported file has the sha256 its manifest records, and the export was made from this run's "
              "plant file and weights",
        verdict=FALSIFIED if problems else VERIFIED, evidence="hash comparison",
        seconds=time.perf_counter() - start,
        details={"files": len(manifest.artefacts), "problems": problems},
        counterexample={"files": problems} if problems else None,
    )


# -- counterexamples replayed under the backup alone ---------------------------------------------
def with_backup_alone(check: Check, law, model, horizon: int) -> Check:
    """``check`` with its counterexample (if any) replayed under the saturated LQR backup alone.

    ``counterexample["backup_alone"]`` gets the row's value in that closed loop: > 0 says the backup
    itself breaks the row from the same initial state, so the box holds states no law adapted from
    this backup can be certified on (the plant file's box or backup must change, not the network).
    """
    example = check.counterexample
    if example is None or "x0" not in example:  # equivalence's counterexample is a law input, not an initial state
        return check
    u_min, u_max = law.u_min, law.u_max

    def backup(X: np.ndarray) -> np.ndarray:
        return np.clip(law.u_eq - (X - law.x_eq) @ law.K.T, u_min, u_max)

    run = simulate(model, backup, np.array([example["x0"]]), horizon, law.P, law.c, law.x_eq)
    if example.get("row", falsify.REACH) == falsify.REACH:  # closed_loop_reach's counterexample names no row
        value = float(run.level[0, -1] - 1.0)
    else:
        value = float(run.g[0, :, run.row_names.index(example["row"])].max())
    return replace(check, counterexample={**example, "backup_alone": {"value": value, "breaks_the_row": value > 0}})


# -- 4. falsification ------------------------------------------------------------------------------
def _falsification(law, model, policy, theta, host: HostLaw, box, horizon, starts, request,
                   max_iterations: int) -> Check:
    start = time.perf_counter()
    found = falsify.search(model, policy, theta, horizon, box, starts, random_starts=request.falsify_starts,
                           seed=request.seed + 1, max_iterations=max_iterations)
    replay = simulate(model, lambda X: host.evaluate(X).u, np.array([r.x0 for r in found]), horizon, law.P, law.c,
                      law.x_eq)
    rows = []
    counterexample = None
    for k, result in enumerate(found):
        if result.row == falsify.REACH:
            value_c = float(replay.level[k, -1] - 1.0)
            step_c = horizon
        else:
            index = replay.row_names.index(result.row)
            step_c = int(np.argmax(replay.g[k, :, index]))
            value_c = float(replay.g[k, step_c, index])
        rows.append({"row": result.row, "x0": result.x0.tolist(), "reference_value": result.value,
                     "c_replay_value": value_c, "step": step_c, "evaluations": result.evaluations})
        if value_c > 0 and (counterexample is None or value_c > counterexample["value"]):
            counterexample = {"x0": result.x0.tolist(), "row": result.row, "step": step_c, "value": value_c,
                              "in": "c-host closed loop (replayed)"}
    return Check(
        name="falsification",
        claim="a multi-start local search (L-BFGS-B, CasADi gradients through the rollout) over the initial box "
              "finds no initial state whose closed loop with the exported C violates a safety row or misses the "
              "target set",
        verdict=FALSIFIED if counterexample else UNKNOWN, evidence="search",
        seconds=time.perf_counter() - start,
        details={"rows": rows, "note": "a search that finds nothing proves nothing: UNKNOWN, with the smallest "
                                      "margin found per row"},
        counterexample=counterexample,
    )


# -- 5. reachability -------------------------------------------------------------------------------
def max_generators(nx: int) -> int:
    """Zonotope order limit for ``nx`` states, the campaign file's (``reachability.by_state_count``, where the
    reason for 16 up to two states and 64 beyond is given)."""
    return load_campaign().reachability.budget(nx).max_generators


def _reachability(law, model, box, horizon, request: VerifyRequest, precision: str, campaign: Campaign,
                  executor: Executor | None = None, run_dir: Path | None = None) -> tuple:
    """The reachability check and its sets; each bisection pass's cells on ``executor`` when given (workers
    rebuild the law from ``run_dir``'s plant file and policy), else in this process."""
    budget = campaign.reachability.budget(law.nx)
    cells = request.cells_per_axis or budget.cells_per_axis
    max_cells = request.max_cells or budget.max_cells
    settings = reach.ReachSettings(cells_per_axis=cells, max_depth=request.max_depth, precision=precision,
                                   max_generators=budget.max_generators, max_cells=max_cells)
    propagate = None
    if executor is not None:
        propagate = distributed_propagate(executor, reach_recipe(run_dir, law, horizon, settings),
                                          _logged_progress(f"reachability cells on {executor.description}"))
    result = reach.analyse(law, model, box[:, 0], box[:, 1], horizon, settings, propagate)
    if not result.applicable:
        return Check(name="reachability", claim="for every initial state of the box: safe at every step and inside "
                     "the target set by the horizon", verdict=UNKNOWN, evidence="not applicable",
                     seconds=result.seconds, details={"reason": result.reason}), None
    failing = [c for c in result.cells if not c.verified]
    fraction = float(sum(np.prod(c.hi - c.lo) for c in result.cells if c.verified) / np.prod(box[:, 1] - box[:, 0]))
    details = {
        "cells": len(result.cells), "verified_cells": len(result.cells) - len(failing),
        "cells_per_axis": cells, "max_depth": request.max_depth, "max_cells": max_cells,
        "verified_fraction_of_box": fraction,
        "argument": result.argument,
        "proven": _what_is_proven(result, fraction, precision),
        "target_set_robustly_invariant": result.target_invariant, "contraction_in_P_norm": result.contraction,
        "target_level": result.target_level, "target_level_over_c": result.target_level / law.c,
        "target_set_argument": result.target_argument,
        "float32_deviation_bound_in_target_set": result.float32_deviation_in_target,
        "failing_cells": [{"lo": c.lo.tolist(), "hi": c.hi.tolist(), "step": c.failed_step,
                           "because": c.failed_because} for c in failing[:50]],
        "failing_cells_listed": min(len(failing), 50), "failing_cells_total": len(failing),
        "method": ("zonotopes per cell through " + ("the plant's exact affine map" if model.dynamics_affine else
                   "a first-order model of the plant's discrete map f(x, u) around each set's centre (the plant "
                   "file's integrator with its substeps, as the model's CasADi f computes it: the verdict is about "
                   "this discrete map, not the ODE), the mean-value remainder from the interval Jacobian of f over "
                   "the set's box as new generators") + "; the input as its "
                  "linear part (backup plus the residual as an affine form in "
                  "the zonotope's noise symbols: tanh and gate by linear relaxations, gate times network by affine "
                  "multiplication; or the backup with interval or mean-value bounds of the residual, whichever "
                  "is narrowest), the remainder, saturation and float32 deviation bound as new generators; "
                  "failing cells bisected along the axis driving the failing row; entering the robustly "
                  "invariant target set ends a cell"),
    }
    verdict = VERIFIED if result.verified else UNKNOWN
    sets = {"lo": np.array([c.lo for c in result.cells]), "hi": np.array([c.hi for c in result.cells]),
            "verified": np.array([c.verified for c in result.cells]),
            "entered": np.array([-1 if c.entered_step is None else c.entered_step for c in result.cells]),
            **{f"piece_{key}": value for key, value in result.pieces.items()}}
    return Check(
        name="reachability",
        claim="for every initial state of the box (not samples): the closed loop "
              + ("" if model.dynamics_affine else "of the plant's discrete map (its integrator, not the ODE) ")
              + f"with the deployed {precision} law stays inside every safety row at every step and enters the "
              "target set by the "
              "horizon, after which it stays there and safe",
        verdict=verdict, evidence="proof (sound over-approximation)" if verdict == VERIFIED else
        "over-approximation inconclusive on the failing cells", seconds=result.seconds, details=details), sets


def _what_is_proven(result: reach.ReachResult, fraction: float, precision: str) -> str:
    """The reachability check's claim in one sentence, as far as it was proven."""
    subject = ("the closed loop" if result.argument == reach.AFFINE_EXACT else
               "the closed loop of the plant's discrete map (its integrator and substeps, not the ODE)")
    if not result.target_invariant:
        return (f"nothing for all time: the target set's robust invariance is not proven "
                f"({result.target_argument}); no cell is verified")
    return (f"for {100 * fraction:.4g}% of the initial box (the verified cells), {subject} with the deployed "
            f"{precision} law stays inside every safety row at every step and enters the target set "
            f"V <= {result.target_level:.6g} by the horizon, which is robustly invariant ({result.target_argument}), "
            "so it stays safe forever; the other cells are unknown, not unsafe")

