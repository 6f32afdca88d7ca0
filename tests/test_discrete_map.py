"""The first-order model of a plant's discrete map: every true ``f(x, u)`` over a box lies within the model's
linear part plus its remainder (pendulum and cart-pole, RK4 with substeps), and the interval program of the
Jacobian encloses the Jacobian the way CasADi computes it."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest

from scpo_ctrl.config.plant_spec import load_plant_spec
from scpo_ctrl.plant.model import build_plant
from scpo_ctrl.verify.discrete_map import DiscreteMap, IntervalProgram, UnsupportedOperation

from .conftest import MODELS

BOXES, SAMPLES = 300, 40
#: per plant: (half-width of the cloud of box centres, box radius) over (x, u)
SCALES = {"pendulum": ([0.5, 3.0, 0.45], [0.05, 0.12, 0.05]),
          "cartpole": ([2.4, 3.0, 0.21, 3.0, 10.0], [0.3, 0.12, 0.012, 0.05, 1.0])}


def _map(name: str) -> DiscreteMap:
    return DiscreteMap.of(build_plant(load_plant_spec(MODELS / f"{name}.yaml")))


@pytest.mark.parametrize("name", sorted(SCALES))
def test_first_order_model_contains_the_discrete_map(name):
    discrete_map = _map(name)
    spread, radius = (np.array(v) for v in SCALES[name])
    rng = np.random.default_rng(len(name))
    centre = rng.uniform(-spread, spread, size=(BOXES, len(spread)))
    radius = np.tile(radius, (BOXES, 1)) * rng.uniform(0.1, 1.0, size=(BOXES, 1))
    model = discrete_map.first_order(centre, radius)
    assert np.all(np.isfinite(model.remainder)) and np.all(model.remainder > 0)
    worst = 0.0
    for k in range(SAMPLES):
        offset = rng.uniform(-1, 1, size=centre.shape)
        if k < SAMPLES // 2:
            offset = np.sign(offset)  # the box's vertices, where the remainder is largest
        z = centre + offset * radius
        value, _ = discrete_map.at(z)
        linear = model.value + np.einsum("mij,mj->mi", model.jacobian, z - centre)
        worst = max(worst, float((np.abs(value - linear) / model.remainder).max()))
    assert worst <= 1.0
    assert worst > 0.2  # the mean-value remainder is within a small factor of the truth, not vacuous


@pytest.mark.parametrize("name", sorted(SCALES))
def test_interval_jacobian_encloses_the_casadi_jacobian(name):
    discrete_map = _map(name)
    spread, radius = (np.array(v) for v in SCALES[name])
    rng = np.random.default_rng(7)
    centre = rng.uniform(-spread, spread, size=(BOXES, len(spread)))
    enclosure = discrete_map.jacobian_enclosure(centre - radius, centre + radius)
    for _ in range(10):
        _, J = discrete_map.at(centre + rng.uniform(-1, 1, size=centre.shape) * radius)
        assert np.all((J >= enclosure.lo) & (J <= enclosure.hi))
    point = discrete_map.jacobian_enclosure(centre, centre)
    _, J_c = discrete_map.at(centre)
    assert np.allclose(point.lo, J_c, rtol=1e-12, atol=1e-12) and np.allclose(point.hi, J_c, rtol=1e-12, atol=1e-12)


def test_an_operation_without_interval_rule_is_refused():
    z = ca.SX.sym("z", 2)
    with pytest.raises(UnsupportedOperation, match="FLOOR"):
        IntervalProgram.of(ca.Function("f", [z], [ca.floor(z[0]) * z[1]]))
