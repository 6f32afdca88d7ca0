"""``scpo-ctrl adapt``: run SCPO (or a baseline) on a plant and keep the run directory consistent.

Run directory (``runs/<plant>/`` by default)::

    plant.yaml            the input file, byte for byte
    config.resolved.yaml  every setting actually used
    policy.npz            the last accepted iterate (for SCPO: safe on the validation set)
    checkpoint.npz        the optimizer state after the last finished iteration (for --resume)
    training.jsonl        one line per iteration
    adaptation.json       the summary, written when the run ends
    plots/*.png

Every file is written atomically; ``training.jsonl`` is appended line by
line and trimmed to the checkpoint on resume. SIGINT and SIGTERM stop the run
after the iteration in progress, with everything on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import yaml

from .backup.kinds import backup_for
from .config.plant_spec import PlantSpec, load_plant_spec, require_backup
from .errors import SpecError, UsageError
from .execution import Executor, executor_for
from .files import atomic_write, atomic_write_text, json_safe
from .jit import compiler_available
from .problem import build_problem
from .run_files import AdaptationSummary, VerificationLoop
from .scpo.bank import DistributedBank, DistributedCostLoops, check_workers_rebuild, cost_recipe, rollout_recipe
from .scpo.control import ControlAdaptation, residual_policy
from .scpo.optimizer import METHODS, OptimizerSettings, OptimizerState, initial_state, step
from .verification_loop import LoopSettings, reach_cells_per_axis, run_round

log = logging.getLogger(__name__)

STALL_PATIENCE = 40
OVERRIDABLE = {
    "scpo.iterations": int, "scpo.step_size": float, "scpo.trust_radius": float, "scpo.seed": int,
    "scpo.probe_norm": float, "scpo.gradient_pieces": int, "scpo.random_pairs": int,
    "scpo.curvature_factor": float, "scpo.curvature_decay": float, "scpo.max_retries": int,
    "scpo.penalty_weight": float,
    "scpo.dual_step": float, "scpo.patience": int, "policy.hidden": str,
}


@dataclass(frozen=True)
class AdaptRequest:
    """What the command line (or :func:`scpo_ctrl.adapt`) asked for.

    ``plant`` is a plant file's path or a validated :class:`PlantSpec` (whose text becomes the run's
    ``plant.yaml``). The defaults here are the command line's defaults.
    """

    plant: str | PlantSpec
    out: str | None = None
    iterations: int | None = None
    seed: int | None = None
    method: str = "scpo"
    overrides: tuple = ()
    resume: bool = False
    force: bool = False
    progress: bool = True
    verify_loop: bool = True
    ray: str | None = None
    plots: bool = True


@dataclass(frozen=True)
class AdaptResult:
    """Where the run went and its summary (the content of ``adaptation.json``).

    Attributes
    ----------
    run_dir : Path
    summary : AdaptationSummary
    interrupted : bool
        Stopped by SIGINT/SIGTERM: the run continues with ``resume``.
    """

    run_dir: Path
    summary: AdaptationSummary
    interrupted: bool


def resolve_settings(spec: PlantSpec, request: AdaptRequest) -> tuple[OptimizerSettings, tuple, int]:
    """Optimizer settings, hidden widths and stall patience: the optimizer's defaults, then the file's values,
    then --set, then flags."""
    values = {f"scpo.{f.name}": getattr(spec.scpo, f.name) for f in fields(spec.scpo)
              if getattr(spec.scpo, f.name) is not None}
    values.update({"scpo.patience": STALL_PATIENCE,
                   "policy.hidden": ",".join(str(h) for h in spec.policy.hidden)})
    for item in request.overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise UsageError(f"--set {item!r}: expected key=value")
        if key not in OVERRIDABLE:
            raise UsageError(f"--set {key!r}: unknown key; valid keys: {', '.join(sorted(OVERRIDABLE))}")
        kind = OVERRIDABLE[key]
        try:
            value = kind(text)
        except ValueError:
            raise UsageError(f"--set {key}={text!r}: expected {kind.__name__}") from None
        if kind is float and not np.isfinite(value):
            raise UsageError(f"--set {key}={text!r}: expected a finite number")
        values[key] = value
    if request.iterations is not None:
        values["scpo.iterations"] = request.iterations
    if request.seed is not None:
        values["scpo.seed"] = request.seed
    try:
        hidden = tuple(int(h) for h in str(values.pop("policy.hidden")).split(","))
    except ValueError:
        raise UsageError("--set policy.hidden: expected comma-separated widths, e.g. 32,32") from None
    if not hidden or min(hidden) < 1:
        raise UsageError("--set policy.hidden: widths must be >= 1")
    patience = int(values.pop("scpo.patience"))
    known = {f.name for f in fields(OptimizerSettings)}
    kwargs = {key.split(".", 1)[1]: value for key, value in values.items() if key.split(".", 1)[1] in known}
    if request.method not in METHODS:
        raise UsageError(f"--method {request.method!r}: valid methods: {', '.join(METHODS)}")
    settings = OptimizerSettings(method=request.method, **kwargs)
    for name in ("iterations", "gradient_pieces", "random_pairs", "max_retries"):
        if getattr(settings, name) < 0:
            raise UsageError(f"scpo.{name} must be >= 0")
    for name in ("step_size", "trust_radius"):
        if getattr(settings, name) <= 0:
            raise UsageError(f"scpo.{name} must be > 0")
    if not 0.0 < settings.curvature_decay <= 1.0:
        raise UsageError("scpo.curvature_decay must be in (0, 1]")
    return settings, hidden, patience


def run_adapt(request: AdaptRequest) -> AdaptResult:
    """Run (or resume) an adaptation; see the module docstring for what lands on disk."""
    spec = request.plant if isinstance(request.plant, PlantSpec) else load_plant_spec(request.plant)
    require_backup(spec)
    settings, hidden, patience = resolve_settings(spec, request)
    run_dir = Path(request.out) if request.out else Path("runs") / spec.name
    config = _resolved_config(spec, settings, hidden, patience, request.verify_loop)
    backup = backup_for(spec.backup.type, spec.backup.solver)
    if not backup.in_closed_form and settings.method in ("penalty", "lagrangian"):
        raise UsageError(f"--method {settings.method} needs gradients of the safety rows through the rollout, which "
                         "an MPC backup does not provide; use scpo or unconstrained")
    _check_directory(run_dir, request, config)
    problem = build_problem(spec)
    safety = _backup_safety(problem)
    if safety is not None:
        raise SpecError(spec.source, "safety.initial_states",
                        f"the backup itself is unsafe from the validation set ({safety}); SCPO cannot start feasible")
    policy = residual_policy(problem, hidden, spec.policy.activation)
    progress = _Progress(settings.iterations, enabled=request.progress)
    executor = executor_for(request.ray)
    try:
        return _adapt(request, spec, settings, hidden, patience, run_dir, config, problem, policy, executor, progress)
    finally:
        executor.close()


def _adapt(request: AdaptRequest, spec: PlantSpec, settings: OptimizerSettings, hidden: tuple, patience: int,
           run_dir: Path, config: dict, problem, policy, executor: Executor, progress: _Progress) -> AdaptResult:
    jit = compiler_available()
    bank = cost_loops = None
    if request.ray is not None:
        bank = DistributedBank(executor, rollout_recipe(spec, hidden, spec.policy.activation, jit), progress.tasks)
        # the closed-loop cost's loops (loss, gradient, line search) when they are MPC closed loops
        cost_loops = DistributedCostLoops(executor, cost_recipe(spec, hidden, spec.policy.activation, jit),
                                          progress.tasks)
    adaptation = ControlAdaptation(problem, policy, jit=jit, bank=bank, cost_loops=cost_loops)
    if bank is not None:
        check_workers_rebuild(adaptation.engine, bank, problem.x0[:4], adaptation.dimension)
    config = {**config, "execution": executor.description}
    backup_marks = problem.backup_kind.policy_marks(problem.mpc)

    jsonl = run_dir / "training.jsonl"
    if not request.resume:
        _clear_directory(run_dir)
    if request.resume:
        state, records = _load_checkpoint(run_dir, settings, jsonl)
        log.info("resuming at iteration %d", state.iteration)
        _record_execution(run_dir, config["execution"])
    else:
        plant_bytes = (spec.text.encode("utf-8") if isinstance(request.plant, PlantSpec)
                       else Path(request.plant).read_bytes())
        atomic_write(run_dir / "plant.yaml", lambda handle: handle.write(plant_bytes))
        atomic_write_text(run_dir / "config.resolved.yaml", yaml.safe_dump(config, sort_keys=False))
        try:
            state = initial_state(adaptation, policy.initial_theta(settings.seed), settings)
        except ValueError as exc:
            raise SpecError(spec.source, "", str(exc)) from None
        records = []
        atomic_write_text(jsonl, "")
        policy.save(run_dir / "policy.npz", state.theta, {"iteration": 0, "method": settings.method, **backup_marks})
        _save_checkpoint(run_dir, state, records_loss0=state.loss, best=state.loss, stall=0,
                         validation_states=adaptation.x0, rounds=0)
    loss0, best, stall, validation_states, rounds = _progress_marks(run_dir)
    if validation_states.shape[0] != adaptation.n_states:
        adaptation.set_states(validation_states)
    samples = problem.backup_kind.loop_samples
    loop = LoopSettings(reach_cells_per_axis=reach_cells_per_axis(spec.nx),
                        **({} if samples is None else {"samples": samples}))
    looping = request.verify_loop and settings.method == "scpo"
    round_records = [r["verification_round"] for r in records if "verification_round" in r]

    stop = _StopFlag()
    start = time.perf_counter()
    reason = "iterations done"
    with stop.installed():
        while state.iteration < settings.iterations:
            state, record = step(adaptation, state, settings)
            line = record.to_dict()
            line["g_max_groups"] = dict(zip(adaptation.group_names, record.g_max_groups))
            line["l"] = dict(zip(adaptation.group_names, record.l))
            if state.loss < best * (1 - 1e-6):
                best, stall = state.loss, 0
            else:
                stall += 1
            stalled = settings.method == "scpo" and patience and stall >= patience
            last = state.iteration >= settings.iterations
            if looping and (state.iteration % loop.every == 0 or stalled or last):
                state, round_record = _verification_round(adaptation, state, settings, loop, rounds,
                                                          closing=bool(stalled or last))
                rounds += 1
                line["verification_round"] = json_safe(round_record.to_dict())
                round_records.append(line["verification_round"])
                line["loss_after_round"] = state.loss
                if round_record.added_violators or round_record.residual_scale < 1.0:
                    # a row broke on the grown set (the iterate may have retreated): SCPO goes on from here.
                    # States that break nothing (unproven cells' worst) leave a stalled iterate stalled, and so
                    # do states the backup itself cannot save (never added: they would come back every round).
                    best, stall, stalled = state.loss, 0, False
            _append_line(jsonl, json.dumps(json_safe(line)))
            if record.accepted or "verification_round" in line:
                policy.save(run_dir / "policy.npz", state.theta,
                            {"iteration": state.iteration, "method": settings.method, **backup_marks})
            _save_checkpoint(run_dir, state, records_loss0=loss0, best=best, stall=stall,
                             validation_states=adaptation.x0, rounds=rounds)
            records.append(line)
            progress.update(state.iteration, record)
            if stop.requested:
                reason = f"interrupted by {stop.requested}"
                break
            if getattr(executor, "lost", False):
                reason = "interrupted: the Ray cluster went away (this iteration finished here); --resume continues"
                break
            if stalled:
                reason = f"stalled: no loss decrease for {patience} iterations"
                break
    progress.close()
    interrupted = stop.requested is not None or reason.startswith("interrupted")
    summary = _summary(spec, settings, adaptation, records, loss0, state, reason, time.perf_counter() - start, run_dir,
                       _loop_summary(looping, loop, round_records, adaptation))
    summary.write(run_dir / AdaptationSummary.RELATIVE_PATH)
    if not interrupted and request.plots:
        from .plots import plot_run

        plot_run(run_dir, problem, policy, state.theta, records, adaptation.group_names)
    return AdaptResult(run_dir, summary, interrupted)


def _verification_round(adaptation, state: OptimizerState, settings: OptimizerSettings, loop: LoopSettings,
                        rounds: int, closing: bool):
    """One round of the verification loop (``closing``: the last, or on a stall: searched again after a
    retreat); the optimizer state continues on the (possibly) enlarged set."""
    round_record, theta = run_round(adaptation, state.theta, state.iteration, rounds, loop, settings.seed,
                                    closing=closing)
    if round_record.added.shape[0] == 0:
        return state, round_record
    g = adaptation.constraints(theta[None, :])[0]
    # the rows of the states already there keep their indices and curvature bounds; new rows start unknown
    l = np.concatenate([state.l, np.full(g.size - state.l.size, float(settings.l_initial))])
    moved = round_record.residual_scale < 1.0
    state = replace(state, theta=theta, g=g, loss=float(adaptation.loss(theta)), l=l,
                    previous_step=np.zeros_like(theta) if moved else state.previous_step,
                    multipliers=np.zeros_like(g))
    return state, round_record


def _loop_summary(looping: bool, loop: LoopSettings, rounds: list, adaptation) -> VerificationLoop:
    if not looping:
        return VerificationLoop(enabled=False)
    last = rounds[-1] if rounds else None
    return VerificationLoop(
        enabled=True, settings=asdict(loop), rounds=len(rounds),
        validation_states_added=int(sum(r["added"] for r in rounds)),
        initial_validation_states=int(adaptation.n_states - sum(r["added"] for r in rounds)),
        validation_states=int(adaptation.n_states),
        last_round=None if last is None else {k: v for k, v in last.items() if k != "added_states"},
        proven_fraction=None if last is None else last["proven_fraction"],
        clean=bool(last is not None and last["added"] == 0 and not last["falsified"]
                   and (last["proven_fraction"] is None or last["proven_fraction"] >= 1.0 - 1e-12)),
    )


def _backup_safety(problem) -> str | None:
    _, evaluation = problem.closed_loop(problem.backup_law())
    if evaluation.safe:
        return None
    worst = int(np.argmax(evaluation.worst))
    return f"{evaluation.names[worst]} reaches {evaluation.worst[worst]:.3g} > 0"


def _check_directory(run_dir: Path, request: AdaptRequest, config: dict) -> None:
    """Refuse to overwrite a run without --force; on --resume, insist on the same plant file and settings."""
    finished = (run_dir / "adaptation.json").exists()
    started = (run_dir / "checkpoint.npz").exists()
    if request.resume:
        if not started:
            raise UsageError(f"{run_dir}: nothing to resume (no checkpoint.npz)")
        try:
            saved = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"{run_dir}/config.resolved.yaml: cannot read ({exc})") from None
        if not isinstance(saved, dict) or saved.get("plant_sha256") != config["plant_sha256"]:
            raise UsageError(f"{run_dir}: the run was made from a different plant file; resume with the same file")
        if saved.get("optimizer") != config["optimizer"] or saved.get("policy") != config["policy"]:
            raise UsageError(f"{run_dir}: the settings differ from the run's config.resolved.yaml; resume with the same ones")
        return
    if (finished or started) and not request.force:
        what = "a finished run" if finished else "an interrupted run (use --resume to continue it)"
        raise UsageError(f"{run_dir} holds {what}; refusing to overwrite without --force")


def _record_execution(run_dir: Path, execution: str) -> None:
    """A resumed run says where its iterations now run (the setting resume does not compare)."""
    path = run_dir / "config.resolved.yaml"
    saved = yaml.safe_load(path.read_text())
    if isinstance(saved, dict) and saved.get("execution") != execution:
        atomic_write_text(path, yaml.safe_dump({**saved, "execution": execution}, sort_keys=False))


def _clear_directory(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("adaptation.json", "checkpoint.npz", "training.jsonl"):
        (run_dir / name).unlink(missing_ok=True)


def _resolved_config(spec: PlantSpec, settings: OptimizerSettings, hidden: tuple, patience: int,
                     verify_loop: bool) -> dict:
    return {
        "plant": spec.name, "plant_sha256": spec.text_sha256,
        "policy": {"hidden": list(hidden), "activation": spec.policy.activation},
        "optimizer": json_safe({**asdict(settings), "probe": settings.probe, "patience": patience,
                                "verification_loop": verify_loop}),
        "task": spec.task.type,
    }


def _save_checkpoint(run_dir: Path, state: OptimizerState, records_loss0: float, best: float, stall: int,
                     validation_states: np.ndarray, rounds: int) -> None:
    arrays = {
        "best_loss": np.array(best), "stall": np.array(stall),
        "validation_states": validation_states, "rounds": np.array(rounds),
        "iteration": np.array(state.iteration), "theta": state.theta, "g": state.g, "loss": np.array(state.loss),
        "previous_step": state.previous_step, "l": state.l, "multipliers": state.multipliers,
        "rng_state": np.array(json.dumps(state.rng_state)), "loss0": np.array(records_loss0),
    }
    atomic_write(run_dir / "checkpoint.npz", lambda handle: np.savez(handle, **arrays))


def _load_checkpoint(run_dir: Path, settings: OptimizerSettings, jsonl: Path) -> tuple[OptimizerState, list]:
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as data:
        state = OptimizerState(
            iteration=int(data["iteration"]), theta=np.array(data["theta"]), g=np.array(data["g"]),
            loss=float(data["loss"]), previous_step=np.array(data["previous_step"]), l=np.array(data["l"]),
            multipliers=np.array(data["multipliers"]), rng_state=json.loads(str(data["rng_state"])),
        )
    lines = jsonl.read_text().splitlines() if jsonl.exists() else []
    records = []
    for text in lines[: state.iteration]:
        try:
            records.append(json.loads(text))
        except json.JSONDecodeError:
            break
    atomic_write_text(jsonl, "".join(json.dumps(r) + "\n" for r in records))
    return state, records


def _progress_marks(run_dir: Path) -> tuple[float, float, int, np.ndarray, int]:
    """The backup's loss, the best loss so far, the stall count, the validation set and the rounds done."""
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as data:
        return (float(data["loss0"]), float(data["best_loss"]), int(data["stall"]),
                np.array(data["validation_states"]), int(data["rounds"]))


