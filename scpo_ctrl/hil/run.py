"""``scpo-ctrl hil RUN_DIR``: the exported C on a target, in closed loop with the float64 plant.

Per step k of an episode: measure ``y_k = x_k + noise`` (float32 on the wire), send it, receive
``u_k`` from the target, compare it with the float64 reference law on the same ``y_k`` (within
the per-state float32 error bound of the export; watchdog replies with the backup on the last
state the target accepted), then step the plant ``x_{k+1} = f(x_k, u_k)`` (CasADi, float64).
Writes ``RUN_DIR/hil/<target>/report.json``, ``traces.png``, ``latency.png`` and the summary of
each target into ``RUN_DIR/hil/report.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..backup.kinds import backup_recorded
from ..config.plant_spec import load_plant_spec
from ..errors import UsageError
from ..export.equivalence import SWITCHING_BAND
from ..export.error_bound import float_error_bound
from ..export.law import BRANCHES, DeployedLaw, deployed_input_limits, evaluate, law_from_run, lqr_fallback
from ..export.mpc_bundle import MpcController, artefacts_of, simulate_with_mpc
from ..plant.model import build_plant, evaluate_rows
from ..run_files import (ExportManifest, HilEquivalence, HilIndex, HilReport, HilSafety, HilVerdict, Latency,
                         RunFileError)
from ..sim.closed_loop import simulate
from ..sim.initial_states import initial_box, validation_states
from .deviation import propagated_bound
from .faults import FaultInjector, parse_faults
from .harness import Session
from .targets import open_target, parse_target

log = logging.getLogger(__name__)

REPORT_FORMAT = "scpo-hil/1"
#: seconds the harness waits for a reply before asking again, beyond the watchdog (real time) or at all
#: (simulated time, where it only guards against a stalled target: the deadline is a frame)
REPLY_GRACE_S = {"sil": 0.5, "qemu": 5.0, "serial": 0.5}
SIMULATED_REPLY_TIMEOUT_S = {"sil": 2.0, "qemu": 10.0}


@dataclass(frozen=True)
class HilRequest:
    """What the command line asked for.

    Attributes
    ----------
    run_dir : str
    target : str
        ``sil``, ``qemu`` or ``serial:PORT``.
    steps : int or None
        Steps per episode (default: the plant's safety horizon).
    episodes : int
        Initial states: the plant's validation set first, then seeded uniform draws from its box.
    faults : str
        ``--faults`` text (see :mod:`.faults`).
    seed : int
    watchdog_ms : float or None
        Target watchdog deadline [ms] (default dt / 2).
    realtime : bool
        Run the target's watchdog on its own clock (always for ``serial``); otherwise the run advances on
        simulated time and the harness ends each step's deadline with a DEADLINE frame.
    plots : bool
    """

    run_dir: str
    target: str = "sil"
    steps: int | None = None
    episodes: int = 8
    faults: str = ""
    seed: int = 0
    watchdog_ms: float | None = None
    plots: bool = True
    realtime: bool = False


@dataclass(frozen=True)
class HilResult:
    """The report, where it was written (``RUN_DIR/hil/<target>/report.json``) and whether every check passed."""

    report: HilReport
    path: Path
    passed: bool


@dataclass(frozen=True)
class RunSetup:
    """What one HIL run was: the request, the target (its description and hello), the law on it and the plant,
    the faults, the watchdog deadline [s], steps per episode, the initial states ``(episodes, nx)`` and
    whether the watchdog ran in real time."""

    request: HilRequest
    target: object
    description: str
    law: DeployedLaw
    law_note: str
    model: object
    hello: object
    faults: object
    injector: FaultInjector
    watchdog_s: float
    steps: int
    x0: np.ndarray
    realtime: bool


@dataclass(frozen=True)
class EpisodeTrace:
    """One episode: true states ``x (H+1, nx)``, sent states ``y (H, nx)`` (float32 values), commands
    ``u (H, nu)``, status/branch ``(H,)``, round trips [s] and compute ticks ``(H,)``, reference
    ``u_ref (H, nu)`` and tolerance ``tol (H, nu)``, and the uplink fault per step ``(H,)`` ("", "lost", "delayed")."""

    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    status: np.ndarray
    branch: np.ndarray
    reason: np.ndarray
    round_trip: np.ndarray
    compute_ticks: np.ndarray
    repeats: np.ndarray
    host_turnaround: np.ndarray
    uplink_fault: np.ndarray
    u_ref: np.ndarray
    tol: np.ndarray
    branch_mismatch: np.ndarray
    stats: dict


def initial_states(spec, episodes: int, seed: int) -> np.ndarray:
    """``(episodes, nx)``: the plant's validation set first (the states ``adapt`` certified the policy
    on, in their order), then, beyond its size, uniform draws from the initial-state box (seeded)."""
    validation = validation_states(spec.safety.initial_states)
    chosen = list(validation[:episodes])
    box = initial_box(spec.safety.initial_states)
    rng = np.random.default_rng(seed)
    while len(chosen) < episodes:
        chosen.append(box[:, 0] + (box[:, 1] - box[:, 0]) * rng.random(len(box)))
    return np.array(chosen, dtype=float).reshape(episodes, len(box))


def backup_reference(law: DeployedLaw, x: np.ndarray) -> tuple:
    """The saturated backup on ``x (nx,)`` in float64 and a float32 tolerance ``(nu,)``.

    Tolerance: the standard dot-product bound gamma_{nx+1} (|u_eq| + sum_j |K_ij| |dx_j|) with
    gamma_n = n u / (1 - n u), u = 2^-24, doubled for the rounding of x_eq and K to float32, plus one
    rounding of the result (the saturation limits are the deployed float32 ones).
    """
    lo, hi = deployed_input_limits(law, "float32")
    dx = x - law.x_eq
    u = np.clip(law.u_eq - law.K @ dx, lo, hi)
    unit = 2.0 ** -24
    n = law.nx + 2
    gamma = n * unit / (1 - n * unit)
    magnitude = np.abs(law.u_eq) + np.abs(law.K) @ (np.abs(dx) + np.abs(x) + np.abs(law.x_eq))
    return u, 2 * gamma * magnitude + unit * np.abs(u) + 2.0 ** -149


def run_hil(request: HilRequest) -> HilResult:
    """Run the episodes on the target; write the report and plots; see the module docstring."""
    target = parse_target(request.target)
    faults = parse_faults(request.faults)
    run_dir = Path(request.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    export_dir = run_dir / "export"
    manifest_path = run_dir / ExportManifest.RELATIVE_PATH
    if not manifest_path.is_file():
        raise UsageError(f"{export_dir}: no export; run `scpo-ctrl export {run_dir}` first")
    manifest = ExportManifest.read(manifest_path)
    if manifest.precision != "float32":
        raise UsageError("hil needs a float32 export (the frames carry float32)")
    exported = backup_recorded(manifest.backup)
    if not exported.cortex_m4_carries_certified_law and target.kind != "sil" and manifest.target != "cortex-m4":
        raise UsageError(f"--target {request.target}: {run_dir}'s policy runs on an MPC backup, whose acados "
                         "solver exists for the host only (x86-64 libraries): use --target sil, or export with "
                         "--target cortex-m4 for the LQR-fallback build (not the law SCPO certified)")
    if target.kind == "qemu" and manifest.target != "cortex-m4":
        raise UsageError(f"--target qemu needs `scpo-ctrl export {run_dir} --target cortex-m4`")
    if request.episodes < 1 or (request.steps is not None and request.steps < 1):
        raise UsageError("--episodes and --steps must be >= 1")
    law = law_from_run(run_dir)
    spec = load_plant_spec(run_dir / "plant.yaml")
    model = build_plant(spec)
    if law.backup != exported.type:
        raise UsageError(f"{export_dir}: the export has an {exported.type.upper()} backup but the policy runs on an "
                         f"{law.backup.upper()} backup: export again")
    controller = None
    law_note = exported.deployed_law_description
    if target.kind != "sil" and not exported.cortex_m4_carries_certified_law:
        law = lqr_fallback(law)
        law_note = ("the Cortex-M4 build's LQR fallback of an MPC-backed run: the network on the LQR instead "
                    "of the MPC, NOT the law SCPO certified")
    elif not exported.in_closed_form:
        controller = MpcController(artefacts_of(export_dir, manifest.to_json()).controller_library, law.nx,
                                   law.nu, law.u_eq)
    steps = request.steps or spec.safety.horizon
    watchdog_s = (request.watchdog_ms / 1e3) if request.watchdog_ms else law.dt / 2
    if not 0 < watchdog_s < 10:
        raise UsageError("--watchdog-ms must be in (0, 10000)")
    x0 = initial_states(spec, request.episodes, request.seed)
    box = initial_box(spec.safety.initial_states)
    half_width = (box[:, 1] - box[:, 0]) / 2
    injector = FaultInjector(faults, request.seed)
    out_dir = run_dir / "hil" / target.label
    realtime = request.realtime or target.kind == "serial"
    reply_timeout = reply_timeout_s(target.kind, watchdog_s, realtime)

    traces = []
    started = time.perf_counter()
    mpc_u_init = law.u_eq if controller is not None else None
    with open_target(target, export_dir, law.name, out_dir / "build", mpc_u_init) as (transport, description):
        session = Session(transport, law.nx, law.nu, injector, reply_timeout)
        hello = None
        for episode, start in enumerate(x0):
            hello = session.configure(watchdog_s, realtime)
            if (hello.nx, hello.nu, hello.real_bytes) != (law.nx, law.nu, 4):
                raise UsageError(f"the target runs a different law (nx={hello.nx}, nu={hello.nu}, "
                                 f"real={hello.real_bytes} bytes); expected nx={law.nx}, nu={law.nu}, float32")
            traces.append(_episode(session, law, model, start, steps, injector, half_width, controller))
            log.info("episode %d/%d done", episode + 1, len(x0))
        link = dict(session.counts)
        wire = {"wire_crc_errors": session.wire.crc_errors, "wire_length_errors": session.wire.length_errors,
                "wire_header_errors": session.wire.header_errors,
                "harness_rejected_frames": session.reader.rejected}
    seconds = time.perf_counter() - started

    python = _python_closed_loop(model, law, x0, steps, None if controller is None else controller.library)
    setup = RunSetup(request=request, target=target, description=description, law=law, law_note=law_note,
                     model=model, hello=hello, faults=faults, injector=injector, watchdog_s=watchdog_s, steps=steps,
                     x0=x0, realtime=realtime)
    report = _report(setup, traces, python, link, wire, seconds)
    path = run_dir / HilReport.relative_path(target.label)
    report.write(path)
    if request.plots:
        from .plots import plot_hil

        plots = plot_hil(out_dir, law, traces, python, report)
        report = replace(report, plots=tuple(str(p.relative_to(run_dir)) for p in plots))
        report.write(path)
    _merge_summary(run_dir / HilIndex.RELATIVE_PATH, target.label, report)
    return HilResult(report=report, path=path, passed=report.summary.passed)


def reply_timeout_s(kind: str, watchdog_s: float, realtime: bool) -> float:
    """Seconds the harness waits for a step's reply before it asks again (REPEAT).

    Real time: past the watchdog (a lost STATE frame is answered by it) plus a grace. Simulated time: a
    liveness guard only, since the deadline is a frame; asking early is harmless either way.
    """
    if realtime:
        return watchdog_s + REPLY_GRACE_S[kind]
    return SIMULATED_REPLY_TIMEOUT_S[kind]


def watchdog_accounting(watchdog: np.ndarray, lost: np.ndarray, delayed: np.ndarray, realtime: bool,
                        target_late_frames: int) -> dict:
    """Put each watchdog reply down to its cause: an injected fault, a late host, or nothing known.

    Parameters
    ----------
    watchdog, lost, delayed : ndarray of bool, shape (steps,)
        Per step: a WATCHDOG reply; an injected lost/corrupted STATE frame; an injected delay.
    realtime : bool
        In simulated time the host cannot be late (the deadline is its own frame), so every watchdog
        reply without an injected fault is unexplained.
    target_late_frames : int
        The target's count of STATE frames that arrived after their step's watchdog answer.

    Returns
    -------
    dict
        ``late_host_steps`` (real time: watchdog replies without an injected fault whose STATE frame the
        target saw arrive late) and ``unexplained`` (the rest of those: a fault of the target or link).
    """
    without_fault = int(np.sum(watchdog & ~lost & ~delayed))
    late_host = 0
    if realtime:
        confirmed = target_late_frames - int(np.sum(watchdog & delayed))
        late_host = min(without_fault, max(confirmed, 0))
    return {"without_injected_fault": without_fault, "late_host_steps": late_host,
            "unexplained": without_fault - late_host}


def _python_closed_loop(model, law: DeployedLaw, x0: np.ndarray, steps: int, controller_library=None):
    """The float64 closed loop of the same law from ``x0`` (no noise, no faults): states ``x (E, H+1, nx)``
    and inputs ``u (E, H+1, nu)``. With an MPC backup, the export's MPC (one solver per episode, warm-started
    as on the target) gives the backup's inputs to the float64 reference law."""
    if controller_library is None:
        return simulate(model, lambda X: evaluate(law, X).u, x0, steps, law.P, law.c, law.x_eq)
    return simulate_with_mpc(model, law, controller_library, None, x0, steps)


