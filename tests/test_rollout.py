"""Batched rollouts equal a per-initial-state reference loop; metrics mean what they say."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest

from scpo_ctrl.policy.mlp import MlpLayout
from scpo_ctrl.sim.reference import reference_rollouts
from scpo_ctrl.sim.rollout import REACH_ROW, RolloutEngine, safety_metrics

from .conftest import problem_for


def residual_mlp_policy(problem, hidden=(32, 32)):
    """u = sat(pi_b(x) + phi_theta(x)): a network policy for tests and benchmarks."""
    layout = MlpLayout((problem.model.nx, *hidden, problem.model.nu))
    x = ca.SX.sym("x", problem.model.nx)
    theta = ca.SX.sym("theta", layout.n_theta)
    backup = problem.backup
    u = backup.control_unsaturated(x) + layout.forward(x, theta)
    u = ca.fmin(ca.fmax(u, ca.DM(backup.u_min)), ca.DM(backup.u_max))
    return ca.Function("policy", [x, theta], [u]), layout


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("name", ["double_integrator", "cartpole"])
def test_backup_batch_equals_reference_loop(name, jit):
    problem = problem_for(name)
    policy = problem.backup.function()
    x0 = problem.x0[:16]
    engine = RolloutEngine(problem.model, policy, 40, jit=jit)
    batched = engine.simulate(x0)
    reference = reference_rollouts(problem.model, policy, x0, 40)
    for field in ("x", "u", "g"):
        assert getattr(batched, field).shape == getattr(reference, field).shape
        np.testing.assert_allclose(getattr(batched, field), getattr(reference, field), rtol=0, atol=1e-12)


@pytest.mark.parametrize("jit", [False, True])
def test_network_policy_batch_equals_reference_loop(jit):
    problem = problem_for("double_integrator")
    policy, layout = residual_mlp_policy(problem)
    theta = layout.initial_theta(np.random.default_rng(0), zero_last_layer=False)
    x0 = problem.x0[:12]
    engine = RolloutEngine(problem.model, policy, 30, jit=jit, threads=2)
    batched = engine.simulate(x0, theta)
    reference = reference_rollouts(problem.model, policy, x0, 30, theta)
    np.testing.assert_allclose(batched.x, reference.x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(batched.u, reference.u, rtol=0, atol=1e-12)
    # the network really acts: the trajectory differs from the backup's
    backup = RolloutEngine(problem.model, problem.backup.function(), 30, jit=False).simulate(x0)
    assert np.max(np.abs(backup.x - batched.x)) > 1e-3


def test_per_state_parameters():
    problem = problem_for("double_integrator")
    policy, layout = residual_mlp_policy(problem, hidden=(8,))
    rng = np.random.default_rng(3)
    thetas = rng.normal(size=(5, layout.n_theta)) * 0.2
    x0 = problem.x0[:5]
    engine = RolloutEngine(problem.model, policy, 20, jit=False)
    batched = engine.simulate(x0, thetas)
    for b in range(5):
        single = reference_rollouts(problem.model, policy, x0[b:b + 1], 20, thetas[b])
        np.testing.assert_allclose(batched.x[b], single.x[0], atol=1e-12)
    with pytest.raises(ValueError):
        engine.simulate(x0, thetas[:3])


def test_safety_metrics_are_max_over_horizon_and_reach():
    problem = problem_for("double_integrator")
    engine = RolloutEngine(problem.model, problem.backup.function(), 80, jit=False)
    rollouts, evaluation = engine.evaluate(problem.x0, problem.target.c, problem.target.P, problem.target.x_eq)
    names = [row.name for row in problem.model.rows]
    assert evaluation.names == tuple(names) + (REACH_ROW,)
    np.testing.assert_array_equal(evaluation.g[:, :-1], rollouts.g.max(axis=1))
    v_final = problem.target.value(rollouts.x[:, -1])
    np.testing.assert_allclose(evaluation.g[:, -1], v_final - problem.target.c, atol=1e-14)
    # the wall row by hand from the trajectory
    p, v = rollouts.x[..., 0], rollouts.x[..., 1]
    wall = (p + v * np.abs(v) / 2 - 4.5).max(axis=1)
    np.testing.assert_allclose(evaluation.g[:, names.index("stop_before_wall")], wall, atol=1e-12)
    assert evaluation.safe


def test_non_finite_states_count_as_violations():
    problem = problem_for("double_integrator")
    x = np.zeros((1, 3, 2))
    x[0, 2] = np.nan
    g = np.zeros((1, 3, len(problem.model.rows)))
    g[0, 2, :] = np.nan
    from scpo_ctrl.sim.rollout import Rollouts

    evaluation = safety_metrics(problem.model, Rollouts(x=x, u=np.zeros((1, 3, 1)), g=g), 0.4, problem.target.P, np.zeros(2))
    assert np.all(np.isinf(evaluation.g))
    assert not evaluation.safe


def test_unsafe_policy_is_detected():
    """The malicious expert of the double integrator runs into the wall: metrics must show it."""
    from scpo_ctrl.policy.expert import expert_function

    problem = problem_for("double_integrator")
    engine = RolloutEngine(problem.model, expert_function(problem.spec), 80, jit=False)
    _, evaluation = engine.evaluate(problem.x0, problem.target.c, problem.target.P, problem.target.x_eq)
    wall = evaluation.names.index("stop_before_wall")
    assert evaluation.worst[wall] > 0
    assert evaluation.violating_states()[wall] == problem.x0.shape[0]
