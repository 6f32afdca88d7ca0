"""The acados MPC backup on the pendulum: agreement with IPOPT, the LQR near the equilibrium, thread
independence of the C rollouts, and safety from the validation set."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest

from scpo_ctrl.backup.acados_env import AcadosUnavailable, find_acados
from scpo_ctrl.backup.mpc import ipopt_reference
from scpo_ctrl.scpo.control import residual_policy

from .conftest import problem_for

#: |u0_acados - u0_ipopt| allowed; both solve the same OCP to tight tolerances (see test_matches_ipopt)
IPOPT_TOLERANCE = 1e-5
#: the forward-difference Jacobian at the equilibrium against -K
JACOBIAN_TOLERANCE = 1e-5

try:
    find_acados()
except AcadosUnavailable as exc:  # pragma: no cover - a checkout without scripts/install-acados.sh
    pytest.skip(str(exc), allow_module_level=True)


@pytest.fixture(scope="module")
def problem():
    """models/pendulum_mpc.yaml (builds or loads the cached acados solver)."""
    return problem_for("pendulum_mpc")


def test_matches_ipopt(problem):
    """On every validation state, acados' first input is IPOPT's on the same OCP, and both converge.

    The solutions may differ by the solvers' tolerances only: where an input bound is active, an
    interior-point QP stops at a distance of about (complementarity tolerance) / (multiplier) from it,
    so the QP's complementarity tolerance bounds the agreement (1e-7 gave 1.2e-5 on validation state 37,
    whose input sits on the torque limit with a small multiplier).
    """
    engine = problem.engine(problem.backup_law(), threads=1)
    u_acados, stats = engine.solve(problem.x0)
    reference = ipopt_reference(problem.mpc.formulation, problem.model)
    solutions = [reference.solve(x) for x in problem.x0]
    u_ipopt = np.array([u for u, _ in solutions])
    assert problem.x0.shape[0] >= 20
    assert np.all(stats.status == 0), f"acados did not converge from states {np.flatnonzero(stats.status)}"
    assert all(ok for _, ok in solutions), "IPOPT did not converge from every state"
    difference = np.abs(u_acados - u_ipopt).max(axis=1)
    assert np.all(difference <= IPOPT_TOLERANCE), (
        f"acados and IPOPT differ by up to {difference.max():.2e} (states {np.flatnonzero(difference > IPOPT_TOLERANCE)})"
    )


def test_jacobian_at_equilibrium_is_the_lqr(problem):
    """Near the equilibrium no constraint is active and the MPC, with the LQR's Riccati matrix as terminal
    cost and the same Q, R, is the LQR: its forward-difference Jacobian is -K."""
    engine = problem.engine(problem.backup_law(), horizon=2, threads=1)
    result = engine.rollout(problem.backup.x_eq[None, :], jacobian=True)
    assert np.all(result.stats.status == 0)
    np.testing.assert_allclose(result.u_backup[0], np.broadcast_to(problem.backup.u_eq, result.u_backup[0].shape),
                               atol=1e-12)
    for jacobian in result.jacobian[0]:
        np.testing.assert_allclose(jacobian, -problem.backup.K, rtol=0, atol=JACOBIAN_TOLERANCE)


def test_rollouts_do_not_depend_on_threads(problem):
    """A residual policy on top of the MPC, two parameter vectors, Jacobians on: bit-identical with 1 and 2 threads."""
    policy = residual_policy(problem, (8,))
    rng = np.random.default_rng(3)
    thetas = policy.initial_theta(0) + 0.05 * rng.standard_normal((2, policy.n_theta))
    x0 = problem.x0[:24]
    index = np.arange(x0.shape[0]) % 2
    results = []
    for threads in (1, 2):
        engine = problem.engine(policy.law(ca.SX), horizon=40, threads=threads)
        assert engine.threads == threads
        results.append(engine.rollout(x0, thetas, index, jacobian=True))
    one, two = results
    for a, b in ((one.rollouts.x, two.rollouts.x), (one.rollouts.u, two.rollouts.u), (one.rollouts.g, two.rollouts.g),
                 (one.u_backup, two.u_backup), (one.jacobian, two.jacobian), (one.stats.status, two.stats.status),
                 (one.stats.iterations, two.stats.iterations)):
        assert np.array_equal(a, b)
    # the residual acts: the policy's inputs are not the MPC's everywhere
    assert np.abs(one.rollouts.u - one.u_backup).max() > 1e-6


def test_mpc_keeps_the_pendulum_safe(problem):
    """The MPC backup alone is safe from every validation state (every row, and the target set is reached)."""
    _, evaluation = problem.closed_loop(problem.backup_law())
    assert evaluation.safe, dict(zip(evaluation.names, evaluation.worst))
