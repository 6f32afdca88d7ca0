"""Dynamics, linearisation and the LQR backup against independent references."""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_discrete_are

from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.plant.linear import discretise_zoh, uncontrollable_modes
from scpo_ctrl.plant.model import build_plant
from scpo_ctrl.problem import build_problem

from .conftest import MODELS, model_dict, problem_for, write_yaml


def test_lqr_gain_equals_scipy_dare(model_name):
    problem = problem_for(model_name)
    A, B = problem.backup.linear.A, problem.backup.linear.B
    Q, R = np.array(problem.spec.backup.Q), np.array(problem.spec.backup.R)
    P = solve_discrete_are(A, B, Q, R)
    K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
    np.testing.assert_allclose(problem.backup.K, K, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(problem.backup.P, P, rtol=1e-9, atol=1e-9)
    assert np.max(np.abs(np.linalg.eigvals(A - B @ K))) < 1.0


def test_rk4_double_integrator_equals_exact_discretisation():
    model = build_plant(load_plant_spec(MODELS / "double_integrator.yaml"))
    Ac = np.array([[0.0, 1.0], [0.0, 0.0]])
    Bc = np.array([[0.0], [1.0]])
    Ad, Bd = discretise_zoh(Ac, Bc, 0.1)
    np.testing.assert_allclose(Ad, [[1.0, 0.1], [0.0, 1.0]], atol=1e-15)
    np.testing.assert_allclose(Bd, [[0.005], [0.1]], atol=1e-15)
    rng = np.random.default_rng(1)
    x_rk4 = x_exact = np.array([1.0, -0.5])
    for u in rng.uniform(-1, 1, size=100):
        x_rk4 = np.array(model.f(x_rk4, u)).ravel()
        x_exact = Ad @ x_exact + Bd[:, 0] * u
        assert np.max(np.abs(x_rk4 - x_exact)) <= 1e-9


def test_continuous_linear_plant_is_discretised_exactly():
    problem = problem_for("two_mass_spring")
    spec = problem.spec
    Ad, Bd = discretise_zoh(np.array(spec.dynamics.A), np.array(spec.dynamics.B), spec.dt)
    np.testing.assert_allclose(problem.backup.linear.A, Ad, atol=1e-12)
    np.testing.assert_allclose(problem.backup.linear.B, Bd, atol=1e-12)
    assert problem.model.dynamics_affine


def test_linearisation_of_pendulum_matches_finite_differences():
    model = problem_for("pendulum").model
    linear = model.linearise()
    h = 1e-6
    x0, u0 = np.zeros(2), np.zeros(1)
    A_fd = np.column_stack([
        (np.array(model.f(x0 + h * e, u0)).ravel() - np.array(model.f(x0 - h * e, u0)).ravel()) / (2 * h)
        for e in np.eye(2)
    ])
    np.testing.assert_allclose(linear.A, A_fd, rtol=1e-6, atol=1e-8)
    assert not model.dynamics_affine


def test_euler_and_substeps(tmp_path):
    data = model_dict("double_integrator")
    data["dynamics"]["integrator"] = "euler"
    data["dynamics"]["substeps"] = 4
    model = build_plant(load_plant_spec(write_yaml(tmp_path / "p.yaml", data)))
    x = np.array([0.3, 0.2])
    expected = x.copy()
    for _ in range(4):
        expected = expected + 0.025 * np.array([expected[1], 0.7])
    np.testing.assert_allclose(np.array(model.f(x, 0.7)).ravel(), expected, atol=1e-15)


def test_pbh_detects_uncontrollable_unstable_mode():
    A = np.diag([1.2, 0.5])
    assert uncontrollable_modes(A, np.array([[0.0], [1.0]])) == [complex(1.2)]
    assert uncontrollable_modes(A, np.array([[1.0], [0.0]])) == []


def test_next_form_dynamics(tmp_path):
    data = model_dict("double_integrator")
    data["dynamics"] = {"next": {"p": "p + 0.1*v + 0.005*a", "v": "v + 0.1*a"}}
    problem = build_problem(load_plant_spec(write_yaml(tmp_path / "p.yaml", data)))
    reference = problem_for("double_integrator")
    np.testing.assert_allclose(problem.backup.K, reference.backup.K, rtol=1e-9)