def mpc_backup_reference(law: DeployedLaw, u_backup: np.ndarray) -> tuple:
    """The watchdog's answer of an MPC-backed target: the saturated MPC input ``(nu,)`` in float64 and its
    float32 tolerance (the rounding of the MPC's double input to float32; the limits are the deployed ones)."""
    lo, hi = deployed_input_limits(law, "float32")
    u = np.where(np.isnan(u_backup), law.u_eq, u_backup)  # the backup step's answer to a failed solve
    return np.clip(u, lo, hi), 2.0 ** -24 * np.abs(u) + 2.0 ** -149


def _episode(session: Session, law: DeployedLaw, model, x_start: np.ndarray, steps: int,
             injector: FaultInjector, half_width: np.ndarray, controller=None) -> EpisodeTrace:
    x = np.empty((steps + 1, law.nx))
    x[0] = x_start
    y = np.empty((steps, law.nx))
    rows = {key: [] for key in ("u", "status", "branch", "reason", "round_trip", "ticks", "repeats", "faulted",
                                "turnaround")}
    accepted = []  # per step: the state the target last accepted before answering (for watchdog replies)
    last_accepted = law.x_eq.astype(np.float32).astype(float)  # the firmware holds x_eq in float32
    for k in range(steps):
        y[k] = (x[k] + injector.noise(half_width)).astype(np.float32)
        reply, fault = session.step(k + 1, y[k])
        if reply.status == 0:
            last_accepted = y[k].copy()
        accepted.append(last_accepted.copy())
        for key, value in (("u", reply.u), ("status", reply.status), ("branch", reply.branch),
                           ("reason", reply.reason), ("round_trip", reply.round_trip_s),
                           ("ticks", reply.compute_ticks), ("repeats", reply.repeats), ("faulted", fault),
                           ("turnaround", reply.host_turnaround_s)):
            rows[key].append(value)
        x[k + 1] = np.asarray(model.f(x[k], reply.u), dtype=float).ravel()
    stats = session.stats()
    u = np.array(rows["u"]).reshape(steps, law.nu)
    status = np.array(rows["status"])
    watchdog = status != 0
    U_backup = None
    if controller is not None:
        # the target's MPC solved at y_k, or at the last accepted state on a watchdog step, in this order
        solved = np.where(watchdog[:, None], np.array(accepted), y)
        U_backup = controller.sequence(solved).u
    reference = evaluate(law, y, U_backup)
    tol = float_error_bound(law, y, "float32", U_backup=U_backup)
    u_ref = reference.u.copy()
    for k in np.flatnonzero(watchdog):
        if controller is None:
            u_ref[k], tol[k] = backup_reference(law, accepted[k])
        else:
            u_ref[k], tol[k] = mpc_backup_reference(law, U_backup[k])
    branch = np.array(rows["branch"])
    near = np.zeros(steps, dtype=bool)
    for level in (1.0, law.gate_ratio):
        near |= np.abs(reference.level / level - 1.0) <= SWITCHING_BAND["float32"]
    mismatch = (~watchdog) & (branch != reference.branch) & ~near
    return EpisodeTrace(x=x, y=y, u=u, status=status, branch=branch, reason=np.array(rows["reason"]),
                        round_trip=np.array(rows["round_trip"]), compute_ticks=np.array(rows["ticks"]),
                        repeats=np.array(rows["repeats"]), host_turnaround=np.array(rows["turnaround"]),
                        uplink_fault=np.array(rows["faulted"]),
                        u_ref=u_ref, tol=tol, branch_mismatch=mismatch, stats=stats)


