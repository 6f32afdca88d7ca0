"""``scpo-ctrl verify PLANT.yaml --controller NET.onnx``: the closed loop of a foreign network alone.

No backup, no gate: the plant file's dynamics with ``u = A_out N(A_in x + b_in) + b_out`` (the file's
``controller`` maps, identity where absent). Checks, each with its claim, verdict, evidence and numbers:

1. ``closed_loop_safety``: Monte Carlo from low-discrepancy plus seeded i.i.d. uniform initial states of the
   box; with no violation among the uniform ones, the scenario bound ``epsilon = ln(1/beta) / N``. The worst
   violation is replayed as the falsification's is: FALSIFIED only when it replays, else UNKNOWN.
2. ``falsification``: a seeded search (corners, the Monte Carlo's worst states, then shrinking random
   perturbations around the best) for the initial state with the largest margin of any row; a violation is
   replayed in the float64 loop and, where onnxruntime can run the file, with onnxruntime evaluating the
   ONNX file itself; FALSIFIED only when every replay shows it.
3. ``reachability``: :mod:`.foreign_reach` (sound, over the whole box): VERIFIED when every cell is proven,
   else UNKNOWN with the proven fraction and the failing rows; UNKNOWN with the reason where it cannot run.

Every row is checked at the sampling instants only (the certificate says so), for the plant file's discrete
map (its integrator and substeps). Exit status: 1 when a check is FALSIFIED, else 0; bad input raises
(exit 2 at the command line) before anything is written.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config.plant_spec import load_plant_spec
from ..errors import UsageError
from ..run_files import Check, ForeignCertificate, ForeignCertificateSummary
from ..sim.initial_states import initial_box
from ..version import __version__
from .certificate import FALSIFIED, UNKNOWN, VERIFIED
from .foreign_loop import ForeignLoop, foreign_loop
from .foreign_reach import ForeignReachSettings, analyse_foreign
from .onnx_network import read_onnx
from .sampled import monte_carlo_states

log = logging.getLogger(__name__)

FOREIGN_CERTIFICATE_FORMAT = "scpo-foreign-certificate/1"


@dataclass(frozen=True)
class ForeignVerifyRequest:
    """What ``verify PLANT --controller NET`` was asked.

    Attributes
    ----------
    plant, controller : str
        The plant file (schema version 1 or 2) and the ONNX file.
    out : str or None
        Where the certificate goes (default ``<plant file stem>.certificate.json`` in the current directory).
    samples, halton : int
        Uniform i.i.d. and low-discrepancy Monte Carlo initial states.
    beta : float
        Confidence parameter of the scenario bound.
    seed : int
    falsify_iterations : int
        Rounds of the falsification search (0: corners and Monte Carlo worst only).
    cells_per_axis, max_depth, max_cells : int
        Reachability grid, bisections of failing cells, cells analysed in all.
    reach : bool
        Run the reachability analysis (False: UNKNOWN, "not run").
    """

    plant: str
    controller: str
    out: str | None = None
    samples: int = 1000
    halton: int = 256
    beta: float = 1e-6
    seed: int = 0
    falsify_iterations: int = 10
    cells_per_axis: int = 1
    max_depth: int = 8
    max_cells: int = 500
    reach: bool = True


@dataclass(frozen=True)
class ForeignVerifyResult:
    """The certificate, where it was written, the exit status (1: something FALSIFIED)."""

    certificate: ForeignCertificate
    path: Path
    exit_code: int


def _onnxruntime_controller(loop: ForeignLoop):
    """The command computed by onnxruntime from the ONNX file itself (None, reason when it cannot run it)."""
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(loop.network.source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own error types for models it refuses
        return None, f"onnxruntime cannot run the file: {str(exc).splitlines()[0][:200]}"
    feeds = [i for i in session.get_inputs()]
    name = feeds[-1].name
    shape = [d if isinstance(d, int) else 1 for d in feeds[-1].shape]
    dtype = np.float64 if "double" in feeds[-1].type else np.float32

    def control(X):
        out = np.zeros((len(X), loop.network.n_out))
        inputs = X @ loop.A_in.T + loop.b_in
        for k, x in enumerate(inputs):
            value = session.run(None, {name: x.reshape(shape).astype(dtype)})[0]
            out[k] = np.asarray(value, dtype=float).reshape(-1)
        return out @ loop.A_out.T + loop.b_out

    return control, ""


def _replay(loop: ForeignLoop, found: dict) -> tuple:
    """Replay the violation ``found`` (from :func:`_worst`) with onnxruntime evaluating the file itself.

    Returns ``(replays, confirmed, why)``: the row's worst margin per evaluator (``onnxruntime`` None when it
    cannot run the file, ``why`` then says why), and whether every evaluator that ran shows the violation."""
    x0 = np.asarray(found["x0"], dtype=float)
    ort_control, why = _onnxruntime_controller(loop)
    replays = {"float64_reader": found["value"], "onnxruntime": None}
    if ort_control is not None:
        X, U = loop.rollout(x0[None], control=ort_control)
        row = [r.name for r in loop.rows].index(found["row"])
        replays["onnxruntime"] = float(loop.margins(X, U)[0, :, row].max())
    confirmed = all(v is None or v > 0 for v in replays.values())
    return replays, confirmed, why


def _worst(loop: ForeignLoop, margins: np.ndarray, k: int, x0: np.ndarray) -> dict:
    row = int(np.argmax(margins[k].max(axis=0)))
    step = int(np.argmax(margins[k, :, row]))
    return {"x0": [float(v) for v in x0], "row": loop.rows[row].name, "step": step,
            "value": float(margins[k, step, row])}


def _monte_carlo(loop: ForeignLoop, box: np.ndarray, request: ForeignVerifyRequest) -> tuple:
    start = time.perf_counter()
    X0 = monte_carlo_states(box, request)
    X, U = loop.rollout(X0)
    margins = loop.margins(X, U)
    score = margins.max(axis=(1, 2))
    violating = score > 0
    iid = np.arange(len(X0)) >= request.halton
    per_row = {row.name: {"worst": float(margins[:, :, i].max()),
                          "violating_trajectories": int(np.sum(margins[:, :, i].max(axis=1) > 0)),
                          "steps": [row.first, row.last]}
               for i, row in enumerate(loop.rows)}
    epsilon = math.log(1.0 / request.beta) / request.samples
    scenario = None
    if not violating[iid].any():
        scenario = {"epsilon": epsilon, "beta": request.beta, "samples": request.samples,
                    "statement": f"no violation in {request.samples} i.i.d. uniform initial states: the probability "
                                 f"that a uniformly drawn initial state of the box violates a row is at most "
                                 f"{epsilon:.3g}, with confidence {1 - request.beta:g}"}
    details = {"initial_states": len(X0), "low_discrepancy": request.halton, "uniform_iid": request.samples,
               "seed": request.seed, "violating_trajectories": int(violating.sum()), "rows": per_row,
               "scenario_bound": scenario}
    counterexample, verdict = None, VERIFIED
    if violating.any():  # found with the reader's float64 network: FALSIFIED only if onnxruntime replays it
        counterexample = _worst(loop, margins, int(np.argmax(score)), X0[int(np.argmax(score))])
        replays, confirmed, why = _replay(loop, counterexample)
        counterexample["replayed"] = replays
        if why:
            details["onnxruntime"] = why
        verdict = FALSIFIED if confirmed else UNKNOWN
        if not confirmed:
            details["reason"] = (f"the worst sampled violation ({counterexample['row']} by "
                                 f"{counterexample['value']:.3g} in float64) does not replay with onnxruntime on "
                                 f"the file (margin {replays['onnxruntime']:.3g}): the network's rounding decides it")
    check = Check(
        name="closed_loop_safety",
        claim=f"from each of the {len(X0)} sampled initial states, the closed loop of the network alone satisfies "
              f"every row at the sampling instants where it applies, over {loop.horizon} steps (a violation is "
              f"replayed with onnxruntime from the file)",
        verdict=verdict, evidence=f"sampled ({len(X0)} closed loops)", seconds=time.perf_counter() - start,
        details=details, counterexample=counterexample)
    order = np.argsort(-score)[:8]
    return check, X0[order]


def _falsify(loop: ForeignLoop, box: np.ndarray, starts: np.ndarray, request: ForeignVerifyRequest) -> Check:
    start = time.perf_counter()
    rng = np.random.default_rng(request.seed + 7)
    nx = len(box)
    corners = np.array(list(itertools.product(*box))) if nx <= 10 else np.zeros((0, nx))
    candidates = np.unique(np.concatenate([corners, starts]), axis=0)
    evaluations = 0

    def score(X0):
        X, U = loop.rollout(X0)
        return loop.margins(X, U).max(axis=(1, 2))

    values = score(candidates)
    evaluations += len(candidates)
    width = box[:, 1] - box[:, 0]
    sigma = 0.25
    for _ in range(request.falsify_iterations):
        best = candidates[np.argsort(-values)[:8]]
        trial = best[:, None, :] + rng.normal(size=(len(best), 16, nx)) * sigma * width
        trial = np.clip(trial.reshape(-1, nx), box[:, 0], box[:, 1])
        trial_values = score(trial)
        evaluations += len(trial)
        candidates = np.concatenate([candidates, trial])
        values = np.concatenate([values, trial_values])
        sigma *= 0.6
    k = int(np.argmax(values))
    x0 = candidates[k]
    X, U = loop.rollout(x0[None])
    margins = loop.margins(X, U)
    found = _worst(loop, margins, 0, x0)
    details = {"evaluations": evaluations, "iterations": request.falsify_iterations, "seed": request.seed,
               "best": found}
    counterexample = None
    verdict = UNKNOWN
    if found["value"] > 0:
        replays, confirmed, why = _replay(loop, found)
        if why:
            details["onnxruntime"] = why
        counterexample = dict(found, replayed=replays,
                              trajectory=[[float(v) for v in x] for x in loop.rollout(x0[None])[0][0]])
        verdict = FALSIFIED if confirmed else UNKNOWN
    claim = ("a search of the initial box for the initial state whose closed loop violates a row by the most "
             "(a violation is replayed with the network evaluated by this reader in float64 and by onnxruntime "
             "from the file)")
    return Check("falsification", claim, verdict, f"search ({evaluations} closed loops)",
                 time.perf_counter() - start, details, counterexample)


def _reachability(loop: ForeignLoop, box: np.ndarray, request: ForeignVerifyRequest) -> Check:
    claim = (f"for every initial state of the box, every row holds at the sampling instants where it applies over "
             f"{loop.horizon} steps, for the plant file's discrete map with this network in real arithmetic on its "
             f"stored weights")
    if not request.reach:
        return Check("reachability", claim, UNKNOWN, "not run", 0.0, {"reason": "not run (--no-reach)"})
    settings = ForeignReachSettings(request.cells_per_axis, request.max_depth, request.max_cells)
    result = analyse_foreign(loop, box, settings)
    if not result.applicable:
        return Check("reachability", claim, UNKNOWN, "not applicable", result.seconds, {"reason": result.reason})
    details = {"argument": result.argument, "dynamics": result.reason, "proven_fraction_of_box": result.proven_fraction,
               "cells_proven": result.cells_proven, "cells_unknown": result.cells_unknown,
               "cells_analysed": result.cells_analysed, "failing_rows": result.failures,
               "first_failure_step": result.first_failure_step, "cells_per_axis": settings.cells_per_axis,
               "max_depth": settings.max_depth, "max_cells": settings.max_cells}
    if not result.verified:
        details["reason"] = (f"{result.cells_unknown} cell(s) not proven within the budget (rows that may fail: "
                             f"{', '.join(sorted(result.failures))}); proven {100 * result.proven_fraction:.1f}% of "
                             f"the box")
    return Check("reachability", claim, VERIFIED if result.verified else UNKNOWN,
                 f"proof ({result.argument})", result.seconds, details)


def run_foreign_verify(request: ForeignVerifyRequest) -> ForeignVerifyResult:
    """Verify the closed loop of ``request.controller`` on ``request.plant`` and write the certificate.

    Raises
    ------
    UsageError, SpecError, OnnxReadError
        Bad counts, a bad plant file, an unreadable or unsupported network, or sizes that do not match; nothing
        is written.
    """
    r = request
    if r.samples < 1 or r.halton < 0 or not 0 < r.beta < 1 or r.falsify_iterations < 0 or r.cells_per_axis < 1 \
            or r.max_depth < 0 or r.max_cells < 1:
        raise UsageError("--samples, --cells, --max-cells must be >= 1; --halton, --depth >= 0; --beta in (0, 1)")
    spec = load_plant_spec(r.plant)
    if spec.safety.initial_states.box is None:
        raise UsageError(f"{r.plant}: verify --controller needs safety.initial_states.box (points give no box)")
    network = read_onnx(r.controller)
    loop = foreign_loop(spec, network)
    box = initial_box(spec.safety.initial_states)
    out = Path(r.out) if r.out else Path(f"{Path(r.plant).stem}.certificate.json")
    if not out.parent.is_dir():
        raise UsageError(f"{out}: its directory does not exist")
    safety, starts = _monte_carlo(loop, box, r)
    falsification = _falsify(loop, box, starts, r)
    reach = _reachability(loop, box, r)
    checks = (safety, falsification, reach)
    names = lambda verdict: tuple(c.name for c in checks if c.verdict == verdict)  # noqa: E731
    falsified = names(FALSIFIED)
    summary = ForeignCertificateSummary(names(VERIFIED), falsified, names(UNKNOWN),
                                        reach.verdict == VERIFIED and not falsified)
    dynamics = spec.dynamics
    discrete = (f"the plant file's {dynamics.integrator} integrator with {dynamics.substeps} substep(s) per period "
                f"{spec.dt:g} s (not the ODE)" if dynamics.kind == "ode" else
                f"the plant file's {dynamics.kind} dynamics (exact ZOH discretisation)" if dynamics.continuous else
                f"the plant file's discrete-time {dynamics.kind} dynamics")
    maps = spec.controller
    certificate = ForeignCertificate(
        format=FOREIGN_CERTIFICATE_FORMAT, generator=f"scpo-ctrl {__version__}", plant=spec.name,
        plant_file=str(r.plant), plant_sha256=spec.text_sha256, controller=str(r.controller),
        controller_sha256=network.sha256, network=network.describe(), onnx_ops=tuple(sorted(set(network.ops))),
        input_map=tuple(maps.input_texts) if maps else (), output_map=tuple(maps.output_texts) if maps else (),
        sampling=(f"rows are checked at the sampling instants t = k dt, k = 0..{spec.safety.horizon}, dt = {spec.dt:g} "
                  f"s, not between them: a property stated in continuous time is claimed here only at those "
                  f"instants"),
        discrete_map=discrete,
        initial_box={name: (float(lo), float(hi)) for name, (lo, hi) in zip(spec.state_names, box)},
        horizon_steps=spec.safety.horizon, summary=summary, checks=checks, exit_code=1 if falsified else 0)
    certificate.write(out)
    log.info("wrote %s", out)
    return ForeignVerifyResult(certificate, out, certificate.exit_code)
