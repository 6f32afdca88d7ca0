"""The SCPO optimizer on plant-free problems: safe at every iterate, progress, l raised when needed."""

from __future__ import annotations

import numpy as np
import pytest

from scpo_ctrl.scpo.optimizer import OptimizerSettings, initial_state, step
from scpo_ctrl.scpo.regression import RegressionProblem


class CurvedWall:
    """min |theta - (2, 0)|^2  s.t.  g(theta) = theta_0 - 1 + 40 theta_1^2 <= 0 (curvature 80 in theta_1)."""

    dimension = 2
    row_groups = np.array([0])
    group_names = ("wall",)

    def loss(self, theta):
        return float(np.sum((theta - np.array([2.0, 0.0])) ** 2))

    def loss_and_gradient(self, theta):
        return self.loss(theta), 2.0 * (theta - np.array([2.0, 0.0]))

    def gradient_pieces(self, theta, count):
        gradient = self.loss_and_gradient(theta)[1]
        return np.array([gradient * (i == 0) for i in range(count)])

    def constraints(self, thetas):
        thetas = np.atleast_2d(thetas)
        return (thetas[:, 0] - 1.0 + 40.0 * thetas[:, 1] ** 2)[:, None]


def test_curvature_underestimate_is_caught_and_l_raised():
    problem = CurvedWall()
    settings = OptimizerSettings(iterations=60, step_size=0.2, trust_radius=0.5, probe_norm=0.05, random_pairs=1,
                                 gradient_pieces=0, l_initial=0.0, curvature_factor=0.01, curvature_decay=1.0, seed=3)
    state = initial_state(problem, np.array([0.0, 0.05]), settings)
    records = []
    for _ in range(settings.iterations):
        state, record = step(problem, state, settings)
        records.append(record)
        assert record.g_max <= 0.0  # no accepted iterate violates
        assert problem.constraints(state.theta)[0, 0] <= 0.0
    assert any(r.retries > 0 for r in records), "validation never failed: the test did not exercise the raise"
    assert records[-1].l[0] > 1.0  # raised far above the 0.01-scaled pair estimates
    ls = [r.l[0] for r in records]
    assert all(b >= a for a, b in zip(ls, ls[1:]))  # never lowered without decay
    assert state.loss < problem.loss(np.array([0.0, 0.05])) * 0.5  # and it still made progress toward the wall


class MarginedWall(CurvedWall):
    """The curved wall with a margin of 0.05 on its row: iterates must keep g <= -0.05."""

    margins = np.array([0.05])


def test_decaying_curvature_stays_safe_and_keeps_the_margin():
    problem = MarginedWall()
    settings = OptimizerSettings(iterations=60, step_size=0.2, trust_radius=0.5, probe_norm=0.05, random_pairs=1,
                                 gradient_pieces=0, l_initial=0.0, curvature_factor=0.01, curvature_decay=0.5, seed=3)
    state = initial_state(problem, np.array([0.0, 0.05]), settings)
    records = []
    for _ in range(settings.iterations):
        state, record = step(problem, state, settings)
        records.append(record)
        assert record.g_max <= -0.05  # every accepted iterate keeps the margin
    ls = [r.l[0] for r in records]
    assert any(b < a for a, b in zip(ls, ls[1:])), "l never decreased: decay not applied"
    assert any(r.retries > 0 for r in records)  # decayed l was caught by validation and raised again
    assert max(r.g_max for r in records) > -0.06  # it did go to the margin, not stay far from the wall


def test_margin_the_start_lacks_is_refused():
    problem = MarginedWall()
    with pytest.raises(ValueError, match="margin"):
        initial_state(problem, np.array([0.96, 0.0]), OptimizerSettings())


@pytest.mark.slow
def test_regression_with_harmful_supervision_stays_safe():
    problem = RegressionProblem()
    settings = OptimizerSettings(iterations=100, step_size=0.05, trust_radius=0.3, probe_norm=0.01,
                                 gradient_pieces=8, random_pairs=4, seed=0)
    state = initial_state(problem, problem.initial_theta(0), settings)
    start_loss = state.loss
    for _ in range(settings.iterations):
        state, record = step(problem, state, settings)
        assert record.g_max <= 0.0
    assert state.loss < 0.6 < start_loss  # the clipped target's optimum is 0.417; the zero function scores > 2
    unconstrained = OptimizerSettings(iterations=30, step_size=0.05, trust_radius=0.3, method="unconstrained")
    baseline = initial_state(problem, problem.initial_theta(0), unconstrained)
    violations = 0
    for _ in range(unconstrained.iterations):
        baseline, record = step(problem, baseline, unconstrained)
        violations += record.g_max > 0
    assert violations > 0  # the supervision really is harmful


def test_unsafe_start_is_refused():
    problem = CurvedWall()
    with pytest.raises(ValueError, match="not safe"):
        initial_state(problem, np.array([2.0, 0.0]), OptimizerSettings())


def test_runs_are_deterministic():
    problem = CurvedWall()
    settings = OptimizerSettings(iterations=15, step_size=0.2, trust_radius=0.5, probe_norm=0.05, random_pairs=2,
                                 gradient_pieces=0, seed=11)
    thetas = []
    for _ in range(2):
        state = initial_state(problem, np.array([0.0, 0.05]), settings)
        for _ in range(settings.iterations):
            state, _ = step(problem, state, settings)
        thetas.append(state.theta)
    np.testing.assert_array_equal(thetas[0], thetas[1])
