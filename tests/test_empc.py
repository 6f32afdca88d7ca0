"""The embedded MPC backup (``backup: {type: mpc, solver: admm}``): its float32 C against the exact QP, its numpy
reference, and itself on the Cortex-M4F under QEMU."""

from __future__ import annotations

import numpy as np
import pytest

from scpo_ctrl.backup.embedded_mpc import admm_solve
from scpo_ctrl.backup.embedded_qp import exact_inputs
from scpo_ctrl.export import empc_target, firmware

from .conftest import problem_for

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
