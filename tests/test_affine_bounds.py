"""The relaxations of the reachability's affine bounds: every true value lies within the affine part plus
the remainder, on many points sampled in the input zonotope; and each bound is tight enough that the same
samples break it once its remainder is halved (so these tests can fail)."""

from __future__ import annotations

import numpy as np
import pytest

from scpo_ctrl.export.law import DeployedLaw, network
from scpo_ctrl.verify import affine_bounds as ab
from scpo_ctrl.verify.reach import _residual_at

M, m, SAMPLES = 40, 5, 4000


def _random_form(rng, k: int, spread: float, with_remainder: bool = True) -> ab.AffineForm:
    centre = rng.normal(0.0, 1.5, size=(M, k))
    linear = rng.normal(0.0, spread, size=(M, k, m)) * (rng.random((M, k, m)) < 0.7)
    radius = rng.uniform(0.0, spread, size=(M, k)) if with_remainder else np.zeros((M, k))
    return ab.AffineForm(centre, linear, radius)


def _samples(rng, form: ab.AffineForm) -> tuple:
    """xi (S, M, m) and remainders (S, M, k) in the form's set, with the box's vertices over-represented."""
    xi = rng.uniform(-1, 1, size=(SAMPLES, M, m))
    xi[: SAMPLES // 2] = np.sign(xi[: SAMPLES // 2])
    e = rng.uniform(-1, 1, size=(SAMPLES,) + form.radius.shape)
    e[: SAMPLES // 3] = np.sign(e[: SAMPLES // 3])
    return xi, e * form.radius


def _value(form: ab.AffineForm, xi: np.ndarray, e: np.ndarray | None = None) -> np.ndarray:
    """centre + linear @ xi (+ e) at samples (S, M, m) -> (S, M, k)."""
    value = form.centre + np.einsum("mkj,smj->smk", form.linear, xi)
    return value if e is None else value + e


def _excess(truth: np.ndarray, bound: ab.AffineForm, xi: np.ndarray) -> np.ndarray:
    """|truth - affine part| / remainder radius at every sample: <= 1 where the bound holds."""
    return np.abs(truth - _value(bound, xi)) / np.maximum(bound.radius, 1e-300)


def _assert_sound_and_tight(truth, bound, xi):
    excess = _excess(truth, bound, xi)
    assert np.all(excess <= 1.0), float(excess.max())
    # the remainder is not loose enough to hide a wrong affine part: halved, the samples break it
    assert excess.max() > 0.5, float(excess.max())


@pytest.mark.parametrize("spread", [0.05, 0.5, 3.0])
def test_tanh_relaxation_contains_every_sample(spread):
    rng = np.random.default_rng(int(spread * 100))
    q = _random_form(rng, 6, spread)
    xi, e = _samples(rng, q)
    bound = ab.apply(ab.TANH, q)
    _assert_sound_and_tight(np.tanh(_value(q, xi, e)), bound, xi)


@pytest.mark.parametrize("spread", [0.02, 0.2, 1.0])
def test_gate_relaxation_contains_every_sample(spread):
    """smoothstep(clip(s, 0, 1)) over ranges inside, across and beyond [0, 1]."""
    rng = np.random.default_rng(int(spread * 100) + 7)
    q = _random_form(rng, 3, spread)
    q = ab.AffineForm(q.centre * 0.5 + 0.5, q.linear, q.radius)
    xi, e = _samples(rng, q)
    bound = ab.apply(ab.GATE, q)
    _assert_sound_and_tight(ab._gate_value(_value(q, xi, e)), bound, xi)


def test_relaxation_is_exact_on_flat_and_point_ranges():
    lo = np.array([-3.0, 1.5, 0.2, -0.1])
    hi = np.array([-1.0, 4.0, 0.2, -0.1])
    alpha, beta, delta = ab.relax(ab.GATE, lo, hi)
    assert np.allclose(alpha[:2], 0.0) and np.allclose(beta[:2], [0.0, 1.0]) and np.all(delta < 1e-9)
    assert np.all(delta[2:] < 1e-9)


@pytest.mark.parametrize("spread", [0.05, 0.5, 2.0])
def test_product_contains_every_sample(spread):
    rng = np.random.default_rng(int(spread * 100) + 11)
    a, b = _random_form(rng, 1, spread), _random_form(rng, 3, spread)
    xi, e_a = _samples(rng, a)
    e_b = rng.uniform(-1, 1, size=(SAMPLES,) + b.radius.shape) * b.radius
    e_b[: SAMPLES // 3] = np.sign(e_b[: SAMPLES // 3]) * b.radius
    bound = ab.product(a, b)
    _assert_sound_and_tight(_value(a, xi, e_a) * _value(b, xi, e_b), bound, xi)


def test_quadratic_contains_every_sample():
    rng = np.random.default_rng(5)
    q = _random_form(rng, 2, 0.4, with_remainder=False)
    root = rng.normal(size=(2, 2))
    P = root @ root.T + 0.1 * np.eye(2)
    xi, _ = _samples(rng, q)
    x = _value(q, xi)
    truth = np.einsum("smi,ij,smj->sm", x, P, x)[..., None]
    _assert_sound_and_tight(truth, ab.quadratic(q, P), xi)


def _random_law(rng, nx=2, nu=1, hidden=(16, 16)) -> DeployedLaw:
    sizes = (nx,) + hidden + (nu,)
    weights = tuple(rng.normal(0, 1.2 / np.sqrt(n_in), size=(n_out, n_in))
                    for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    biases = tuple(rng.normal(0, 0.3, size=n_out) for n_out in sizes[1:])
    root = rng.normal(size=(nx, nx))
    return DeployedLaw(
        name="t", state_names=("p", "v"), input_names=("a",), state_units=("m", "m/s"), input_units=("m/s^2",),
        dt=0.1, weights=weights, biases=biases, activation="tanh", x_eq=np.array([0.3, -0.1]), u_eq=np.zeros(nu),
        K=rng.normal(size=(nu, nx)), P=root @ root.T + np.eye(nx), c=1.0, gate_ratio=2.0,
        x_scale=np.array([3.0, 1.0]), u_scale=np.full(nu, 0.7), u_min=np.full(nu, -1.0), u_max=np.full(nu, 1.0),
        region_min=np.full(nx, -np.inf), region_max=np.full(nx, np.inf))


@pytest.mark.parametrize("width", [0.05, 0.3])
def test_residual_form_contains_the_law_on_every_sample(width):
    """The whole chain (layers, tanh, level, gate, product) against the float64 law."""
    rng = np.random.default_rng(int(width * 100))
    law = _random_law(rng)
    # zonotopes scattered over the gate band and around it (V/c from 0 to about 4)
    centre = rng.uniform(-1.2, 1.2, size=(M, 2))
    G = rng.normal(0.0, width, size=(M, 2, m))
    bound = ab.residual_form(law, centre, G)
    xi, _ = _samples(rng, ab.state_form(centre, G))
    x = centre + np.einsum("mij,smj->smi", G, xi)
    truth = _residual_at(law, x.reshape(-1, 2)).reshape(SAMPLES, M, law.nu)
    excess = _excess(truth, bound, xi)
    assert np.all(excess <= 1.0), float(excess.max())
    assert excess.max() > 0.2
    # and the network part alone
    phi = ab.network_form(law, ab.state_form(centre, G))
    truth_phi = network(law, ((x - law.x_eq) / law.x_scale).reshape(-1, 2)).reshape(SAMPLES, M, law.nu)
    assert np.all(_excess(truth_phi, phi, xi) <= 1.0)
