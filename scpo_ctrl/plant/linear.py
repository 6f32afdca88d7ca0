"""Discrete-time linear models and exact (zero-order-hold) discretisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm


@dataclass(frozen=True)
class LinearModel:
    """``x+ - x_eq = A (x - x_eq) + B (u - u_eq)`` with period ``dt`` [s].

    Attributes
    ----------
    A : ndarray, shape (nx, nx)
    B : ndarray, shape (nx, nu)
    x_eq : ndarray, shape (nx,)
    u_eq : ndarray, shape (nu,)
    dt : float
    """

    A: np.ndarray
    B: np.ndarray
    x_eq: np.ndarray
    u_eq: np.ndarray
    dt: float


def discretise_zoh(A: np.ndarray, B: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact discretisation of ``dx/dt = A x + B u`` with u held over ``dt``.

    Returns ``(Ad, Bd)`` from the matrix exponential of ``[[A, B], [0, 0]] dt``.
    """
    nx, nu = B.shape
    M = np.zeros((nx + nu, nx + nu))
    M[:nx, :nx] = A
    M[:nx, nx:] = B
    E = expm(M * dt)
    return E[:nx, :nx], E[:nx, nx:]


def uncontrollable_modes(A: np.ndarray, B: np.ndarray, *, discrete: bool = True, tol: float = 1e-9) -> list[complex]:
    """Eigenvalues of A that B cannot steer and that are not stable (PBH test).

    An empty list means (A, B) is stabilisable. For a discrete-time model a
    mode is unstable when ``|lambda| >= 1``.
    """
    nx = A.shape[0]
    bad = []
    scale = max(1.0, np.abs(A).max(), np.abs(B).max())
    for lam in np.linalg.eigvals(A):
        unstable = abs(lam) >= 1.0 - 1e-12 if discrete else lam.real >= -1e-12
        if not unstable:
            continue
        pencil = np.hstack([A - lam * np.eye(nx), B])
        singular_values = np.linalg.svd(pencil, compute_uv=False)
        if singular_values[nx - 1] <= tol * scale:
            bad.append(complex(lam))
    return bad
