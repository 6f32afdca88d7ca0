"""The embedded MPC backup (``backup: {type: mpc, solver: admm}``): its float32 C against the exact QP, its numpy
reference, and itself on the Cortex-M4F under QEMU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from scpo_ctrl.adapt import AdaptRequest, run_adapt
from scpo_ctrl.backup.embedded_mpc import admm_solve
from scpo_ctrl.backup.embedded_qp import exact_inputs
from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.export import empc_target, firmware
from scpo_ctrl.export.run import ExportRequest, run_export
from scpo_ctrl.hil.run import HilRequest, run_hil
from scpo_ctrl.verify.run import VerifyRequest, run_verify
from scpo_ctrl.policy.residual import ResidualPolicy
from scpo_ctrl.problem import build_problem
from scpo_ctrl.scpo.control import ControlAdaptation, residual_policy

from .conftest import model_dict, problem_for, write_yaml

PLANTS = ["pendulum_empc"]
#: the stated accuracy of the shipped embedded MPCs: |u_C - u_exact| <= TOLERANCE x each input's half-range, on
#: the validation states (measured: about 2e-7 on pendulum_empc, i.e. float32 rounding)
TOLERANCE = 1e-5


def _far_states(problem, count=32, seed=3):
    """States beyond the validation box, up to the state limits and 20 % past them: the soft constraints bind,
    and from some of them no input keeps the limits."""
    F = problem.mpc.formulation
    low, high = np.array([s.min for s in problem.spec.states]), np.array([s.max for s in problem.spec.states])
    rng = np.random.default_rng(seed)
    return F.x_eq + rng.uniform(-1.2, 1.2, size=(count, F.nx)) * np.maximum(high - F.x_eq, F.x_eq - low)


@pytest.fixture(scope="module", params=PLANTS)
def solver_runs(request, tmp_path_factory):
    problem = problem_for(request.param)
    work = tmp_path_factory.mktemp(f"empc_{request.param}")
    runner = empc_target.build_solver_host_runner(problem.mpc.files, work)
    return problem, runner, work


def test_shipped_plant_uses_the_embedded_mpc():
    problem = problem_for("pendulum_empc")
    assert problem.mpc is not None and problem.mpc.embedded
    assert problem.mpc.formulation.iterations == 50


def test_float32_c_matches_the_exact_qp_on_the_validation_states(solver_runs):
    """Issue 19, DoD 2: the embedded MPC's C (float32, as compiled for the rollouts and the target) against
    Clarabel's interior-point solution of the same QP, on every validation state."""
    problem, runner, work = solver_runs
    F = problem.mpc.formulation
    X = problem.x0
    U_c = empc_target.solve_on_host(runner, X, F.nu, work)
    U_exact = exact_inputs(F, X)
    half_range = 0.5 * (F.u_max - F.u_min)
    error = np.abs(U_c - U_exact) / half_range
    assert np.max(error) <= TOLERANCE, f"worst relative error {np.max(error):.3g} at {X[np.argmax(error.max(axis=1))]}"
    # and not trivially: some validation states saturate the input, some do not
    saturated = np.isclose(np.abs(U_exact - F.u_eq), half_range, rtol=0, atol=1e-9).any(axis=1)
    assert 0 < saturated.sum() < len(X)


def test_float32_c_is_the_numpy_reference_iteration(solver_runs):
    """The C performs the documented iteration: numpy's float64 run of it (float32 gains) agrees to float32
    rounding, also where the soft constraints bind; the input always lies within its limits."""
    problem, runner, work = solver_runs
    F = problem.mpc.formulation
    X = np.vstack([problem.x0, _far_states(problem)]).astype(np.float32).astype(float)
    U_c = empc_target.solve_on_host(runner, X, F.nu, work)
    U_ref = admm_solve(F, problem.mpc.files.gains.as_float32(), X).u
    assert np.all(np.isfinite(U_c))
    assert np.all((U_c >= F.u_min) & (U_c <= F.u_max))
    assert np.max(np.abs(U_c - U_ref)) <= 1e-4 * np.max(0.5 * (F.u_max - F.u_min))