def _append_line(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text + "\n")
        handle.flush()


def _summary(spec, settings, adaptation, records, loss0, state, reason, seconds, run_dir,
             loop: VerificationLoop) -> AdaptationSummary:
    g_max = [r["g_max"] for r in records]
    accepted = sum(1 for r in records if r["accepted"])
    zero = sum(1 for r in records if str(r["reason"]).startswith("zero step"))
    policy_bytes = (run_dir / "policy.npz").read_bytes()
    final_groups = dict(zip(adaptation.group_names, adaptation.per_constraint(state.g).tolist()))
    return AdaptationSummary(
        plant=spec.name, method=settings.method, task=spec.task.type,
        iterations=len(records), stop_reason=reason,
        feasible_every_iteration=bool(all(g <= 0 for g in g_max)),
        violating_iterations=int(sum(1 for g in g_max if g > 0)),
        worst_g=float(max(g_max)) if g_max else float(state.g.max()),
        initial_loss=float(loss0), final_loss=float(state.loss),
        loss_ratio=float(state.loss / loss0) if loss0 else None,
        accepted=accepted, rejected=len(records) - accepted - zero, zero_steps=zero,
        final_g_per_constraint=final_groups, final_safe=bool(np.all(state.g <= 0)),
        l_final=dict(zip(adaptation.group_names, adaptation.per_constraint(state.l).tolist())),
        validation_states=int(adaptation.n_states), constraint_rows=int(state.g.size),
        weights=int(state.theta.size), seconds=seconds,
        policy_sha256=hashlib.sha256(policy_bytes).hexdigest(),
        guarantee="every accepted iterate satisfies every constraint row on the validation set (initial states "
                  "listed by the plant file, each step of the horizon, and reaching the target set); nothing is "
                  "claimed between those initial states: that is verification's job",
        verification_loop=loop,
    )


