"""The target set: safe and invariant at c, and c not needlessly small."""

from __future__ import annotations

import casadi as ca
import numpy as np

from .conftest import MODEL_NAMES, problem_for


def _closed_loop_values(problem, x: np.ndarray):
    """Rows, input rows (unsaturated backup) and V(f(x, pi_b(x))) for states ``x (N, nx)``."""
    model, backup = problem.model, problem.backup
    xs = ca.SX.sym("x", model.nx)
    u = backup.control_unsaturated(xs)
    fn = ca.Function("cl", [xs], [model.g(xs, u), model.g_input(xs, u), model.f(xs, u)]).map(x.shape[0])
    g, g_in, x_next = (np.array(M, dtype=float).T for M in fn(x.T))
    return g, g_in, problem.target.value(x_next)


def test_states_of_target_set_are_safe_and_stay(model_name):
    problem = problem_for(model_name)
    target = problem.target
    rng = np.random.default_rng(123)
    x = np.vstack([target.sample(20_000, rng), target.sample(20_000, rng, surface=True)])
    g, g_in, v_next = _closed_loop_values(problem, x)
    assert np.all(g <= 0.0)
    assert np.all(g_in <= 0.0)
    assert np.all(v_next <= target.c * (1 + 1e-12))


def test_level_ten_percent_higher_fails_where_exact():
    """Where an exact formula sets c, 10% more gives a state that breaks a limit."""
    failures = {}
    for name in MODEL_NAMES:
        problem = problem_for(name)
        target = problem.target
        rng = np.random.default_rng(7)
        x = target.sample(50_000, rng, level=1.1 * target.c, surface=True)
        g, g_in, v_next = _closed_loop_values(problem, x)
        failures[name] = bool(np.any(g > 0) or np.any(g_in > 0) or np.any(v_next > 1.1 * target.c))
        if target.exact:
            assert failures[name], f"{name}: 1.1 c should violate its binding row {target.binding}"
    assert any(failures.values())


def test_nonlinear_constraint_level_is_searched():
    """The wall constraint of the double integrator is non-affine: its level comes from the ray search."""
    levels = {level.name: level for level in problem_for("double_integrator").target.levels}
    assert levels["stop_before_wall"].method == "ray-search+nlp"
    assert levels["a.max"].method == "exact"


def test_ray_search_finds_a_binding_nonlinear_constraint(tmp_path):
    """A tight non-affine constraint must bind, and the searched level must be close to the true one."""
    from scpo_ctrl.config.plant_spec import load_plant_spec
    from scpo_ctrl.problem import build_problem

    from .conftest import model_dict, write_yaml

    data = model_dict("double_integrator")
    data["constraints"] = [{"name": "disc", "expr": "p**2 + v**2 - 0.04"}]
    data["safety"]["initial_states"]["box"] = {"p": [-0.05, 0.05], "v": [-0.05, 0.05]}
    problem = build_problem(load_plant_spec(write_yaml(tmp_path / "p.yaml", data)))
    target = problem.target
    assert target.binding == "disc"
    # True level: the largest c with the ellipsoid inside the disc of radius 0.2: 0.04 * lambda_min(P).
    true_level = 0.04 * np.linalg.eigvalsh(target.P).min()
    assert 0.97 * true_level <= target.c <= true_level
