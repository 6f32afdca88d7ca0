"""The certified region and the projection (SCPO.md section 2, steps 4-5)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from scpo_ctrl.scpo.projection import _solve_conic, certified_bound, in_region, project


def _random_smooth_constraints(rng, d, k):
    """k functions g_i(x) = a_i^T x + c_i + (kappa_i / 2) sin-curvature, |g''| <= kappa_i exactly known."""
    a = rng.standard_normal((k, d)) * 0.5
    c = -rng.uniform(0.0, 0.05, size=k)
    kappa = rng.uniform(0.1, 5.0, size=k)
    u = rng.standard_normal((k, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    phase = rng.uniform(0, 2 * np.pi, size=k)

    def g(x):
        x = np.atleast_2d(x)
        s = x @ u.T  # (n, k)
        # second derivative along u is -kappa * sin(s + phase): |curvature| <= kappa
        return x @ a.T + c + kappa * (np.sin(s + phase) - np.sin(phase) - s * np.cos(phase))

    return g, kappa


def test_every_certified_step_is_truly_safe():
    """Thousands of random smooth constraints with known curvature: nothing inside the region violates."""
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(200):
        d, k, m = 6, 12, int(rng.integers(2, 7))
        g, kappa = _random_smooth_constraints(rng, d, k)
        g0 = g(np.zeros(d))[0]
        if np.any(g0 > 0):
            continue
        D = rng.standard_normal((d, m)) * rng.uniform(0.01, 0.3)
        G = g(D.T).T  # (k, m)
        S = D.T @ D
        for _ in range(10):
            direction = rng.standard_normal(m)
            # the largest scale along this direction that is still certified (the region is convex, holds 0)
            lo, hi = 0.0, 1e3
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if in_region(mid * direction, g0, G, kappa, S, radius=1e3) else (lo, mid)
            for fraction in (1.0, 0.9, 0.5, 0.1):
                xi = fraction * lo * direction
                assert in_region(xi, g0, G, kappa, S, radius=1e3)
                assert np.all(g(D @ xi)[0] <= 1e-12)
                checked += 1
    assert checked > 5000


def _problem(rng, k=40, m=8, d=60):
    D = rng.standard_normal((d, m))
    D *= 0.01 / np.linalg.norm(D, axis=0)
    raw = D[:, 0] * 25 + rng.standard_normal(d) * 0.002
    g0 = -rng.uniform(0.0, 0.02, size=k)
    g0[0] = -1e-9
    G = g0[:, None] + rng.standard_normal((k, m)) * 0.002
    l = np.full(k, rng.uniform(0.5, 10.0))
    return D, raw, g0, G, l


def test_projection_is_certified_and_a_descent_direction():
    rng = np.random.default_rng(1)
    for _ in range(40):
        D, raw, g0, G, l = _problem(rng)
        result = project(D, raw, g0, G, l, radius=0.3)
        S = D.T @ D
        assert in_region(result.xi, g0, G, l, S, 0.3)
        assert np.all(result.bound <= 0)
        p = D @ result.xi
        assert float(p @ raw) >= float(p @ p) - 1e-12  # projection onto a convex set containing 0


def test_raw_step_is_returned_unchanged_when_certified():
    rng = np.random.default_rng(2)
    D, raw, g0, G, l = _problem(rng)
    raw = D[:, 0] * 3.0  # in the span, small
    G = g0[:, None] - 1e-3 * np.ones((1, D.shape[1]))  # every probe improves every row
    result = project(D, raw, g0, G, np.full_like(g0, 1e-3), radius=0.3)
    assert result.status == "raw"
    np.testing.assert_allclose(D @ result.xi, raw, atol=1e-15)


def test_zero_step_when_nothing_better_is_certified():
    rng = np.random.default_rng(3)
    D, raw, g0, G, l = _problem(rng)
    g0[:] = 0.0  # every row active, in pairs with opposite sensitivities: any step breaks one of a pair
    half = rng.standard_normal((g0.size // 2, D.shape[1])) * 1e-3
    G[:] = np.vstack([half, -half])
    result = project(D, raw, g0, G, l, radius=0.3)
    assert not np.any(result.xi)


def test_unsafe_start_is_refused():
    rng = np.random.default_rng(4)
    D, raw, g0, G, l = _problem(rng)
    g0[3] = 1e-6
    with pytest.raises(ValueError):
        project(D, raw, g0, G, l, radius=0.3)


def test_projection_matches_an_independent_solver():
    """SLSQP on the smooth lifted problem (xi, t) gives the same objective on random instances."""
    rng = np.random.default_rng(5)
    for _ in range(15):
        D, raw, g0, G, l = _problem(rng, k=30, m=5, d=40)
        S = D.T @ D
        m = S.shape[0]
        result = project(D, raw, g0, G, l, radius=0.3)

        def objective(z):
            return float(np.sum((D @ z[:m] - raw) ** 2))

        constraints = [
            {"type": "ineq", "fun": lambda z: -((1 - z[:m].sum()) * g0 + G @ z[:m]
                                               + 0.5 * l * (z[:m] @ S @ z[:m] + np.diag(S) @ z[m:]))},
            {"type": "ineq", "fun": lambda z: z[m:] - z[:m]},
            {"type": "ineq", "fun": lambda z: z[m:] + z[:m]},
            {"type": "ineq", "fun": lambda z: 0.09 - z[:m] @ S @ z[:m]},
        ]
        reference = minimize(objective, np.zeros(2 * m), constraints=constraints, method="SLSQP",
                             options={"ftol": 1e-14, "maxiter": 500})
        assert reference.success
        assert objective(np.concatenate([result.xi, np.abs(result.xi)])) <= reference.fun + 1e-9


def test_lazy_rows_reach_the_full_solution():
    rng = np.random.default_rng(6)
    D, raw, g0, G, l = _problem(rng, k=600, m=10, d=80)
    S = D.T @ D
    result = project(D, raw, g0, G, l, radius=0.3)
    full, status = _solve_conic(S, D.T @ raw, g0, G, l, 0.3, D)
    assert status == "solved"
    full_obj = np.sum((D @ full - raw) ** 2)
    assert np.sum((D @ result.xi - raw) ** 2) <= full_obj * (1 + 1e-6) + 1e-12
    assert np.all(certified_bound(result.xi, g0, G, l, S) <= 0)