class _StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current iteration."""

    def __init__(self):
        self.requested: str | None = None

    def _handler(self, signum, frame):
        self.requested = signal.Signals(signum).name

    def installed(self):
        flag = self

        class _Context:
            def __enter__(self):
                self.previous = {s: signal.signal(s, flag._handler) for s in (signal.SIGINT, signal.SIGTERM)}

            def __exit__(self, *exc):
                for s, handler in self.previous.items():
                    signal.signal(s, handler)

        return _Context()


class _Progress:
    """A one-line progress bar on stderr (a line every 10% when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool):
        self.total = max(total, 1)
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last_decile = -1

    def update(self, iteration: int, record) -> None:
        if not self.enabled:
            return
        fraction = iteration / self.total
        bar = "#" * int(30 * fraction)
        text = (f"[{bar:<30}] {iteration}/{self.total} loss {record.loss:.5g} max g {record.g_max:.3g} "
                f"{'ok' if record.accepted else 'rejected'}")
        if self.tty:
            sys.stderr.write("\r" + text)
            sys.stderr.flush()
        elif int(10 * fraction) > self.last_decile:
            self.last_decile = int(10 * fraction)
            sys.stderr.write(text + "\n")

    def tasks(self, done: int, total: int) -> None:
        """A distributed batch's tasks done so far (on a terminal)."""
        if self.enabled and self.tty:
            sys.stderr.write(f"\r  batch: {done}/{total} tasks" + ("\033[K" if done < total else "\r\033[K"))
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
