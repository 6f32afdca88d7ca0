"""The validation set: seeded, inside its box, or explicit points."""

from __future__ import annotations

import numpy as np

from scpo_ctrl.config.plant_spec import InitialStateSpec
from scpo_ctrl.sim.initial_states import validation_states


def test_halton_points_fill_the_box_and_repeat():
    box = np.array([[-3.0, 3.0], [-1.0, 1.0]])
    spec = InitialStateSpec(box=box, count=64, seed=5, points=None)
    a, b = validation_states(spec), validation_states(spec)
    assert a.shape == (64, 2)
    np.testing.assert_array_equal(a, b)
    assert np.all(a >= box[:, 0]) and np.all(a <= box[:, 1])
    # low discrepancy: every quarter of each axis gets points
    for i in range(2):
        counts = np.histogram(a[:, i], bins=4, range=tuple(box[i]))[0]
        assert counts.min() >= 12
    other = validation_states(InitialStateSpec(box=box, count=64, seed=6, points=None))
    assert not np.allclose(a, other)


def test_explicit_points_are_used_as_given():
    points = np.array([[0.1, 0.2], [0.3, -0.4]])
    np.testing.assert_array_equal(validation_states(InitialStateSpec(None, 2, 0, points)), points)