@pytest.mark.skipif(not firmware.qemu_available(), reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_cortex_m4_solver_is_bitwise_the_host_solver(solver_runs):
    """Issue 19: the same C for the Cortex-M4F (-ffp-contract=off, -Wdouble-promotion -Werror) under QEMU gives
    bit-identical float32 inputs, on validation states and on states where the soft constraints bind."""
    problem, runner, work = solver_runs
    F = problem.mpc.formulation
    X = np.vstack([problem.x0, _far_states(problem)])
    elf = empc_target.build_solver_elf(problem.mpc.files, work)
    target, timing = empc_target.solve_on_target(elf, X, F.nu, work)
    host = empc_target.solve_on_host(runner, X, F.nu, work)
    assert np.array_equal(target.u.astype(np.float32).view(np.uint32), host.astype(np.float32).view(np.uint32))
    # fixed work: a few thousand instructions per ADMM iteration for this size, nothing like a soft-double build
    assert 0 < timing.instructions_per_step < 10_000 * F.iterations


def _reduced(tmp_path, name: str, count: int, horizon: int, **changes):
    data = model_dict(name)
    data["safety"]["initial_states"]["count"] = count
    data["safety"]["horizon"] = horizon
    data.update(changes)
    return write_yaml(tmp_path / f"{name}.yaml", data)


@pytest.fixture(scope="module")
def empc_run(tmp_path_factory):
    """``adapt`` of pendulum_empc with 16 validation states and 2 iterations: ``(run directory, summary)``."""
    tmp_path = tmp_path_factory.mktemp("empc_run")
    plant = _reduced(tmp_path, "pendulum_empc", count=16, horizon=100)
    run = tmp_path / "run"
    result = run_adapt(AdaptRequest(plant=str(plant), out=str(run), iterations=2, progress=False,
                                    plots=False))  # no test reads them
    return run, result.summary.to_json()


@pytest.mark.slow
def test_adapt_on_the_embedded_mpc_is_safe_every_iteration_and_beats_the_mpc_alone(empc_run):
    """Issue 19, DoD 2: SCPO whose rollouts run the embedded MPC's float32 C keeps 0 violating iterations and
    lowers the loss below the MPC alone (the initial policy is the backup). 16 validation states, 2 iterations."""
    run, summary = empc_run
    assert summary["feasible_every_iteration"] and summary["final_safe"]
    assert summary["final_loss"] < summary["initial_loss"]
    lines = [json.loads(line) for line in (run / "training.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(line["g_max"] <= 0 for line in lines)
    policy, theta, metadata = ResidualPolicy.load(run / "policy.npz")
    assert policy.backup == "mpc"
    problem = build_problem(load_plant_spec(run / "plant.yaml"))
    assert metadata["mpc_solver"] == problem.mpc.files.solver_name
    # an independent check: the float64 reference closed loop (numpy ADMM + the plant map) stays safe
    X = problem.x0.copy()
    law, plant = policy.law().map(len(X)), problem.model.f.map(len(X))
    Theta = np.tile(theta[:, None], (1, len(X)))
    F = problem.mpc.formulation
    gains = problem.mpc.files.gains.as_float32()
    for _ in range(problem.spec.safety.horizon):
        U_b = admm_solve(F, gains, X).u
        U = np.array(law(X.T, Theta, U_b.T))
        X = np.array(plant(X.T, U)).T
        assert np.all(np.abs(X[:, 0]) <= 0.5) and np.all(np.abs(X[:, 1]) <= 3.0)


def test_closed_loop_cost_gradient_through_the_embedded_mpc_matches_finite_differences(tmp_path):
    """The rollouts' Jacobian of the embedded MPC comes from its double twin (float32 differences of 1e-6 would be
    rounding noise): the cost gradient built on it is the slope of the loss."""
    plant = _reduced(tmp_path, "pendulum_empc", count=4, horizon=30,
                     task={"type": "closed_loop_cost", "closed_loop_cost": {"Q": [10.0, 0.1], "R": [0.1]}})
    problem = build_problem(load_plant_spec(plant))
    policy = residual_policy(problem, (8,))
    adaptation = ControlAdaptation(problem, policy)
    rng = np.random.default_rng(3)
    theta = 0.3 * rng.standard_normal(policy.n_theta)
    value, gradient = adaptation.loss_and_gradient(theta)
    direction = rng.standard_normal(policy.n_theta)
    direction /= np.linalg.norm(direction)
    h = 1e-3
    slope = (adaptation.loss(theta + h * direction) - adaptation.loss(theta - h * direction)) / (2 * h)
    assert gradient @ direction == pytest.approx(slope, rel=2e-2, abs=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not firmware.qemu_available(), reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_export_and_hil_run_the_certified_law_on_the_cortex_m4(empc_run, tmp_path):
    """Issue 19, DoD 1: `export --target cortex-m4` of a run on the embedded MPC builds the full law (MPC,
    network, gate, monitor) for the M4 and says so; `hil --target qemu` runs it in lockstep within the float32
    bound with its instructions per step reported, and the SIL and QEMU runs of the same episodes agree exactly."""
    run = tmp_path / "run"
    shutil.copytree(empc_run[0], run)
    export = run_export(ExportRequest(run_dir=str(run), target="cortex-m4"))
    assert export.equivalent
    manifest = export.manifest.to_json()
    backup = manifest["backup"]
    assert backup["embedded"] and backup["cortex_m4"].startswith("built: the certified law")
    arm = manifest["builds"]["cortex-m4"]
    assert arm["backup"] == "mpc (embedded, the certified law)"
    assert "empc_solve_f32" in arm["mpc_object"]["stack_bytes"]
    reports = {}
    for target in ("sil", "qemu"):
        result = run_hil(HilRequest(run_dir=str(run), target=target, episodes=2, steps=40, plots=False))
        report = result.report.to_json()
        assert result.passed, report["summary"]
        assert report["law"].startswith("the certified law")
        assert report["equivalence"]["branch_mismatches"] == 0 and report["safety"]["violating_steps"] == 0
        reports[target] = report
    # fixed work: the same instruction count at every step up to the projections' branches (and the timer's
    # 40-instruction tick), about 50 ADMM iterations of a few thousand each
    compute = reports["qemu"]["compute"]
    assert 10_000 < compute["instructions_per_step_p50"] <= compute["instructions_per_step_max"] < 500_000
    assert compute["instructions_per_step_max"] <= 1.01 * compute["instructions_per_step_p50"]
    # the same float32 closed loops on the host and on the M4: identical worst rows, branches and deviations
    for key in ("safety", "branches", "trajectory_vs_python", "equivalence"):
        assert reports["sil"][key] == reports["qemu"][key], key
    # verify: the exported solver against the exact QP, the Monte Carlo with the embedded MPC in the loop, and no
    # LQR-fallback check (the Cortex-M4 build is the certified law)
    checks = {c["name"]: c for c in run_verify(VerifyRequest(run_dir=str(run), samples=8, halton=8)).certificate.to_json()["checks"]}
    assert checks["integrity"]["verdict"] == "VERIFIED" and checks["equivalence"]["verdict"] == "VERIFIED"
    assert checks["mpc_solver"]["verdict"] == "VERIFIED"
    assert checks["mpc_solver"]["details"]["max_relative_difference"] <= TOLERANCE
    assert "embedded MPC" in checks["closed_loop_safety"]["details"]["in_the_loop"]
    assert "cortex_m4_lqr_fallback" not in checks