def _report(setup: RunSetup, traces: list, python, link: dict, wire: dict, seconds: float) -> HilReport:
    """The report of a run from its episodes' traces, the Python closed loop, the harness's frame counts and the
    wall time [s]."""
    law, model, hello, faults, injector = setup.law, setup.model, setup.hello, setup.faults, setup.injector
    watchdog_s, realtime = setup.watchdog_s, setup.realtime
    H = setup.steps
    X = np.stack([t.x for t in traces])                     # (E, H+1, nx)
    U = np.stack([t.u for t in traces])                     # (E, H, nu)
    status = np.concatenate([t.status for t in traces])
    round_trip = np.concatenate([t.round_trip for t in traces])
    ticks = np.concatenate([t.compute_ticks for t in traces])
    error = np.concatenate([np.abs(t.u - t.u_ref) for t in traces])
    tol = np.concatenate([t.tol for t in traces])
    ratio = error / np.maximum(tol, np.finfo(float).tiny)
    fault = np.concatenate([t.uplink_fault for t in traces])
    lost, delayed = fault == "lost", fault == "delayed"
    # safety rows on every visited state (with the command applied there; the last state with u_{H-1})
    flat_x = X.reshape(-1, law.nx)
    flat_u = np.concatenate([U, U[:, -1:]], axis=1).reshape(-1, law.nu)
    G = evaluate_rows(model.g, flat_x, flat_u)
    G = np.where(np.isfinite(G), G, np.inf)
    worst_rows = G.max(axis=0) if G.shape[1] else np.zeros(0)
    violating_steps = int(np.sum(np.any(G > 0, axis=1))) if G.shape[1] else 0
    finite = bool(np.all(np.isfinite(X)))
    deviation = np.abs(X - python.x)                         # (E, H+1, nx)
    trajectory = {"max_abs_state_deviation": deviation.max(axis=(0, 1)).tolist(),
                  "note": "HIL (float32 C, faults, noise) vs the float64 Python closed loop of the same law "
                  "from the same x0, no noise, no faults"}
    if not law.backup_kind.in_closed_form:
        trajectory["propagated_bound"] = ("not computed for an MPC backup (the first-order propagation needs the "
                                          "backup's Jacobian in closed form)")
    elif not faults.any and not np.any(status != 0):
        bound = propagated_bound(law, model, python.x, python.u)
        ratio_x = deviation / np.maximum(bound, np.finfo(float).tiny)
        within = bool(np.all((deviation <= bound) | (deviation == 0)))
        trajectory.update(propagated_bound_max=bound.max(axis=(0, 1)).tolist(),
                          worst_deviation_over_bound=float(ratio_x.max()), within_propagated_bound=within,
                          bound="first-order propagation of the export's float32 bound and the float32 "
                          "rounding of the sent state along the Python trajectory (scpo_ctrl/hil/deviation.py)")
    ok = status == 0
    watchdog = ~ok
    firmware = {key: int(sum(t.stats[key] for t in traces)) for key in traces[0].stats}
    branch_counts = {name: int(np.sum(np.concatenate([t.branch for t in traces])[ok] == code))
                     for code, name in enumerate(BRANCHES)}
    branch_counts["watchdog_backup"] = int(np.sum(watchdog))
    per_tick = hello.instructions_per_tick if hello else None
    compute = {"clock_hz": hello.clock_hz, "ticks_p50": _q(ticks[ok], 50), "ticks_max": _max(ticks[ok])}
    if per_tick is not None:
        instructions = ticks[ok] * per_tick
        compute.update(unit="instructions (QEMU -icount shift=0: an instruction count, not cycles of a real chip)",
                       instructions_per_tick=per_tick, instructions_per_step_p50=_q(instructions, 50),
                       instructions_per_step_mean=float(np.mean(instructions)) if instructions.size else None,
                       instructions_per_step_max=_max(instructions))
    else:
        seconds_per_step = ticks[ok] / hello.clock_hz
        compute.update(unit="seconds (host clock_gettime around the step)",
                       seconds_p50=_q(seconds_per_step, 50), seconds_p99=_q(seconds_per_step, 99),
                       seconds_max=_max(seconds_per_step))
    deadline_misses = int(np.sum(round_trip > law.dt))
    equivalence_ok = bool(np.all(ratio <= 1.0)) and not any(t.branch_mismatch.any() for t in traces)
    corrupted_applied = int(link["corrupted_frames_accepted"])
    lost_frames_answered_ok = int(np.sum(lost & ok))
    turnaround = np.concatenate([t.host_turnaround for t in traces])
    causes = watchdog_accounting(watchdog, lost, delayed, realtime, firmware.get("late_frames", 0))
    safety_held = violating_steps == 0 and finite
    checks = {
        "equivalence_within_tolerance": equivalence_ok,
        "zero_constraint_violations": safety_held,
        "no_corrupted_command_applied": corrupted_applied == 0 and lost_frames_answered_ok == 0,
        "every_lost_state_frame_answered_by_the_watchdog": int(np.sum(lost)) == int(np.sum(watchdog & lost)),
        "no_watchdog_without_a_fault": causes["unexplained"] == 0,
    }
    if "within_propagated_bound" in trajectory:
        checks["trajectory_within_propagated_float32_bound"] = trajectory["within_propagated_bound"]
    if realtime:
        # the round trip is mostly the host's (pipe, scheduler, harness): only the target's own compute is
        # judged; in simulated time no wall-clock figure is, the plant waits for the target
        checks["target_compute_within_the_deadline"] = bool(np.all(ticks[ok] <= watchdog_s * hello.clock_hz))
    passed = all(checks.values())
    worst = int(np.argmax(ratio.max(axis=1))) if ratio.size else 0
    request = setup.request
    return HilReport(
        format=REPORT_FORMAT, plant=law.name, target=request.target, description=setup.description,
        episodes=len(traces), steps_per_episode=H, seed=request.seed, dt_seconds=law.dt,
        watchdog_seconds=watchdog_s, timing="real time" if realtime else "simulated time",
        watchdog_note=WATCHDOG_NOTE["real time" if realtime else "simulated time"], faults=faults.to_dict(),
        wall_seconds=seconds,
        steps_per_second=status.size / seconds,
        initial_states=setup.x0.tolist(),
        latency_seconds=Latency(p50=_q(round_trip, 50), p99=_q(round_trip, 99), max=_max(round_trip),
                                p50_ok_replies=_q(round_trip[ok], 50), p99_ok_replies=_q(round_trip[ok], 99)),
        compute=compute,
        deadline_misses=deadline_misses,
        deadline_note="round trip > dt, wall clock, reported and not judged: mostly the host's time (under "
                      "QEMU the guest runs in virtual icount time)",
        equivalence=HilEquivalence(worst_error=float(error.max()), worst_bound_ratio=float(ratio.max()),
                                   worst_step=int(worst), tolerance="per-step float32 forward error bound of the "
                                   "export (watchdog steps: the backup's dot-product bound)",
                                   branch_mismatches=int(sum(t.branch_mismatch.sum() for t in traces))),
        safety=HilSafety(row_names=tuple(row.name for row in model.rows), worst_per_row=tuple(worst_rows.tolist()),
                         violating_steps=violating_steps, all_states_finite=finite, safety_held=safety_held),
        branches=branch_counts,
        trajectory_vs_python=trajectory,
        frames={"injected": dict(injector.counts), "target": firmware, "harness": {**link, **wire},
                "steps_with_lost_state_frame": int(np.sum(lost)),
                "steps_with_late_state_frame": int(np.sum(delayed)),
                "late_state_frames_answered_by_the_watchdog": int(np.sum(delayed & watchdog)),
                "watchdog_replies": int(np.sum(watchdog)),
                "late_host_steps": causes["late_host_steps"],
                "late_state_frames_seen_by_the_target": int(firmware.get("late_frames", 0)),
                "host_turnaround_max_seconds": _max(turnaround),
                "lost_state_frames_answered_ok": lost_frames_answered_ok,
                "watchdog_replies_without_uplink_fault": causes["without_injected_fault"],
                "watchdog_replies_unexplained": causes["unexplained"],
                "repeat_requests": int(sum(t.repeats.sum() for t in traces))},
        hello=None if hello is None else hello.__dict__,
        summary=HilVerdict(checks=checks, passed=passed, safety_held=safety_held),
        law=setup.law_note,
    )


WATCHDOG_NOTE = {
    "simulated time": "lockstep on simulated time: the target's watchdog is not on its clock; the harness ends "
                      "each step with a DEADLINE frame, after the STATE frame unless that was lost or delayed by "
                      ">= the watchdog, so host load cannot cause a watchdog reply",
    "real time": "the target's watchdog runs on its clock, watchdog_seconds after its last answer (after a "
                 "watchdog answer, from the host's next frame); a watchdog reply without an injected fault "
                 "whose STATE frame the target then saw arrive is a late host (frames.late_host_steps), not a "
                 "target fault",
}


def _q(values: np.ndarray, q: float):
    return float(np.percentile(values, q)) if np.size(values) else None


def _max(values: np.ndarray):
    return float(np.max(values)) if np.size(values) else None


def _merge_summary(path: Path, label: str, report: HilReport) -> None:
    """Put ``report``'s summary under ``label`` in ``hil/report.json`` (the other targets' entries kept; an
    unreadable index is started afresh)."""
    index = HilIndex(format=REPORT_FORMAT, targets={})
    if path.is_file():
        try:
            index = HilIndex.read(path)
        except RunFileError as exc:
            log.warning("%s; starting it afresh", exc)
    index.with_target(label, report).write(path)
